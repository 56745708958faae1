"""Temporal-difference learning: the bootstrapped reference a Q-network imitates, and its loss."""
from __future__ import annotations

import torch
import torch.nn as nn


def q_target(reward: torch.Tensor, terminated: torch.Tensor, next_q_target: torch.Tensor,
             next_q_online: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """r + γ·(1 − terminated)·Q_target(s', a'), where a' = argmax of the target network's Q
    (DQN), or of the online network's (Double DQN: pass ``next_q_online``), which curbs the
    overestimation of taking the max over noisy estimates. A truncated step is not terminal:
    its next state still has a future, so it bootstraps."""
    if next_q_online is None:
        next_value = next_q_target.max(dim=1).values
    else:
        next_value = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return reward + gamma * (1.0 - terminated.float()) * next_value


class Huber(nn.SmoothL1Loss):
    """Huber loss (δ = 1): squared near the target, linear far from it, so one surprising reward
    does not blow up the gradient (DQN's choice)."""
