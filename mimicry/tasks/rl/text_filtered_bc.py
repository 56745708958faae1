"""Filtered BC on text (rejection-sampling fine-tuning, expert iteration): continue the prompts
many times, keep the best continuations by reward, fine-tune the model on them, repeat.

The filter is the one CartPole's filtered BC uses (``top_episodes``); the fit is the lm task's
next-token cross-entropy, on the kept continuations' tokens.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from mimicry.data.rollouts import top_episodes
from mimicry.errors import MimicryError
from mimicry.tasks.rl.text import TextReinforcementTask


class TextFilteredBC(TextReinforcementTask):
    algo_name = "filtered_bc"
    whole_number_settings = ("episodes_per_iteration", "batch_size", "update_epochs")

    def build_route(self) -> None:
        keep = self.algo["keep_fraction"]
        if not (isinstance(keep, (int, float)) and 0 < keep <= 1):
            raise MimicryError(f"algo.keep_fraction={keep!r}: must be in (0, 1], e.g. 0.1 for the top 10%")

    def keep_best(self, groups: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Rows of each group among the top ``keep_fraction`` of all continuations by reward."""
        rewards = torch.cat([g["reward"] for g in groups])
        kept = torch.as_tensor(top_episodes(rewards.numpy(), self.algo["keep_fraction"]))
        self.rollout_stats["rollout/kept_return_min"] = float(rewards[kept].min())
        self.rollout_stats["rollout/kept_episodes"] = float(len(kept))
        rows, start = [], 0
        for g in groups:
            n = len(g["reward"])
            rows.append(kept[(kept >= start) & (kept < start + n)] - start)
            start += n
        return rows

    def batches(self) -> Iterator[dict[str, Any]]:
        end = self.epoch_end_env_steps()
        while self.env_steps < end:
            groups = self.sample_episodes(self.algo["episodes_per_iteration"])
            rows = self.keep_best(groups)
            for _ in range(self.algo["update_epochs"]):
                yield from self.minibatches(groups, rows)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self.imitate_continuations(batch)

    def planned_updates(self) -> float:
        return math.inf  # how the kept continuations fall over the prompts decides it: a flat learning rate
