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

Two options, off by default because neither helped on the benchmark (README, "RL on text"):
``algo.return_range=[lo, hi]`` cuts the reward's range into equal slices instead of quantiles
(the highest token then means "a high reward", not "better than most recent samples"), and
classifier-free guidance: ``algo.label_dropout`` tells a share of the training continuations no
return (an extra "untold" row), and ``algo.guidance=w`` samples from untold + w · (told − untold),
the logits the KL to the start is then measured on (as the diffusion task's ``guidance=``). On the
benchmark the return embeddings stay tiny (next-token cross-entropy gives them almost no consistent
gradient: the return changes only where the sentence ends), every return token gives about the same
reward, and guidance amplifies that noise: the KL rises to 30-90 nats with no gain in reward.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn as nn

from mimicry.errors import MimicryError
from mimicry.models.gpt import sample_next
from mimicry.tasks.rl.text import TextReinforcementTask


class TextRewardConditioned(TextReinforcementTask):
    algo_name = "reward_conditioned"
    whole_number_settings = ("episodes_per_iteration", "batch_size", "updates_per_iteration", "buckets", "pool_size")

    def build_route(self) -> None:
        buckets, edges = self.algo["buckets"], self.algo.get("return_range")
        if edges is not None and (len(edges) != 2 or not float(edges[0]) < float(edges[1])):
            raise MimicryError(f"algo.return_range={edges!r}: give [lowest, highest] reward, e.g. [0.0, 1.0], "
                               "or null for quantiles of the pool")
        if not 0.0 <= float(self.algo.get("label_dropout", 0.0)) < 1.0:
            raise MimicryError(f"algo.label_dropout={self.algo.get('label_dropout')}: a share in [0, 1), e.g. 0.1")
        guidance = self.algo.get("guidance")
        if guidance is not None and (float(guidance) < 0 or not self.algo.get("label_dropout")):
            raise MimicryError(f"algo.guidance={guidance}: classifier-free guidance needs algo.label_dropout > 0 "
                               "(the model must also learn without the return) and a scale ≥ 0, e.g. 3.0")
        # label dropout adds a row: "no return told" (for classifier-free guidance)
        self.null_bucket = buckets
        rows = buckets + 1 if self.algo.get("label_dropout") else buckets
        self.return_embedding = nn.Embedding(rows, self.gpt.lm_head.in_features)
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
        (prompt + max_new_tokens fit in the context, so the cache never needs refilling). With
        guidance the batch is run twice in one pass, told the return and told nothing, and the
        token is sampled from the guided mix of the two (``guided``)."""
        told = self.told(group["bucket"])
        guided = self.algo.get("guidance") is not None
        if guided:
            told = torch.cat([told, self.told(torch.full_like(group["bucket"], self.null_bucket))])
        cache: list = []
        tokens = start
        inputs = torch.cat([start, start]) if guided else start
        logits = self.gpt.lm_head(self.gpt.trunk(self.gpt.embed(inputs) + told, cache))
        for step in range(self.spec.max_new_tokens):
            last = self.guided(*logits[:, -1].chunk(2)) if guided else logits[:, -1]
            next_token = sample_next(last, temperature, generator=generator)
            tokens = torch.cat([tokens, next_token], dim=1)
            if step + 1 < self.spec.max_new_tokens:
                new = torch.cat([next_token, next_token]) if guided else next_token
                x = self.gpt.embed(new, start=tokens.size(1) - 1) + told
                logits = self.gpt.lm_head(self.gpt.trunk(x, cache))
        return tokens

    def guided(self, told: torch.Tensor, untold: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance (Ho & Salimans 2022; on LMs: Sanchez et al. 2023): untold +
        w · (told − untold). w = 1 is plain conditioning; w > 1 pushes further towards the return asked."""
        return untold + self.algo["guidance"] * (told - untold)

    def sampling_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """The logits generate() samples from (the KL to the start is measured on these)."""
        told = self.action_logits(batch)
        if self.algo.get("guidance") is None:
            return told
        return self.guided(told, self.action_logits({**batch, "bucket": torch.full_like(batch["bucket"],
                                                                                        self.null_bucket)}))

    # ---- the pool: continuations labelled with the return they reached ----------------------
    def buckets_of(self, rewards: torch.Tensor) -> torch.Tensor:
        """Each reward's return token. With algo.return_range = [lo, hi]: equal slices of that range
        (the highest token means "a high reward", whatever the pool holds). With null: its quantile
        within ``rewards``, the share of rewards strictly below it cut into algo.buckets equal parts
        (tied rewards share the lower bucket; the highest token means "better than most recent ones")."""
        n = self.algo["buckets"]
        if self.algo.get("return_range") is not None:
            lo, hi = (float(x) for x in self.algo["return_range"])
            share = (rewards - lo) / (hi - lo)
        else:
            share = (rewards.unsqueeze(0) < rewards.unsqueeze(1)).float().mean(1)
        return (share * n).floor().long().clamp(min=0, max=n - 1)

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
        # the continuation, told the return it reached; some told nothing, so that the untold model
        # that guidance pushes away from is learnt too
        if self.algo.get("label_dropout"):
            dropped = torch.rand(batch["bucket"].shape, device=batch["bucket"].device) < self.algo["label_dropout"]
            batch = {**batch, "bucket": batch["bucket"].masked_fill(dropped, self.null_bucket)}
        return self.imitate_continuations(batch)

    def planned_updates(self) -> int:
        per_iteration = self.algo["episodes_per_iteration"] * self.spec.max_new_tokens
        return math.ceil(self.hparams.total_env_steps / per_iteration) * self.algo["updates_per_iteration"]
