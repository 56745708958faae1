"""Rollouts: acting in a vector env with the current policy, and turning late reward into a
per-step reference (GAE advantages, returns, returns-to-go). Shared by every RL algorithm.

Episode ends come in two kinds, and they are not the same thing:
  terminated  the episode really ended (the pole fell, the goal was reached): no reward after it,
              so nothing is bootstrapped;
  truncated   a time limit cut it short: the future would have gone on, so the value of the true
              last observation (``info["final_obs"]``) stands in for it.
Either way, the advantage of one episode never leaks into the previous one.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from mimicry.data.environments import make_vector_env


class RolloutDataset(IterableDataset):
    """One pass = one Lightning "epoch": the task's generator acts in the environment with the
    current weights and yields what to learn from (the pattern of Lightning's own PPO example).
    Used with ``DataLoader(..., batch_size=None, num_workers=0)``: the batches are made here, in
    the training process, so the policy that acts is the one being trained.

    ``length``: how many batches the pass yields, when the task knows it. Lightning then asks for
    each batch only when it is about to train on it; without a length it fetches one batch ahead
    (to see the pass end), and an on-policy algorithm whose batch is a whole rollout would act with
    the weights from before the previous rollout's updates."""

    def __init__(self, batches: Callable[[], Iterator], length: int | None = None):
        self.batches = batches
        self.length = length

    def __iter__(self) -> Iterator:
        return iter(self.batches())

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("this pass has no known length")  # Lightning reads a TypeError as "unsized"
        return self.length


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        truncated: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a (T, N) rollout; returns (advantages, returns).

    ``next_values[t]`` is the value of the observation that *followed* step t (the true last one
    when the episode ended there). A terminated step bootstraps nothing; a truncated one bootstraps
    from its final observation; neither carries the next episode's advantage back.
    """
    alive = 1.0 - terminated.float()
    ended = (terminated | truncated).float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * alive[t] * next_values[t] - values[t]
        running = delta + gamma * lam * (1.0 - ended[t]) * running
        advantages[t] = running
    return advantages, advantages + values


def top_episodes(returns: np.ndarray | list[float], keep_fraction: float) -> np.ndarray:
    """Indices of the best ``ceil(keep_fraction · n)`` episodes by return (at least one), best first;
    ties keep the earlier episode."""
    returns = np.asarray(returns, np.float64)
    keep = max(1, int(np.ceil(keep_fraction * len(returns) - 1e-9)))
    return np.argsort(-returns, kind="stable")[:keep]


def returns_to_go(rewards: np.ndarray, episode_lengths: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Discounted sum of the rewards from each step to the end of its episode, for a flat array of
    consecutive episodes (the Decision Transformer's R̂ and filtered BC's episode returns)."""
    out = np.zeros(len(rewards), np.float64)
    start = 0
    for length in episode_lengths:
        running = 0.0
        for t in reversed(range(start, start + int(length))):
            running = rewards[t] + gamma * running
            out[t] = running
        start += int(length)
    return out


class VectorRollout:
    """A vector env stepped by a policy, keeping the episode statistics itself (gymnasium 1.x's
    ``RecordEpisodeStatistics`` reports them through masks that differ by autoreset mode)."""

    def __init__(self, env_name: str, num_envs: int, seed: int, env_options: dict | None = None):
        self.envs, self.obs = make_vector_env(env_name, num_envs, seed, options=env_options)
        self.num_envs = num_envs
        self.running_return = np.zeros(num_envs)
        self.running_length = np.zeros(num_envs, np.int64)
        self.episode_returns: list[float] = []   # finished episodes since the last `pop_episodes`
        self.episode_lengths: list[int] = []
        self.env_steps = 0
        self.seconds = 0.0  # time spent stepping (policy + env), for env steps/s
        self.unfinished = [self._empty_episode() for _ in range(num_envs)]  # for collect_episodes

    @staticmethod
    def _empty_episode() -> dict[str, list]:
        return {"obs": [], "action": [], "reward": []}

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """One step of every env; returns the transition with the true next observation."""
        started = time.perf_counter()
        obs = self.obs
        next_obs, reward, terminated, truncated, info = self.envs.step(action)
        real_next = next_obs.copy()
        if "final_obs" in info:  # SAME_STEP autoreset: next_obs already starts the next episode
            for i in np.flatnonzero(info["_final_obs"]):
                real_next[i] = info["final_obs"][i]
        self.running_return += reward
        self.running_length += 1
        for i in np.flatnonzero(terminated | truncated):
            self.episode_returns.append(float(self.running_return[i]))
            self.episode_lengths.append(int(self.running_length[i]))
            self.running_return[i], self.running_length[i] = 0.0, 0
        self.obs = next_obs
        self.env_steps += self.num_envs
        self.seconds += time.perf_counter() - started
        return {"obs": obs, "action": action, "reward": reward.astype(np.float32), "next_obs": real_next,
                "terminated": terminated, "truncated": truncated}

    def collect(self, policy: Callable[[torch.Tensor], dict[str, torch.Tensor]], n_steps: int) -> dict[str, torch.Tensor]:
        """``n_steps`` steps of every env; ``policy(obs)`` returns {"action": ..., other per-step
        tensors to keep (log-probs, values)}. Returns (T, N, ...) tensors."""
        steps: list[dict[str, torch.Tensor]] = []
        for _ in range(n_steps):
            started = time.perf_counter()
            with torch.no_grad():
                out = policy(torch.as_tensor(self.obs))
            self.seconds += time.perf_counter() - started
            transition = self.step(out["action"].numpy())
            steps.append({**{k: torch.as_tensor(v) for k, v in transition.items()},
                          **{k: v for k, v in out.items() if k != "action"}})
        return {k: torch.stack([s[k] for s in steps]) for k in steps[0]}

    def collect_episodes(self, act: Callable[[torch.Tensor], torch.Tensor], episodes: int) -> list[dict[str, np.ndarray]]:
        """Step until ``episodes`` whole episodes have finished; each as {"obs", "action", "reward",
        "return"}. Episodes still running carry over to the next call."""
        finished: list[dict[str, np.ndarray]] = []
        while len(finished) < episodes:
            started = time.perf_counter()
            with torch.no_grad():
                action = act(torch.as_tensor(self.obs)).numpy()
            self.seconds += time.perf_counter() - started
            transition = self.step(action)
            for i in range(self.num_envs):
                episode = self.unfinished[i]
                for key in ("obs", "action", "reward"):
                    episode[key].append(transition[key][i])
                if transition["terminated"][i] or transition["truncated"][i]:
                    done = {k: np.asarray(v) for k, v in episode.items()}
                    done["return"] = float(done["reward"].sum())
                    finished.append(done)
                    self.unfinished[i] = self._empty_episode()
        return finished

    def pop_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        returns, lengths = self.episode_returns, self.episode_lengths
        self.episode_returns, self.episode_lengths = [], []
        return returns, lengths

    def close(self) -> None:
        self.envs.close()


def run_episodes(env_name: str, policy: Callable[[torch.Tensor], torch.Tensor], episodes: int, seed: int,
                 max_envs: int = 16, record: bool = False, render: bool = False,
                 env_options: dict | None = None) -> dict[str, np.ndarray | list]:
    """Play ``episodes`` whole episodes (env i reset with seed + i) with ``policy(obs) → actions``
    in ``env_name`` made with ``env_options``.

    Returns {"returns", "lengths"} and, with ``record``, the steps of every episode in order
    (observations, actions, rewards, terminations, truncations) for an episode dataset; with
    ``render``, "frames": each episode's ``rgb_array`` pictures (mimicry/data/video.py; raises
    ``RenderingUnavailable`` where the environment cannot draw).
    A policy with a memory (the Decision Transformer's history) may define ``reset()``, called when
    a batch of envs starts its episodes, and ``observe(actions, rewards)``, called after each step."""
    returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    recorded: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminations", "truncations")}
    films: list[list[np.ndarray]] = []
    for first in range(0, episodes, max_envs):
        count = min(max_envs, episodes - first)
        envs, obs = make_vector_env(env_name, count, seed + first, render_mode="rgb_array" if render else None,
                                    options=env_options)
        # each env plays its first episode only; its steps are gathered per env, then in order
        steps: list[dict[str, list]] = [{k: [] for k in recorded} for _ in range(count)]
        done = np.zeros(count, bool)
        if hasattr(policy, "reset"):
            policy.reset()
        try:
            if render:
                from mimicry.data.video import frames

                film = [[frame] for frame in frames(envs)]
            while not done.all():
                with torch.no_grad():
                    action = policy(torch.as_tensor(obs)).numpy()
                next_obs, reward, terminated, truncated, _ = envs.step(action)
                if hasattr(policy, "observe"):
                    policy.observe(action, reward)
                for i in np.flatnonzero(~done):
                    returns[first + i] += reward[i]
                    lengths[first + i] += 1
                    if record:
                        for key, value in zip(recorded, (obs[i], action[i], reward[i], terminated[i], truncated[i])):
                            steps[i][key].append(value)
                done |= terminated | truncated
                if render:  # a finished env has already reset (autoreset): its picture is not kept
                    for i, frame in enumerate(frames(envs)):
                        if not done[i]:
                            film[i].append(frame)
                obs = next_obs
        finally:
            envs.close()
        if render:
            films.extend(film)
        for episode in steps:
            for key in recorded:
                recorded[key].extend(episode[key])
    result: dict[str, np.ndarray | list] = {"returns": returns, "lengths": lengths}
    if record:
        result.update({k: np.asarray(v) for k, v in recorded.items()})
    if render:
        result["frames"] = films
    return result
