"""With no dataset given, `algo=decision_transformer` and `algo=bc` record a mixed one first
(random-policy episodes, plus those of a short PPO run), say so in the log, keep it in the run
directory and reuse it on resume: tiny end-to-end runs through the real CLI."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_dirs, run_mimicry, summary
from mimicry.cli import main
from mimicry.checkpoints import load_task
from mimicry.data.episodes import load_episodes
from mimicry.data.recording import RECORDED_NAME

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")

TINY_DT = ["task=rl", "algo=decision_transformer", "env=key_to_door", "model.n_layer=1", "model.n_head=2",
           "model.n_embd=32", "algo.context=4", "model.block_size=12", "algo.batch_size=16", "algo.updates_per_eval=5",
           "task.eval_episodes=2", "trainer.log_every_n_steps=5"]


def test_dt_records_ppo_and_random_episodes_then_reuses_them_on_resume(tmp_path, capsys):
    run_mimicry(tmp_path, "train", *TINY_DT, "algo.updates=10", "algo.record.random_episodes=30",
                "algo.record.ppo_env_steps=256", "algo.record.ppo_episodes=10", "model.dropout=0.0")
    (run_dir,) = [d for d in run_dirs(tmp_path) if d.name != "recording_ppo"]
    result = summary(run_dir)
    assert result["status"] == "completed" and result["steps"] == 10 and "eval/return_mean" in result["best"]
    log = (run_dir / "train.log").read_text()
    assert "no algo.dataset given: recording a mixed episode dataset first (30 random-policy episodes + 10 " \
           "episodes of a 256-env-step PPO run)" in log
    assert "recorded 30 random episodes" in log and "10 ppo episodes" in log
    # the progress bar counts the planned epochs (10 updates / 5 per evaluation), not "Epoch 1/-2"
    assert "`max_epochs=2` reached" in log
    assert summary(run_dir / "recording_ppo")["status"] == "completed"  # the PPO run has its own folder
    dataset = run_dir / RECORDED_NAME
    episodes = load_episodes(dataset, env="key_to_door", obs_dim=10)  # the key held is hidden (env.show_key=false)
    assert len(episodes.episode_lengths) == 40 and set(np.unique(episodes.rewards)) <= {0.0, 1.0}
    assert result["metrics"]["dataset/return_mean"] == pytest.approx(episodes.returns().mean(), abs=1e-4)
    recorded_at = dataset.stat().st_mtime_ns

    run_mimicry(tmp_path, "train", f"resume={run_dir}", "algo.updates=15")
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["steps"] == 15
    log = (run_dir / "train.log").read_text()
    assert "reusing the episodes recorded earlier in this run" in log and "`max_epochs=3` reached" in log
    assert dataset.stat().st_mtime_ns == recorded_at

    # and it acts from its checkpoint alone: the conditioning (dataset's best return) travels with the weights
    task = load_task(run_dir)
    assert float(task.conditioning[0]) == pytest.approx(episodes.returns().max())
    text, gif = task.generate_samples(tmp_path, n=2, seed=0)
    assert "2 episodes" in text.read_text() and gif.suffix == ".gif"

    # `record=` is written like `out=`: a file in the way is named in one line before anything is played
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["sample", str(run_dir), "episodes=1", f"record={blocker / 'eps.npz'}"]) == 2
    err = capsys.readouterr().err
    assert f"{blocker} is a file, not a folder; choose a writable place with record=" in err


def test_bc_without_a_dataset_records_random_episodes(tmp_path):
    run_mimicry(tmp_path, "train", "task=rl", "algo=bc", "model.hidden=[16]", "algo.updates=10",
                "algo.updates_per_eval=5", "algo.record.random_episodes=20", "algo.record.ppo_env_steps=0",
                "algo.keep_fraction=0.1", "task.eval_episodes=2")
    (run_dir,) = run_dirs(tmp_path)
    result = summary(run_dir)
    assert result["status"] == "completed" and result["steps"] == 10
    assert result["metrics"]["dataset/kept_episodes"] == 2
    assert "recording a mixed episode dataset first (20 random-policy episodes)" in (run_dir / "train.log").read_text()
    assert len(load_episodes(run_dir / RECORDED_NAME, env="cartpole").episode_lengths) == 20
