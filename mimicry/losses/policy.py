"""PPO's objective, one implementation for every policy that picks discrete actions: a CartPole
MLP choosing left or right, or a GPT choosing the next character of a continuation.

The caller flattens its steps: one row per action taken, whatever produced it. Reference: the
advantage of each action (its own "fake reward", from GAE) and the return the critic imitates;
prediction: the action logits and the critic's value; loss: the clipped surrogate, plus the value
loss, minus an entropy bonus (Schulman et al. 2017, in CleanRL's form).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class PPOTerms(NamedTuple):
    loss: torch.Tensor          # what the optimizer minimizes
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    log_ratio: torch.Tensor     # log π_new − log π_old of each action (no gradient): see policy_shift


def normalized(advantage: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std (a single row is left as it is)."""
    if len(advantage) <= 1:
        return advantage
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


def clipped_surrogate(log_ratio: torch.Tensor, advantage: torch.Tensor, clip_range: float) -> torch.Tensor:
    """Climb the advantage, but stop where the new/old probability ratio leaves [1-clip, 1+clip]."""
    ratio = log_ratio.exp()
    return -torch.min(ratio * advantage, ratio.clamp(1 - clip_range, 1 + clip_range) * advantage).mean()


def token_logprob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) of each chosen token: logits (..., V), tokens (...) → (...)."""
    return F.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def k3_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) from samples of p, given log q/p at each one: Schulman's k3 estimator, r − 1 − log r
    with r = q/p. Unbiased, never negative, and low in variance where p and q are close."""
    return (log_ratio.exp() - 1 - log_ratio).mean()


def policy_shift(log_ratio: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the policy has moved on the actions taken: KL(old ‖ new) by the k3 estimator,
    and the share of ratios outside the trust region. Diagnostics, computed where they are logged."""
    with torch.no_grad():
        return k3_kl(log_ratio), ((log_ratio.exp() - 1).abs() > clip_range).float().mean()


def group_relative_advantage(rewards: torch.Tensor, baseline: str) -> torch.Tensor:
    """Each completion's advantage against the other completions of its prompt (rewards (k,), one group):
    no critic, the group is the baseline. ``mean_std``: (r − mean) / std (GRPO, Shao et al. 2024);
    ``leave_one_out``: r − the mean of the other k − 1 (RLOO, Ahmadian et al. 2024: a baseline that
    does not contain the reward it is subtracted from, so the estimate stays unbiased). A group whose
    rewards are all equal teaches nothing: its advantages are 0."""
    k = len(rewards)
    if k < 2:
        raise ValueError(f"a group needs at least 2 completions to compare, got {k}")
    if baseline == "mean_std":
        return (rewards - rewards.mean()) / (rewards.std() + 1e-8)
    if baseline == "leave_one_out":
        return rewards - (rewards.sum() - rewards) / (k - 1)
    raise ValueError(f"unknown baseline {baseline!r}: mean_std or leave_one_out")


def ppo_objective(logits: torch.Tensor, values: torch.Tensor, action: torch.Tensor, old_logprob: torch.Tensor,
                  advantage: torch.Tensor, returns: torch.Tensor,
                  value_loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], clip_range: float,
                  vf_coef: float, ent_coef: float, normalize_advantage: bool) -> PPOTerms:
    """The PPO loss of a minibatch of N steps: logits (N, A), values (N,), the rest (N,)."""
    logp = F.log_softmax(logits, dim=-1)
    log_ratio = logp.gather(-1, action.unsqueeze(-1)).squeeze(-1) - old_logprob
    entropy = -(logp.exp() * logp).sum(-1).mean()
    if normalize_advantage:
        advantage = normalized(advantage)
    policy_loss = clipped_surrogate(log_ratio, advantage, clip_range)
    value_loss = value_loss_fn(values, returns)  # the critic imitates the returns
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return PPOTerms(loss, policy_loss, value_loss, entropy, log_ratio.detach())
