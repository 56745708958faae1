"""PPO on text: a value head on the GPT gives every generated token a reward of its own.

The same PPO as CartPole's (``ppo_updates``: mimicry/losses/policy.py's objective, and the same
GAE): only the rollout differs. One action = one token; the critic is a linear head on the GPT's last
hidden state. Each token's reward is a penalty for leaving the starting model,
-kl_coef · (log π(token) − log π_start(token)), and the last token also gets the text's reward
(Ziegler et al. 2019; InstructGPT): without the penalty the policy may find text that games the
reward and is no longer the language it learned.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from mimicry.data.rollouts import gae
from mimicry.errors import MimicryError
from mimicry.losses.policy import token_logprob
from mimicry.tasks.rl.ppo import ppo_updates
from mimicry.tasks.rl.text import TextRolloutTask


class TextPPO(TextRolloutTask):
    algo_name = "ppo"
    whole_number_settings = ("num_envs", "batch_size", "update_epochs")

    def build_route(self) -> None:
        if self.algo["kl_coef"] < 0:
            raise MimicryError(f"algo.kl_coef={self.algo['kl_coef']}: must be ≥ 0, e.g. 0.05")
        self.automatic_optimization = False  # a batch is a whole rollout: ppo_updates steps each minibatch
        self.value_head = nn.Linear(self.gpt.lm_head.in_features, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def policy_and_value(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits over the vocabulary (B, T, V) and the critic's value (B, T) at each action, in float32
        (as action_logits: ratios and advantages need more than bf16's precision)."""
        hidden = self.hidden_at_actions(batch)
        return self.gpt.lm_head(hidden).float(), self.value_head(hidden).squeeze(-1).float()

    # ---- the rollout: continuations, per-token rewards, GAE ------------------------------------
    @torch.no_grad()
    def collect(self) -> list[dict[str, Any]]:
        a = self.algo
        groups = self.sample_episodes(a["num_envs"])
        for g in groups:
            logits, values = self.policy_and_value(g)
            logprob = token_logprob(logits, g["action"])
            ref_logprob = token_logprob(self.reference_logits(g), g["action"])
            rewards = -a["kl_coef"] * (logprob - ref_logprob)       # every token: stay near the start
            rewards[:, -1] += g["reward"].to(rewards.device)         # the last one: the text's reward
            last = torch.zeros_like(rewards, dtype=torch.bool)
            last[:, -1] = True                                       # the episode really ends there
            next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
            advantage, returns = gae(rewards.T, values.T, next_values.T, last.T, torch.zeros_like(last.T),
                                     a["gamma"], a["gae_lambda"])  # GAE runs over (T, N)
            g.update({"logprob": logprob, "value": values, "advantage": advantage.T, "return": returns.T})
        values = torch.cat([g["value"].flatten() for g in groups])
        returns = torch.cat([g["return"].flatten() for g in groups])
        variance = returns.var()
        self.rollout_stats["rollout/explained_variance"] = float(1 - (returns - values).var() / variance) \
            if variance > 0 else 0.0
        return groups

    def continuations_per_rollout(self) -> int:
        return self.algo["num_envs"]

    # ---- learning: the same PPO updates as CartPole's, one row per generated token -----------
    def training_step(self, groups: list[dict[str, Any]], batch_idx: int) -> torch.Tensor:
        every = [torch.arange(len(g["action"])) for g in groups]
        minibatches = (batch for _ in range(self.algo["update_epochs"])
                       for batch in self.minibatches(groups, every, ("action", "logprob", "advantage", "return")))
        return ppo_updates(self, minibatches)
