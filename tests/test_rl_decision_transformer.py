"""Decision Transformer: its attention cannot see future tokens, and on a small synthetic dataset
it outputs the action that led to the return it is asked for."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from mimicry.data.episodes import save_episodes
from mimicry.errors import MimicryError
from mimicry.tasks.rl.decision_transformer import DecisionTransformer

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")

K = 4


def tiny_dt(dataset, eval_episodes: int = 10, **algo) -> DecisionTransformer:
    torch.manual_seed(0)
    model = {"_target_": "mimicry.models.gpt.GPT", "block_size": 3 * K, "n_layer": 1, "n_head": 2, "n_embd": 32,
             "dropout": 0.0, "bias": False}
    settings = {"dataset": str(dataset), "context": K, "batch_size": 32, "updates": 150, "updates_per_eval": 150,
                "target_return": 5.0, "return_scale": 5.0, "max_timestep": 50, **algo}
    return DecisionTransformer(model=model, loss={"_target_": "torch.nn.CrossEntropyLoss"}, optim={"lr": 3e-3},
                               data_spec={}, algo=settings, eval_episodes=eval_episodes)


def fit(task: DecisionTransformer) -> None:
    """Train ``task`` as `mimicry train` does (conf/task/rl.yaml's trainer settings), without files."""
    trainer = pl.Trainer(max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task)
    assert trainer.global_step == task.algo["updates"]


def synthetic(path, n_episodes=40, length=5):
    """Half the episodes push right every step (reward 1 each: return 5), half push left (return 0)."""
    rng = np.random.default_rng(0)
    good = np.arange(n_episodes) % 2 == 0
    actions = np.concatenate([np.full(length, int(g)) for g in good])
    played = {"observations": rng.normal(size=(n_episodes * length, 4)).astype(np.float32), "actions": actions,
              "rewards": actions.astype(np.float32), "terminations": np.tile(np.arange(length) == length - 1, n_episodes),
              "truncations": np.zeros(n_episodes * length, bool), "lengths": np.full(n_episodes, length)}
    return save_episodes(path, "cartpole", played)


def test_attention_cannot_see_future_tokens(tmp_path):
    task = tiny_dt(synthetic(tmp_path / "d.npz")).eval()
    rtg, obs = torch.randn(3, K), torch.randn(3, K, 4)
    actions, timesteps = torch.randint(0, 2, (3, K)), torch.arange(K).expand(3, K)
    base = task(rtg, obs, actions, timesteps)
    changed_actions = actions.clone()
    changed_actions[:, 1] = 1 - changed_actions[:, 1]   # a₂ comes after s₂: no state token up to s₂ may see it
    changed_obs = obs.clone()
    changed_obs[:, 2] += 5.0                             # s₃ is in the future of steps 1-2
    for logits in (task(rtg, obs, changed_actions, timesteps), task(rtg, changed_obs, actions, timesteps)):
        assert torch.allclose(logits[:, :2], base[:, :2], atol=1e-5)
    assert not torch.allclose(task(rtg, obs, changed_actions, timesteps)[:, 2:], base[:, 2:], atol=1e-4)


def test_windows_stay_inside_their_episode(tmp_path):
    task = tiny_dt(synthetic(tmp_path / "d.npz"))
    window = task.windows(torch.tensor([6]))  # step 1 of episode 1 (episodes are 5 steps long)
    assert window["reference"][0].tolist() == [-100, -100, 0, 0]  # two padded steps, then steps 0-1 of episode 1
    assert window["timestep"][0].tolist() == [0, 0, 0, 1]
    assert window["rtg"][0].tolist() == pytest.approx([0, 0, 0, 0])  # episode 1 pushed left: return 0


def test_dt_outputs_the_action_that_led_to_the_return_asked_for(tmp_path):
    task = tiny_dt(synthetic(tmp_path / "d.npz"), eval_episodes=1)
    fit(task)  # through the task's own optimizer and schedule
    task.eval()
    obs = torch.randn(16, 1, 4)
    first = lambda target: task(torch.full((16, 1), target), obs, torch.zeros(16, 1, dtype=torch.long),  # noqa: E731
                                torch.zeros(16, 1, dtype=torch.long))[:, 0].argmax(-1)
    assert first(5.0).tolist() == [1] * 16   # asked for the high return: the action that earned it
    assert first(0.0).tolist() == [0] * 16
    result = task.play(2, seed=0)            # and it acts in the environment from its own history
    assert len(result["returns"]) == 2 and all(length >= 1 for length in result["lengths"])


def test_dt_settings_are_checked(tmp_path):
    with pytest.raises(MimicryError, match="no run directory to record one into"):  # no dataset, no run: nothing to read
        tiny_dt("").dataset_steps()
    with pytest.raises(MimicryError, match="block_size"):
        tiny_dt(synthetic(tmp_path / "d.npz"), context=8)
    with pytest.raises(MimicryError, match=r"algo.updates=0: must be a whole number ≥ 1"):  # the base's check
        tiny_dt(synthetic(tmp_path / "d.npz"), updates=0)


def test_a_target_return_far_outside_the_dataset_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mimicry"):
        tiny_dt(synthetic(tmp_path / "d.npz"), target_return=5.0).dataset_steps()
    assert "far outside" not in caplog.text              # 5 is the dataset's best return
    with caplog.at_level(logging.WARNING, logger="mimicry"):
        tiny_dt(synthetic(tmp_path / "d.npz"), target_return=500.0).dataset_steps()
    assert "algo.target_return=500.0 is far outside the dataset's returns (0.0 to 5.0)" in caplog.text


def test_null_target_and_scale_come_from_the_dataset_and_travel_with_the_weights(tmp_path):
    task = tiny_dt(synthetic(tmp_path / "d.npz"), target_return=None, return_scale=None)
    with pytest.raises(MimicryError, match="has not read its dataset"):
        task.play(1, seed=0)
    task.dataset_steps()
    assert task.conditioning.tolist() == pytest.approx([5.0, 5.0])  # the best return, the largest |return|
    assert "conditioning" in task.state_dict()


def test_a_dataset_with_other_observations_is_refused(tmp_path):
    played = {"observations": np.zeros((4, 6), np.float32), "actions": np.zeros(4, np.int64),
              "rewards": np.ones(4, np.float32), "terminations": np.array([0, 1, 0, 1], bool),
              "truncations": np.zeros(4, bool), "lengths": np.array([2, 2])}
    with pytest.raises(MimicryError, match=r"observations of shape \(6,\).*gives \(4,\)"):
        tiny_dt(save_episodes(tmp_path / "wide.npz", "cartpole", played)).dataset_steps()
