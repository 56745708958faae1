"""DQN: the bootstrapped target with terminal states (and Double DQN), the replay buffer, the ε
schedule, and a tiny run through the real CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.cli import main
from mimicry.errors import MimicryError
from mimicry.data.replay import ReplayBuffer
from mimicry.losses.td import q_target
from mimicry.tasks.rl.dqn import DQN

ALGO = {"num_envs": 1, "buffer_size": 100, "learning_starts": 10, "batch_size": 8, "gamma": 0.9, "train_freq": 4,
        "gradient_steps": 2, "target_update_interval": 10, "exploration_fraction": 0.5,
        "exploration_initial_eps": 1.0, "exploration_final_eps": 0.1, "double_dqn": False}


def test_q_target_by_hand_with_a_terminal_state():
    reward = torch.tensor([1.0, 2.0, 3.0])
    terminated = torch.tensor([False, True, False])
    next_q_target = torch.tensor([[4.0, 10.0], [50.0, 60.0], [7.0, 5.0]])
    next_q_online = torch.tensor([[9.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # prefers actions 0, 1, 1
    assert q_target(reward, terminated, next_q_target, None, 0.5).tolist() == pytest.approx([6.0, 2.0, 6.5])
    # Double DQN: the online net picks the action, the target net values it
    assert q_target(reward, terminated, next_q_target, next_q_online, 0.5).tolist() == pytest.approx([3.0, 2.0, 5.5])


def test_double_dqn_reference_takes_the_online_argmax_and_the_target_value():
    """Through the task's own reference: two networks that disagree on the best next action, by hand."""
    def linear(weight):  # Q(s, ·) = s @ W: a one-layer network with hand-set weights
        net = torch.nn.Linear(2, 2, bias=False)
        net.weight.data = torch.tensor(weight).T
        return net

    task = DQN(model={"_target_": "mimicry.models.q_network.QNetwork", "hidden": [8]},
               loss={"_target_": "mimicry.losses.td.Huber"}, optim={"lr": 1e-3}, data_spec={},
               algo={**ALGO, "gamma": 0.5}, total_env_steps=1000)
    task.model.net, task.target.net = linear([[1.0, 0.0], [0.0, 1.0]]), linear([[2.0, 30.0], [40.0, 3.0]])
    batch = {"next_obs": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "reward": torch.tensor([1.0, 1.0]),
             "terminated": torch.tensor([False, True])}
    # next state 0: online Q (1, 0) picks action 0, the target values it 2 (its own max would be 30)
    task.algo["double_dqn"] = True
    assert task.td_reference(batch).tolist() == pytest.approx([1.0 + 0.5 * 2.0, 1.0])
    task.algo["double_dqn"] = False
    assert task.td_reference(batch).tolist() == pytest.approx([1.0 + 0.5 * 30.0, 1.0])


def test_target_updates_copy_at_tau_one_and_average_below_it():
    def build(tau):
        return DQN(model={"_target_": "mimicry.models.q_network.QNetwork", "hidden": [8]},
                   loss={"_target_": "mimicry.losses.td.Huber"}, optim={"lr": 1e-3}, data_spec={},
                   algo={**ALGO, "tau": tau}, total_env_steps=1000)

    for tau in (1.0, 0.25):
        task = build(tau)
        before = {k: v.clone() for k, v in task.target.state_dict().items()}
        with torch.no_grad():
            for p in task.model.parameters():
                p.add_(1.0)  # the online network moves by exactly 1 everywhere
        task.sync_target()
        for name, value in task.target.state_dict().items():
            expected = task.model.state_dict()[name] if tau == 1 else before[name] + tau
            assert torch.allclose(value, expected, atol=1e-6), (tau, name)
        assert not any(p.requires_grad for p in task.target.parameters())
    with pytest.raises(MimicryError, match="algo.tau=0"):
        build(0)


