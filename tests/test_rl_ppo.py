"""PPO: the update moves the policy toward actions with positive advantage and the critic toward
the returns; a tiny run through the real CLI logs what people look at, samples episodes, resumes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.checkpoints import load_task
from mimicry.cli import main
from mimicry.data.episodes import load_episodes
from mimicry.tasks.rl.ppo import PPO, ppo_terms

ALGO = {"num_envs": 2, "n_steps": 8, "batch_size": 16, "update_epochs": 1, "gamma": 0.98, "gae_lambda": 0.8,
        "clip_range": 0.2, "clip_anneal": False, "normalize_advantage": True, "ent_coef": 0.0, "vf_coef": 0.5}
# the in-process tests call training_step without a Trainer, where self.log only warns
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")

TINY = ["task=rl", "algo.num_envs=2", "algo.n_steps=16", "algo.batch_size=16", "algo.update_epochs=2",
        "model.hidden=[16]", "task.total_env_steps=256", "task.eval_every_env_steps=128", "task.eval_episodes=2",
        "trainer.log_every_n_steps=2",
        # the schedules' lengths fixed (256 env steps = 8 rollouts × 4 updates), so that a run stopped
        # at 128 env steps is this run cut short (tests/test_rl_ppo.py's resume check)
        "optim.decay_steps=32", "algo.clip_anneal=false"]


def test_ppo_update_follows_the_advantage_and_the_critic_imitates_returns():
    torch.manual_seed(0)
    task = PPO(model={"_target_": "mimicry.models.actor_critic.ActorCritic", "hidden": [32]},
               loss={"_target_": "torch.nn.MSELoss"}, optim={"lr": 1e-2}, data_spec={}, algo=ALGO)
    obs = torch.randn(256, 4)
    action = torch.randint(0, 2, (256,))
    good = (obs[:, 0] > 0).long()  # the action that "paid off" depends on the first coordinate
    advantage = torch.where(action == good, 1.0, -1.0)
    returns = 3.0 * obs[:, 1]
    with torch.no_grad():
        old_logprob = torch.distributions.Categorical(logits=task.model.logits(obs)).log_prob(action)
    batch = {"obs": obs, "action": action, "logprob": old_logprob, "advantage": advantage, "return": returns,
             "value": torch.zeros(256)}
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        ppo_terms(task, batch, ALGO["clip_range"]).loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (task.act(obs, greedy=True) == good).float().mean().item()
        value_error = (task.model.value(obs) - returns).pow(2).mean().item()
    assert accuracy > 0.9
    assert value_error < 0.3 * returns.var().item()


def test_ppo_clipping_stops_pushing_a_ratio_past_the_trust_region():
    torch.manual_seed(0)
    task = PPO(model={"_target_": "mimicry.models.actor_critic.ActorCritic", "hidden": [32]},
               loss={"_target_": "torch.nn.MSELoss"}, optim={"lr": 1e-2}, data_spec={},
               algo={**ALGO, "normalize_advantage": False})
    obs, action = torch.randn(64, 4), torch.randint(0, 2, (64,))
    with torch.no_grad():
        logprob = torch.distributions.Categorical(logits=task.model.logits(obs)).log_prob(action)
    batch = {"obs": obs, "action": action, "advantage": torch.ones(64), "return": torch.zeros(64),
             "value": torch.zeros(64)}
    ppo_terms(task, {**batch, "logprob": logprob - 1.0}, ALGO["clip_range"]).loss.backward()  # ratio e > 1.2: clipped
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in task.model.actor.parameters())
    task.zero_grad()
    ppo_terms(task, {**batch, "logprob": logprob}, ALGO["clip_range"]).loss.backward()  # ratio 1: inside, the policy moves
    assert max(p.grad.abs().max().item() for p in task.model.actor.parameters()) > 1e-4


def test_tiny_ppo_run_logs_env_steps_evaluates_samples_and_records(tmp_path, monkeypatch):
    (tmp_path / "straight").mkdir()
    run_mimicry(tmp_path / "straight", "train", *TINY)
    (run_dir,) = run_dirs(tmp_path / "straight")
    result = summary(run_dir)
    assert result["status"] == "completed"
    assert result["metrics"]["rollout/env_steps"] == 256 and "eval/return_mean" in result["best"]
    scalars = read_events(run_dir)["scalars"]
    for tag in ("rollout/return_mean", "rollout/length_mean", "rollout/explained_variance", "train/policy_loss",
                "train/value_loss", "train/entropy", "train/approx_kl", "train/clip_fraction", "eval/return_mean"):
        assert tag in scalars, tag
    env_steps = [v for _, v in sorted(scalars["rollout/env_steps"])]
    assert env_steps == sorted(env_steps) and env_steps[-1] == 256 and len(set(env_steps)) >= 4
    assert len(scalars["eval/return_mean"]) == 2  # one evaluation per 128 env steps
    # TensorBoard's x-axis is env steps, for every curve (learning rate included): algorithms line up
    assert [step for step, _ in sorted(scalars["eval/return_mean"])] == [128, 256]
    assert all(step == value for step, value in scalars["rollout/env_steps"])
    assert {step for step, _ in scalars["train/lr"]} <= {int(v) for _, v in scalars["rollout/env_steps"]}

    # what `mimicry sample RUN_DIR episodes=3 record=PATH` runs (in-process: a CLI start costs seconds of CPU)
    written = load_task(run_dir).generate_samples(tmp_path, n=8, seed=0, episodes=3, record=str(tmp_path / "eps.npz"))
    out = written[0].read_text()
    assert "3 episodes" in out and "episode 2: return" in out
    episodes = load_episodes(written[1], env="cartpole", obs_dim=4)
    assert len(episodes.episode_lengths) == 3
    printed = [float(line.split("return ")[1].split(",")[0]) for line in out.splitlines() if line.startswith("episode ")]
    assert np.allclose(printed, episodes.returns(), atol=0.01)

    # the embeddings probe: the states of 2 greedy episodes as the policy sees them, with the critic's value
    assert main(["probe", "embeddings", str(run_dir), "episodes=2"]) == 0
    (metadata,) = (run_dir / "tb").rglob("policy_states/metadata.tsv")
    header, *rows = metadata.read_text().splitlines()
    assert header.split("\t") == ["value", "return_to_go", "action"]
    assert len(rows) == len((run_dir / "tb").rglob("policy_states/tensors.tsv").__next__().read_text().splitlines())
    assert {row.split("\t")[2] for row in rows} <= {"0", "1"}

    # resume, against this run as the uninterrupted reference: stopped at 128 env steps, then resumed
    # to 256 (in-process: a CLI start costs seconds of CPU). The environments start fresh episodes on
    # resume (their state is not in the checkpoint), so the weights differ from the reference's; what
    # the checkpoint carries must continue exactly: the env-step counter, the update count, and the
    # optimizer's schedule (the learning rate at every update).
    (tmp_path / "interrupted").mkdir()
    monkeypatch.chdir(tmp_path / "interrupted")
    assert main(["train", *TINY, "task.total_env_steps=128"]) == 0
    (interrupted,) = run_dirs(tmp_path / "interrupted")
    assert main(["train", f"resume={interrupted}", "task.total_env_steps=256"]) == 0
    after = summary(interrupted)
    assert after["metrics"]["rollout/env_steps"] == 256 and after["steps"] == result["steps"] == 32
    lr, resumed_lr = dict(scalars["train/lr"]), dict(read_events(interrupted)["scalars"]["train/lr"])
    assert sorted(resumed_lr) == sorted(lr) and max(lr) > 128
    assert [resumed_lr[step] for step in sorted(lr)] == pytest.approx([lr[step] for step in sorted(lr)], rel=1e-6)
    assert len(set(lr.values())) > 2  # it decays: a schedule restarted on resume would not match

    # resume: the env-step counter continues from the checkpoint, up to the new total
    run_mimicry(tmp_path / "straight", "train", f"resume={run_dir}", "task.total_env_steps=384")
    resumed = summary(run_dir)
    assert resumed["status"] == "completed" and resumed["metrics"]["rollout/env_steps"] == 384
    assert resumed["steps"] > result["steps"]


def test_ppo_trains_on_each_rollout_before_it_acts_again(tmp_path, monkeypatch):
    # on-policy: rollout k+1 must be played with the weights updated on rollout k (Lightning would
    # fetch it a batch early if the rollout loader had no length)
    events = []
    collect, training_step = PPO.collect, PPO.training_step
    monkeypatch.setattr(PPO, "collect", lambda self: (out := collect(self), events.append("act"))[0])
    monkeypatch.setattr(PPO, "training_step",
                        lambda self, rollout, i: (events.append("learn"), training_step(self, rollout, i))[1])
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "task.total_env_steps=96", "task.eval_every_env_steps=48"]) == 0
    assert events == ["act", "learn"] * 3  # 96 env steps = 3 rollouts of 2 envs × 16 steps


def test_a_misspelled_env_lists_the_known_ones(tmp_path):
    # env.name=... and continuous actions are refused by the task (tests/test_rl_math.py); a
    # misspelled env= option is refused by Hydra, with the list of options
    result = run_mimicry(tmp_path, "train", "task=rl", "env=cartpol", check=False)
    assert result.returncode != 0 and "cartpole" in result.stdout + result.stderr  # Hydra lists the options
