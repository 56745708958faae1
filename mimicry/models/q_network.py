"""A Q-network: one predicted return per action (DQN)."""
from __future__ import annotations

import torch
import torch.nn as nn

from mimicry.models.actor_critic import mlp


class QNetwork(nn.Module):
    """Q(s, ·): the return expected after taking each action in state s, then acting greedily."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: list[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        self.net = mlp(obs_dim, list(hidden), n_actions, activation, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)
