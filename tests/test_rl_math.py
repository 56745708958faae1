"""RL building blocks against hand-computed values: GAE and returns-to-go with terminated vs
truncated episodes, the environments, the rollout's true last observation, episode datasets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mimicry.data.environments import env_spec, make_vector_env, require_discrete
from mimicry.data.episodes import load_episodes, save_episodes
from mimicry.data.rollouts import VectorRollout, gae, returns_to_go, run_episodes
from mimicry.errors import MimicryError
from mimicry.losses.policy import group_relative_advantage, k3_kl


def column(values) -> torch.Tensor:  # (T,) → (T, 1): one env
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1)


def flags(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool).unsqueeze(1)


def test_gae_by_hand_with_a_terminated_and_a_truncated_episode():
    # steps 0-1: one episode that terminates at step 1; steps 2-3: one truncated at step 3
    gamma, lam = 0.9, 0.5
    rewards = column([1.0, 2.0, 3.0, 4.0])
    values = column([0.5, 1.0, 1.5, 2.0])
    next_values = column([1.0, 7.0, 2.0, 10.0])  # V(s_{t+1}); at ends, V(true last observation)
    terminated, truncated = flags([0, 1, 0, 0]), flags([0, 0, 0, 1])
    adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    # deltas: r + γ·V(next)·(1 - terminated) - V
    d = [1 + 0.9 * 1.0 - 0.5, 2 - 1.0, 3 + 0.9 * 2.0 - 1.5, 4 + 0.9 * 10.0 - 2.0]
    expected = [d[0] + 0.45 * d[1], d[1], d[2] + 0.45 * d[3], d[3]]  # no carry across either end
    assert adv[:, 0].tolist() == pytest.approx(expected, rel=1e-6)
    assert ret[:, 0].tolist() == pytest.approx([e + v for e, v in zip(expected, [0.5, 1.0, 1.5, 2.0])], rel=1e-6)
    # the same end marked terminated instead: nothing bootstrapped from V(final obs) = 10
    adv_term, _ = gae(rewards, values, next_values, flags([0, 1, 0, 1]), flags([0, 0, 0, 0]), gamma, lam)
    assert adv_term[3, 0].item() == pytest.approx(4 - 2.0)
    assert adv_term[2, 0].item() == pytest.approx(d[2] + 0.45 * 2.0)


def test_gae_lambda_one_is_the_discounted_return_minus_value():
    rewards, values = column([1.0, 1.0, 1.0]), column([0.2, 0.4, 0.6])
    next_values = column([0.4, 0.6, 5.0])
    adv, ret = gae(rewards, values, next_values, flags([0, 0, 0]), flags([0, 0, 0]), gamma=0.5, lam=1.0)
    # rollout cut (not an episode end): bootstrap from V = 5 after the last step
    assert ret[:, 0].tolist() == pytest.approx([1 + 0.5 + 0.25 + 0.125 * 5, 1 + 0.5 + 0.25 * 5, 1 + 0.5 * 5])


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 3.0])  # one prompt's four continuations
    # RLOO: each reward minus the mean of the other three
    assert group_relative_advantage(rewards, "leave_one_out").tolist() == pytest.approx([0.0, -4 / 3, -4 / 3, 8 / 3])
    # GRPO: (r - 1) / std, std = sqrt(6 / 3) (unbiased)
    assert group_relative_advantage(rewards, "mean_std").tolist() == pytest.approx(
        [0.0, -1 / 2 ** 0.5, -1 / 2 ** 0.5, 2 / 2 ** 0.5], rel=1e-5)
    for baseline in ("mean_std", "leave_one_out"):  # a group of equal rewards teaches nothing; sums are 0
        assert group_relative_advantage(torch.full((5,), 0.7), baseline).abs().max() < 1e-6
        assert float(group_relative_advantage(rewards, baseline).sum()) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        group_relative_advantage(torch.tensor([1.0]), "mean_std")


def test_k3_kl_is_zero_at_equal_policies_and_matches_the_exact_kl_from_samples():
    assert float(k3_kl(torch.zeros(7))) == 0.0
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    estimate = float(k3_kl((q.log() - p.log())[samples]))
    assert estimate == pytest.approx(float((p * (p / q).log()).sum()), rel=0.03)


def test_returns_to_go_restart_at_each_episode():
    rewards = np.array([1.0, 0.0, 2.0, 5.0, 1.0])
    assert returns_to_go(rewards, np.array([3, 2])).tolist() == pytest.approx([3.0, 2.0, 2.0, 6.0, 1.0])
    assert returns_to_go(rewards, np.array([3, 2]), gamma=0.5).tolist() == pytest.approx([1.5, 1.0, 2.0, 5.5, 1.0])


def test_unknown_and_continuous_environments_are_refused_clearly():
    with pytest.raises(MimicryError, match="unknown environment 'cartpol'.*cartpole"):
        env_spec("cartpol")
    with pytest.raises(MimicryError, match="continuous actions.*algo=ppo.*cartpole"):
        require_discrete(env_spec("pendulum"), "ppo")


@pytest.mark.parametrize("name, obs_dim, n_actions", [("cartpole", 4, 2), ("acrobot", 6, 3), ("mountain_car", 2, 3),
                                                      ("frozen_lake", 16, 4), ("door_key", 984, 7)])
def test_environments_give_flat_float_observations(name, obs_dim, n_actions):
    spec = env_spec(name)
    assert (spec.obs_dim, spec.n_actions) == (obs_dim, n_actions)
    envs, obs = make_vector_env(name, 2, seed=3)
    assert obs.shape == (2, obs_dim) and obs.dtype == np.float32
    if name == "frozen_lake":
        assert obs.sum(axis=1).tolist() == [1.0, 1.0]  # one-hot cell
    envs.close()


def test_vector_envs_are_seeded():
    first = make_vector_env("cartpole", 3, seed=7)
    second = make_vector_env("cartpole", 3, seed=7)
    other = make_vector_env("cartpole", 3, seed=8)
    assert np.array_equal(first[1], second[1]) and not np.array_equal(first[1], other[1])
    for envs, _ in (first, second, other):
        envs.close()


def test_rollout_keeps_the_true_last_observation_and_episode_stats():
    rollout = VectorRollout("cartpole", 2, seed=0)
    push_right = lambda obs: {"action": torch.ones(len(obs), dtype=torch.long)}  # noqa: E731  (falls in ~10 steps)
    data = rollout.collect(push_right, 40)
    ends = torch.nonzero(data["terminated"][:-1])
    assert len(ends) > 0
    t, i = ends[0].tolist()
    # after an end, the next step starts from a reset state; the end's next_obs is the fallen pole
    assert not torch.allclose(data["next_obs"][t, i], data["obs"][t + 1, i])
    assert abs(data["next_obs"][t, i, 2].item()) > 0.2  # pole angle past the 12° limit (0.21 rad)
    assert torch.allclose(data["next_obs"][t - 1, i], data["obs"][t, i])
    returns, lengths = rollout.pop_episodes()
    assert len(returns) == int(data["terminated"].sum()) and returns == [float(n) for n in lengths]
    assert rollout.env_steps == 80
    rollout.close()


def test_episode_dataset_round_trip_and_bad_files(tmp_path):
    played = run_episodes("cartpole", lambda obs: torch.zeros(len(obs), dtype=torch.long), 3, seed=0, record=True)
    path = save_episodes(tmp_path / "eps.npz", "cartpole", played)
    episodes = load_episodes(path, env="cartpole", obs_dim=4)
    assert episodes.returns().tolist() == pytest.approx(played["returns"].tolist())
    assert len(episodes.actions) == int(played["lengths"].sum()) and episodes.terminations.sum() == 3
    with pytest.raises(MimicryError, match="recorded in env=cartpole.*env=acrobot"):
        load_episodes(path, env="acrobot", obs_dim=6)
    with pytest.raises(MimicryError, match="not found"):
        load_episodes(tmp_path / "missing.npz")
    empty = {k: np.zeros((0, 4) if k == "observations" else 0) for k in
             ("observations", "actions", "rewards", "terminations", "truncations", "lengths")}
    with pytest.raises(MimicryError, match="holds no episodes"):
        load_episodes(save_episodes(tmp_path / "empty.npz", "cartpole", empty))
