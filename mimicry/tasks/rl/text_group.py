"""GRPO and RLOO on text: several continuations of each prompt, each judged against its own group.

No critic: the baseline an action is measured against is the other continuations of the same prompt.
Each continuation's advantage (its reward against its group's, mimicry/losses/policy.py) is the
reference for every one of its tokens; the policy climbs it through PPO's clipped surrogate on each
token's probability ratio, for ``update_epochs`` passes over the rollout.

- GRPO (Shao et al. 2024, DeepSeekMath): advantage = (r − group mean) / group std; the KL to the
  starting model is a term of the loss (k3 estimator per token, weight kl_coef).
- RLOO (Ahmadian et al. 2024): the reward first pays kl_coef × the continuation's log-ratio to the
  start (as PPO on text pays it per token), then advantage = r − the mean of the other k − 1.
"""
from __future__ import annotations

from typing import Any

import torch

from mimicry.errors import MimicryError
from mimicry.losses.policy import clipped_surrogate, group_relative_advantage, k3_kl, policy_shift, token_logprob
from mimicry.tasks.rl.text import TextRolloutTask


class TextGroupRelative(TextRolloutTask):
    """The shared route; a subclass names its baseline and where the KL to the start is paid."""
    baseline = ""          # group_relative_advantage's: mean_std | leave_one_out
    kl_in_loss = False     # True: kl_coef × KL(policy ‖ start) in the loss; False: subtracted from the reward
    whole_number_settings = ("group_size", "batch_size", "update_epochs")

    def build_route(self) -> None:
        a = self.algo
        if a["group_size"] < 2:
            raise MimicryError(f"algo.group_size={a['group_size']}: a group needs at least 2 continuations of a "
                               f"prompt to compare, e.g. 16")
        if a["kl_coef"] < 0:
            raise MimicryError(f"algo.kl_coef={a['kl_coef']}: must be ≥ 0, e.g. 0.05")
        if not a["clip_range"] > 0:
            raise MimicryError(f"algo.clip_range={a['clip_range']}: must be > 0, e.g. 0.2")
        self.automatic_optimization = False  # a batch is a whole rollout: its minibatch updates are stepped here

    # ---- the rollout: a group of continuations per prompt, each one's advantage in its group ----
    @torch.no_grad()
    def collect(self) -> list[dict[str, Any]]:
        a = self.algo
        groups = self.sample_episodes(self.continuations_per_rollout())
        equal = 0
        for g in groups:
            g["logprob"] = token_logprob(self.action_logits(g), g["action"])
            g["start_logprob"] = token_logprob(self.reference_logits(g), g["action"])
            reward = g["reward"].to(self.device)
            if not self.kl_in_loss:
                reward = reward - a["kl_coef"] * (g["logprob"] - g["start_logprob"]).sum(-1)
            g["advantage"] = group_relative_advantage(reward, self.baseline)
            equal += int(torch.all(g["reward"] == g["reward"][0]))
        self.rollout_stats["rollout/groups_all_equal"] = equal / len(groups)  # they teach nothing
        return groups

    def continuations_per_rollout(self) -> int:
        return self.algo["group_size"] * len(self.prompt_ids)  # counts_per_prompt: group_size each

    # ---- learning: the clipped surrogate on every token, with its continuation's advantage ----
    def objective(self, batch: dict[str, Any], clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of a minibatch of continuations; also each token's log-ratio to the rollout's policy,
        and the KL to the start (k3)."""
        logprob = token_logprob(self.action_logits(batch), batch["action"])   # prediction: each token, now
        advantage = batch["advantage"].unsqueeze(1).expand_as(logprob)       # reference: its continuation's standing
        log_ratio = logprob - batch["logprob"]
        loss = clipped_surrogate(log_ratio, advantage, clip)                 # loss: PPO's clipped surrogate
        kl = k3_kl(batch["start_logprob"] - logprob)
        if self.kl_in_loss:
            loss = loss + self.algo["kl_coef"] * kl
        return loss, log_ratio.detach(), kl.detach()

    def training_step(self, groups: list[dict[str, Any]], batch_idx: int) -> torch.Tensor:
        a, clip = self.algo, self.algo["clip_range"]
        every = [torch.arange(len(g["action"])) for g in groups]
        for _ in range(a["update_epochs"]):
            for batch in self.minibatches(groups, every, ("action", "logprob", "start_logprob", "advantage")):
                loss, log_ratio, kl = self.objective(batch, clip)
                self.step_optimizer(loss)
        if self.is_logging_step():
            approx_kl, clip_fraction = policy_shift(log_ratio, clip)
            for name, value in (("train/loss", loss), ("train/kl_to_start", kl), ("train/approx_kl", approx_kl),
                                ("train/clip_fraction", clip_fraction)):
                self.log(name, value, on_step=True, on_epoch=False, batch_size=log_ratio.numel(),
                         prog_bar=name == "train/loss")
            self.log_rollout(log_ratio.numel())
        return loss.detach()


class TextGRPO(TextGroupRelative):
    algo_name = "grpo"
    baseline = "mean_std"
    kl_in_loss = True


class TextRLOO(TextGroupRelative):
    algo_name = "rloo"
    baseline = "leave_one_out"
    kl_in_loss = False
