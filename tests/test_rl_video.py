"""`mimicry sample RUN_DIR episodes=N` films the first episode(s) as a GIF where the environment can
draw itself, and without its drawing package (pygame, the `[video]` extra) says so in one line
instead of crashing."""
from __future__ import annotations

import sys

import pytest
import torch
from PIL import Image

from mimicry.tasks.rl.filtered_bc import FilteredBC

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")

ALGO = {"num_envs": 2, "episodes_per_iteration": 2, "keep_fraction": 0.5, "batch_size": 16, "update_epochs": 1}


def policy_task(env: str) -> FilteredBC:
    torch.manual_seed(0)
    return FilteredBC(model={"_target_": "mimicry.models.actor_critic.Policy", "hidden": [8]},
                      loss={"_target_": "torch.nn.CrossEntropyLoss"}, optim={"lr": 1e-3}, data_spec={}, algo=ALGO,
                      env=env)


def test_key_to_door_episodes_become_a_gif(tmp_path):
    written = policy_task("key_to_door").generate_samples(tmp_path, n=3, seed=0, video=2)
    text, gif = written
    assert gif.suffix == ".gif" and f"video of the first 2 episode(s): {gif}" in text.read_text()
    lengths = [int(line.rsplit("length ", 1)[1]) for line in text.read_text().splitlines() if line.startswith("episode ")]
    with Image.open(gif) as film:
        # one frame per step (Pillow merges repeated frames: a bump into a wall shows no change)
        assert 2 <= film.n_frames <= lengths[0] + lengths[1] + 2
        assert film.size[0] >= 100


def test_without_pygame_there_is_a_note_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # `import pygame` now fails, as where it is not installed
    written = policy_task("cartpole").generate_samples(tmp_path, n=2, seed=0)
    assert [p.suffix for p in written] == [".txt"]
    note = [line for line in written[0].read_text().splitlines() if line.startswith("no video")]
    assert len(note) == 1 and "pip install 'mimicry[video]'" in note[0] and "env=cartpole" in note[0]
    assert "episode 1: return" in written[0].read_text()  # the episodes were still played and reported


def test_video_0_films_nothing(tmp_path):
    written = policy_task("key_to_door").generate_samples(tmp_path, n=1, seed=0, video=0)
    assert [p.suffix for p in written] == [".txt"] and "video" not in written[0].read_text()