def test_replay_buffer_keeps_the_latest_transitions():
    buffer = ReplayBuffer(capacity=3, obs_dim=1)
    for i in range(5):
        buffer.add(np.array([[i]]), np.array([i]), np.array([float(i)]), np.array([[i + 1]]), np.array([i == 4]))
    assert len(buffer) == 3 and sorted(buffer.action.tolist()) == [2, 3, 4]
    torch.manual_seed(0)
    batch = buffer.sample(50)
    assert set(batch["action"].tolist()) == {2, 3, 4}
    assert torch.equal(batch["next_obs"][:, 0], batch["obs"][:, 0] + 1)
    assert torch.equal(batch["terminated"], batch["action"] == 4)


def test_epsilon_decays_linearly_then_stays():
    task = DQN(model={"_target_": "mimicry.models.q_network.QNetwork", "hidden": [8]},
               loss={"_target_": "mimicry.losses.td.Huber"}, optim={"lr": 1e-3}, data_spec={}, algo=ALGO,
               total_env_steps=1000)
    for steps, expected in ((0, 1.0), (250, 0.55), (500, 0.1), (900, 0.1)):
        task.env_steps = steps
        assert task.epsilon() == pytest.approx(expected)


TINY = ["task=rl", "algo=dqn", "model.hidden=[16]", "algo.learning_starts=64", "algo.train_freq=32",
        "algo.gradient_steps=4", "algo.double_dqn=true", "task.total_env_steps=256", "task.eval_every_env_steps=128",
        "task.eval_episodes=2", "trainer.log_every_n_steps=1"]


def test_tiny_dqn_run(tmp_path, monkeypatch):
    (tmp_path / "straight").mkdir()
    run_mimicry(tmp_path / "straight", "train", *TINY)
    (run_dir,) = run_dirs(tmp_path / "straight")
    result = summary(run_dir)
    assert result["status"] == "completed" and result["metrics"]["rollout/env_steps"] == 256
    assert result["steps"] == (256 - 64) // 32 * 4 + 4  # updates start once 64 transitions are stored
    scalars = read_events(run_dir)["scalars"]
    assert {"rollout/epsilon", "rollout/replay_size", "train/q_mean", "eval/return_mean"} <= set(scalars)
    epsilons = [v for _, v in sorted(scalars["rollout/epsilon"])]
    assert epsilons == sorted(epsilons, reverse=True) and epsilons[0] < 1.0

    # resume, against this run as the uninterrupted reference: stopped at 128 env steps, then resumed
    # to 256 (in-process: a CLI start costs seconds of CPU). The replay buffer is not in the
    # checkpoint, so the resumed run refills it: no update until it holds learning_starts (64) fresh
    # transitions again, i.e. one 32-step phase without updates, 4 updates fewer than the reference.
    (tmp_path / "interrupted").mkdir()
    monkeypatch.chdir(tmp_path / "interrupted")
    assert main(["train", *TINY, "task.total_env_steps=128"]) == 0
    (resumed,) = run_dirs(tmp_path / "interrupted")
    assert summary(resumed)["steps"] == (128 - 64) // 32 * 4 + 4
    assert main(["train", f"resume={resumed}", "task.total_env_steps=256"]) == 0
    after = read_events(resumed)["scalars"]
    assert summary(resumed)["metrics"]["rollout/env_steps"] == 256
    assert summary(resumed)["steps"] == result["steps"] - 4  # the refill: one phase without updates
    replay = dict(after["rollout/replay_size"])
    # refilled from empty at 128 env steps (logged with the updates, which start once it holds 64)
    assert min(step for step in replay if step > 128) == 192
    assert [replay[step] for step in (192, 224, 256)] == [64, 96, 128]
    # ε is a function of the env steps, which the checkpoint carries: the same schedule as the reference's
    reference_eps, resumed_eps = dict(scalars["rollout/epsilon"]), dict(after["rollout/epsilon"])
    after_resume = [step for step in resumed_eps if step > 128]
    assert len(after_resume) == 3
    assert all(resumed_eps[step] == pytest.approx(reference_eps[step]) for step in resumed_eps)
