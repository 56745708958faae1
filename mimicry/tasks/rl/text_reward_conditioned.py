"""Reward-conditioned generation: the Decision Transformer's idea on text (algo=reward_conditioned).

A Decision Transformer reads (return, state, action) and, asked for a high return, acts like the
episodes that earned one. On text the whole episode is one continuation, so the return is one
number, cut into ``algo.buckets`` return tokens. The policy is told its return token at every
position, as one learnt vector per (return token, step of the continuation) added to the input
(a DT adds a timestep embedding to every token; here the two are one table):

    prompt continuation    (each position: token + position + return embedding[return, step])

Each iteration continues the prompts with the *highest* return token, scores the continuations,
and adds them to a pool of recent ones. Every continuation in the pool is then relabelled with
the return it really reached (hindsight, as a DT's dataset holds the returns episodes really
got): its reward's quantile within the pool (Quark, Lu et al. 2022), so that each return token
labels as many continuations, and the highest one always means "the best quarter so far",
whatever the reward's scale. The model is fine-tuned on the pool by next-token cross-entropy on
the continuations (``algo.update_epochs`` passes per iteration), plus Quark's penalty
``algo.kl_coef`` × KL(policy told the return ‖ start) per token: it learns what text of each
return looks like and stays near the start elsewhere. Asked with the highest return token it
writes like the best continuations; the others still teach it what the low returns look like
(filtered BC throws them away). The return embeddings start at zero: the first samples are
exactly the starting model's (KL 0).

What it needs, measured on the benchmark (README, "RL on text"; scripts/bench_rl_text.py): the
shared weights must learn to *read* the return, which takes a few hundred updates at lr 1e-3.
At lr 1e-4 (about 500 updates in a run) every return token gave the same reward, whatever the
form (one vector for all positions, one token before the prompt or the continuation, guidance).
Fine-tuned offline on 1,024 of the start's continuations at lr 1e-3, the return tokens do mean
their returns, and the per-step table learns it faster than one vector for all steps (the return
changes only where the first sentence ends, a step-dependent thing). Three guards keep the text
near the start's at lr 1e-3: a warmup (Adam's first steps move every weight by the full lr), passes
over the pool instead of a fixed number of updates (the first pools are small and would be learnt
by heart), and the KL penalty. So set, the benchmark's run closes half the gap to the reward's
maximum in 49,152 generated tokens, as PPO does, at KL 24.7 nats per continuation.

Two options, off by default because neither helped on the benchmark:
``algo.return_range=[lo, hi]`` cuts the reward's range into equal slices instead of quantiles
(the highest token then means "a high reward", not "better than most recent samples"), and
classifier-free guidance: ``algo.label_dropout`` tells a share of the training continuations no
return (an extra "untold" row), and ``algo.guidance=w`` samples from untold + w · (told − untold),
the logits the KL to the start is then measured on (as the diffusion task's ``guidance=``).
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn as nn

from mimicry.errors import MimicryError
from mimicry.models.gpt import sample_next
from mimicry.tasks.rl.text import TextReinforcementTask, token_kl


class TextRewardConditioned(TextReinforcementTask):
    algo_name = "reward_conditioned"
    whole_number_settings = ("episodes_per_iteration", "batch_size", "buckets", "pool_size")

    def build_route(self) -> None:
        buckets, edges = self.algo["buckets"], self.algo.get("return_range")
        if edges is not None and (len(edges) != 2 or not float(edges[0]) < float(edges[1])):
            raise MimicryError(f"algo.return_range={edges!r}: give [lowest, highest] reward, e.g. [0.0, 1.0], "
                               "or null for quantiles of the pool")
        if not 0.0 <= float(self.algo.get("label_dropout", 0.0)) < 1.0:
            raise MimicryError(f"algo.label_dropout={self.algo.get('label_dropout')}: a share in [0, 1), e.g. 0.1")
        if not float(self.algo["update_epochs"]) > 0:
            raise MimicryError(f"algo.update_epochs={self.algo['update_epochs']!r}: passes over the pool per "
                               "iteration, must be > 0, e.g. 1.0")
        if not float(self.algo["kl_coef"]) >= 0:
            raise MimicryError(f"algo.kl_coef={self.algo['kl_coef']!r}: must be ≥ 0, e.g. 0.5 (0: no penalty)")
        guidance = self.algo.get("guidance")
        if guidance is not None and (float(guidance) < 0 or not self.algo.get("label_dropout")):
            raise MimicryError(f"algo.guidance={guidance}: classifier-free guidance needs algo.label_dropout > 0 "
                               "(the model must also learn without the return) and a scale ≥ 0, e.g. 3.0")
        # label dropout adds a row: "no return told" (for classifier-free guidance)
        self.null_bucket = buckets
        rows = buckets + 1 if self.algo.get("label_dropout") else buckets
        self.told_steps = self.spec.max_new_tokens  # fixed here: `mimicry sample length=` may change the spec's
        self.return_embedding = nn.Embedding(rows * self.told_steps, self.gpt.lm_head.in_features)
        nn.init.zeros_(self.return_embedding.weight)  # the start model, exactly, until it learns
        self.pool: list[dict[str, Any]] = []  # past continuations and their rewards (refilled on resume)

    # ---- the policy, told the return ---------------------------------------------------------
    def condition(self, n: int) -> dict[str, torch.Tensor]:
        """Ask for the highest return."""
        return {"bucket": torch.full((n,), self.algo["buckets"] - 1, dtype=torch.long)}

    def input_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        x = super().input_embeddings(batch)
        step = torch.arange(x.size(1), device=x.device) - (batch["context"] - 1)
        return x + self.told(batch["bucket"], step)

    def told(self, bucket: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """The return embedding (B, T, n_embd) of return tokens ``bucket`` (B,) at ``step`` (T,): steps
        into the continuation (step s predicts its s-th token; the prompt's positions are step 0), times
        algo.return_gain: Adam moves each weight by about the learning rate per update whatever its
        gradient, so the gain is this table's own, larger step. Steps past the table's use its last row."""
        row = bucket.unsqueeze(1) * self.told_steps + step.clamp(0, self.told_steps - 1)
        return self.algo["return_gain"] * self.return_embedding(row)

    def generate(self, group: dict[str, Any], start: torch.Tensor, generator: torch.Generator | None,
                 temperature: float) -> torch.Tensor:
        """GPT.generate's cached loop, with the return embedding added to each new token's input
        (prompt + max_new_tokens fit in the context, so the cache never needs refilling). With
        guidance the batch is run twice in one pass, told the return and told nothing, and the
        token is sampled from the guided mix of the two (``guided``)."""
        bucket = group["bucket"]
        guided = self.algo.get("guidance") is not None
        if guided:
            bucket = torch.cat([bucket, torch.full_like(bucket, self.null_bucket)])
        cache: list = []
        tokens = start
        inputs = torch.cat([start, start]) if guided else start
        prompt_steps = torch.zeros(start.size(1), dtype=torch.long, device=start.device)
        logits = self.gpt.lm_head(self.gpt.trunk(self.gpt.embed(inputs) + self.told(bucket, prompt_steps), cache))
        for step in range(self.spec.max_new_tokens):
            last = self.guided(*logits[:, -1].chunk(2)) if guided else logits[:, -1]
            next_token = sample_next(last, temperature, generator=generator)
            tokens = torch.cat([tokens, next_token], dim=1)
            if step + 1 < self.spec.max_new_tokens:
                new = torch.cat([next_token, next_token]) if guided else next_token
                told = self.told(bucket, torch.tensor([step + 1], device=start.device))  # it predicts token step + 1
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
            # passes over the pool, not a fixed count: the first, small pools are not learnt by heart
            continuations = max(1, self.algo["batch_size"] // self.spec.max_new_tokens)
            planned = max(1, round(self.algo["update_epochs"] * sum(len(a) for a in every) / continuations))
            updates = 0
            while updates < planned:
                for batch in self.minibatches(self.pool, every, ("action", "bucket")):
                    yield batch
                    updates += 1
                    if updates == planned:
                        break

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # the continuation, told the return it reached; some told nothing, so that the untold model
        # that guidance pushes away from is learnt too
        if self.algo.get("label_dropout"):
            dropped = torch.rand(batch["bucket"].shape, device=batch["bucket"].device) < self.algo["label_dropout"]
            batch = {**batch, "bucket": batch["bucket"].masked_fill(dropped, self.null_bucket)}
        prediction = self.action_logits(batch)      # the policy's logits, told the return reached
        loss = self.imitate_continuations(batch, prediction)
        if self.algo["kl_coef"]:  # Quark's penalty: stay near the start wherever the data does not say otherwise
            kl = token_kl(prediction, self.reference_logits(batch)).mean()  # nats per token
            self.log_metric("train/kl_per_token", kl)
            loss = loss + self.algo["kl_coef"] * kl
        return loss

    def planned_updates(self) -> float:
        return math.inf  # the pool's growth decides it: a flat learning rate
