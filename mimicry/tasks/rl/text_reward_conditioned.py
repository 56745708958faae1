"""Reward-conditioned generation: the Decision Transformer's idea on text (algo=reward_conditioned).

A Decision Transformer reads (return, state, action) and, asked for a high return, acts like the
episodes that earned one. On text the whole episode is one continuation, so the return is one
number, cut into ``algo.buckets`` return tokens. Each return token has an embedding, added to the
input of every position of its continuation (as a DT reads the return before every step):

    prompt continuation    (each position: token + position + return embedding)

Each iteration continues the prompts with the *highest* return token, scores the continuations,
and adds them to a pool of recent ones. Every continuation in the pool is then relabelled with
the return it really reached (hindsight, as a DT's dataset holds the returns episodes really
got): its reward's quantile within the pool (Quark, Lu et al. 2022), so that each return token
labels as many continuations, and the highest one always means "the best quarter so far",
whatever the reward's scale. The model is fine-tuned on the pool by next-token cross-entropy on
the continuations: it learns what text of each return looks like. Asked with the highest return
token it writes like the best continuations; the others still teach it what the low returns look
like (filtered BC throws them away).

The return embeddings start at zero, so the first samples are exactly the starting model's (KL 0).
A single return token put before the prompt (or before the continuation) was tried first: the
baby GPT learnt to ignore it (the same reward for every return token after 96 updates), so the
return is told at every position instead.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn as nn

from mimicry.models.gpt import sample_next
from mimicry.tasks.rl.text import TextReinforcementTask


class TextRewardConditioned(TextReinforcementTask):
    algo_name = "reward_conditioned"
    whole_number_settings = ("episodes_per_iteration", "batch_size", "updates_per_iteration", "buckets", "pool_size")

    def build_route(self) -> None:
        self.return_embedding = nn.Embedding(self.algo["buckets"], self.gpt.lm_head.in_features)
        nn.init.zeros_(self.return_embedding.weight)  # the start model, exactly, until it learns
        self.pool: list[dict[str, Any]] = []  # past continuations and their rewards (refilled on resume)

    # ---- the policy, told the return ---------------------------------------------------------
    def condition(self, n: int) -> dict[str, torch.Tensor]:
        """Ask for the highest return."""
        return {"bucket": torch.full((n,), self.algo["buckets"] - 1, dtype=torch.long)}

    def input_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        return super().input_embeddings(batch) + self.told(batch["bucket"])

    def told(self, bucket: torch.Tensor) -> torch.Tensor:
        """The return embedding (B, 1, n_embd), times algo.return_gain: Adam moves each weight by about
        the learning rate per step whatever its gradient, so the gain is this table's own, larger step."""
        return self.algo["return_gain"] * self.return_embedding(bucket).unsqueeze(1)

    def generate(self, group: dict[str, Any], start: torch.Tensor, generator: torch.Generator | None,
                 temperature: float) -> torch.Tensor:
        """GPT.generate's cached loop, with the return embedding added to each new token's input
        (prompt + max_new_tokens fit in the context, so the cache never needs refilling)."""
        told = self.told(group["bucket"])
        cache: list = []
        tokens = start
        logits = self.gpt.lm_head(self.gpt.trunk(self.gpt.embed(start) + told, cache))
        for step in range(self.spec.max_new_tokens):
            next_token = sample_next(logits[:, -1], temperature, generator=generator)
            tokens = torch.cat([tokens, next_token], dim=1)
            if step + 1 < self.spec.max_new_tokens:
                x = self.gpt.embed(next_token, start=tokens.size(1) - 1) + told
                logits = self.gpt.lm_head(self.gpt.trunk(x, cache))
        return tokens

    # ---- the pool: continuations labelled with the return they reached ----------------------
    def buckets_of(self, rewards: torch.Tensor) -> torch.Tensor:
        """Each reward's quantile bucket within ``rewards``: the share of rewards strictly below
        it, cut into algo.buckets equal parts (tied rewards share the lower bucket)."""
        below = (rewards.unsqueeze(0) < rewards.unsqueeze(1)).float().mean(1)
        return (below * self.algo["buckets"]).floor().long().clamp(max=self.algo["buckets"] - 1)

    def add_to_pool(self, groups: list[dict[str, Any]]) -> None:
        """Add the new continuations, drop the oldest beyond algo.pool_size, relabel them all."""
        self.pool.extend({k: g[k] for k in ("tokens", "context", "action", "reward")} for g in groups)
        while sum(len(g["reward"]) for g in self.pool) > self.algo["pool_size"] and len(self.pool) > 1:
            self.pool.pop(0)  # oldest first
        rewards = torch.cat([g["reward"] for g in self.pool])
        buckets = self.buckets_of(rewards)
        start = 0
        for g in self.pool:
            g["bucket"] = buckets[start:start + len(g["reward"])].to(g["tokens"].device)
            start += len(g["reward"])
        top = buckets == self.algo["buckets"] - 1
        self.rollout_stats["rollout/pool_size"] = float(len(rewards))
        self.rollout_stats["rollout/pool_top_bucket_min_return"] = float(rewards[top].min()) if top.any() else 0.0

    def batches(self) -> Iterator[dict[str, Any]]:
        end = self.epoch_end_env_steps()
        while self.env_steps < end:
            self.add_to_pool(self.sample_episodes(self.algo["episodes_per_iteration"]))
            every = [torch.arange(len(g["action"])) for g in self.pool]
            updates = 0
            while updates < self.algo["updates_per_iteration"]:
                for batch in self.minibatches(self.pool, every, ("action", "bucket")):
                    yield batch
                    updates += 1
                    if updates == self.algo["updates_per_iteration"]:
                        break
        self.stop_clock()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self.imitate_continuations(batch)  # the continuation, told the return it reached

    def planned_updates(self) -> int:
        per_iteration = self.algo["episodes_per_iteration"] * self.spec.max_new_tokens
        return math.ceil(self.hparams.total_env_steps / per_iteration) * self.algo["updates_per_iteration"]
