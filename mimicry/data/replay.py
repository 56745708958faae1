"""A replay buffer: the last ``capacity`` transitions, sampled uniformly (DQN)."""
from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int):
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, bool)
        self.position = 0  # where the next transition goes (the oldest is overwritten when full)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray) -> None:
        """A batch of transitions (one per env); ``next_obs`` is the true next observation."""
        for i in range(len(action)):
            p = self.position
            self.obs[p], self.action[p], self.reward[p] = obs[i], action[i], reward[i]
            self.next_obs[p], self.terminated[p] = next_obs[i], terminated[i]
            self.position = (p + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        index = torch.randint(0, self.size, (batch_size,)).numpy()  # torch's RNG: seeded by the run's seed
        return {"obs": torch.from_numpy(self.obs[index]), "action": torch.from_numpy(self.action[index]),
                "reward": torch.from_numpy(self.reward[index]), "next_obs": torch.from_numpy(self.next_obs[index]),
                "terminated": torch.from_numpy(self.terminated[index])}
