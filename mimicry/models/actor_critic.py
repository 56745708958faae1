"""Small MLPs for reinforcement learning: a policy (actor) and a value estimate (critic).

The actor gives logits over the discrete actions; the critic predicts later reward (the return)
from a state, and that prediction turns each action's late reward into an advantage of its own.
Orthogonal initialisation as in CleanRL / Stable-Baselines3: a near-uniform first policy
(output gain 0.01) and a critic on the scale of the returns (gain 1).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from mimicry.errors import MimicryError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(in_dim: int, hidden: list[int], out_dim: int, activation: str = "tanh", out_gain: float = 1.0) -> nn.Sequential:
    """Linear → activation ... → Linear, orthogonally initialised."""
    if activation not in ACTIVATIONS:
        raise MimicryError(f"model.activation={activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [orthogonal(nn.Linear(a, b), math.sqrt(2)), ACTIVATIONS[activation]()]
    layers.append(orthogonal(nn.Linear(sizes[-1], out_dim), out_gain))
    return nn.Sequential(*layers)


def orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs (Stable-Baselines3's MlpPolicy for PPO: 64-64 tanh each)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: list[int] = (64, 64), activation: str = "tanh"):
        super().__init__()
        self.actor = mlp(obs_dim, list(hidden), n_actions, activation, out_gain=0.01)
        self.critic = mlp(obs_dim, list(hidden), 1, activation, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(action logits (B, A), value (B,))"""
        return self.actor(obs), self.critic(obs).squeeze(-1)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)


class Policy(nn.Module):
    """An actor alone: logits over the actions (behaviour cloning and filtered BC need no critic)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: list[int] = (64, 64), activation: str = "tanh"):
        super().__init__()
        self.actor = mlp(obs_dim, list(hidden), n_actions, activation, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)
