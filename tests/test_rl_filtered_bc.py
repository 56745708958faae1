"""Filtered BC and BC: the filter keeps exactly the top episodes, the fit imitates only those, and
both run through the real CLI (online expert iteration; offline on a recorded dataset)."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.data.episodes import save_episodes
from mimicry.data.rollouts import run_episodes, top_episodes
from mimicry.errors import MimicryError
from mimicry.tasks.rl.filtered_bc import BehaviourCloning

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")

POLICY = {"_target_": "mimicry.models.actor_critic.Policy", "hidden": [16]}
CE = {"_target_": "torch.nn.CrossEntropyLoss"}


def test_top_episodes_keeps_exactly_the_best():
    returns = [3.0, 9.0, 1.0, 9.0, 5.0]
    assert top_episodes(returns, 0.4).tolist() == [1, 3]
    assert top_episodes(returns, 0.6).tolist() == [1, 3, 4]
    assert top_episodes(returns, 0.01).tolist() == [1]  # at least one
    assert top_episodes(returns, 1.0).tolist() == [1, 3, 4, 0, 2]


def synthetic_dataset(path, n_episodes=10, length=6):
    """Episodes whose return is high exactly when they always pushed right (action 1)."""
    rng = np.random.default_rng(0)
    good = np.arange(n_episodes) < 3
    actions = np.concatenate([np.full(length, int(g)) for g in good])
    rewards = np.concatenate([np.full(length, 2.0 if g else 1.0) for g in good])
    played = {"observations": rng.normal(size=(n_episodes * length, 4)).astype(np.float32), "actions": actions,
              "rewards": rewards, "terminations": np.tile(np.arange(length) == length - 1, n_episodes),
              "truncations": np.zeros(n_episodes * length, bool), "lengths": np.full(n_episodes, length)}
    return save_episodes(path, "cartpole", played)


def bc_task(path, keep_fraction):
    algo = {"dataset": str(path), "keep_fraction": keep_fraction, "batch_size": 32, "updates": 60, "updates_per_eval": 60}
    return BehaviourCloning(model=POLICY, loss=CE, optim={"lr": 1e-2}, data_spec={}, algo=algo, eval_episodes=1)


def test_bc_imitates_only_the_kept_episodes(tmp_path):
    path = synthetic_dataset(tmp_path / "synthetic.npz")
    torch.manual_seed(0)
    top, everything = bc_task(path, keep_fraction=0.3), bc_task(path, keep_fraction=1.0)
    assert top.dataset_steps()["action"].tolist() == [1] * 18
    assert top.rollout_stats["dataset/kept_return_mean"] == pytest.approx(12.0)
    assert everything.rollout_stats == {} and len(everything.dataset_steps()["action"]) == 60
    for task in (top, everything):  # fitted as `mimicry train` does: the task's own optimizer and schedule
        trainer = pl.Trainer(max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.fit(task)
        assert trainer.global_step == 60
    obs = torch.randn(200, 4)
    assert task is everything
    assert (top.act(obs, greedy=True) == 1).float().mean() == 1.0
    assert (everything.act(obs, greedy=True) == 1).float().mean() < 0.9  # 70% of its steps were action 0


def test_bc_refuses_a_missing_or_foreign_dataset(tmp_path):
    with pytest.raises(MimicryError, match="algo.dataset is not set and there is no run directory"):
        bc_task("", 1.0).dataset_steps()
    with pytest.raises(MimicryError, match="episode dataset not found"):
        bc_task(tmp_path / "missing.npz", 1.0).dataset_steps()
    played = run_episodes("acrobot", lambda obs: torch.zeros(len(obs), dtype=torch.long), 1, seed=0, record=True)
    foreign = save_episodes(tmp_path / "acrobot.npz", "acrobot", played)
    with pytest.raises(MimicryError, match="recorded in env=acrobot"):
        bc_task(foreign, 1.0).dataset_steps()


def test_filtered_bc_and_bc_run_end_to_end(tmp_path):
    (tmp_path / "online").mkdir()
    (tmp_path / "offline").mkdir()
    run_mimicry(tmp_path / "online", "train", "task=rl", "algo=filtered_bc", "model.hidden=[16]",
                "algo.num_envs=4", "algo.episodes_per_iteration=4", "task.total_env_steps=300",
                "task.eval_every_env_steps=150", "task.eval_episodes=2", "trainer.log_every_n_steps=1")
    (online,) = run_dirs(tmp_path / "online")
    assert summary(online)["status"] == "completed" and summary(online)["metrics"]["rollout/env_steps"] >= 300
    scalars = read_events(online)["scalars"]
    assert {"rollout/kept_return_min", "rollout/return_mean", "train/loss", "eval/return_mean"} <= set(scalars)

    played = run_episodes("cartpole", lambda obs: torch.randint(0, 2, (len(obs),)), 20, seed=0, record=True)
    dataset = save_episodes(tmp_path / "random.npz", "cartpole", played)
    run_mimicry(tmp_path / "offline", "train", "task=rl", "algo=bc", f"algo.dataset={dataset}", "algo.keep_fraction=0.1",
                "model.hidden=[16]", "algo.updates=20", "algo.updates_per_eval=10", "task.eval_episodes=2",
                "trainer.log_every_n_steps=5")
    (offline,) = run_dirs(tmp_path / "offline")
    result = summary(offline)
    assert result["status"] == "completed" and result["steps"] == 20 and "eval/return_mean" in result["best"]
    assert result["metrics"]["dataset/kept_episodes"] == 2
    assert result["metrics"]["dataset/kept_return_mean"] == pytest.approx(np.sort(played["returns"])[-2:].mean())
