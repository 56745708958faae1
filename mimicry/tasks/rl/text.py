"""RL on text: a trained language model improved against a reward that comes only at the end.

The environment: a prompt is the first state; each action appends one token; an episode ends
after ``max_new_tokens`` tokens, and only then does the reward arrive, one number for the whole
continuation (a dialogue agent hears whether its answer helped only after writing all of it).

The policy is the GPT of an ``lm`` run (``init_from=LM_RUN_DIR``), with its tokenizer; a frozen
copy of it (the *reference*) measures how far the policy has moved: the KL divergence to the
starting model, which says whether the text is still the text the model learned to write.
Generated tokens are the env steps (``rollout/env_steps``, also logged as
``rollout/generated_tokens``), the x-axis of every curve. Each route adds its own imitation:
text_ppo.py, text_filtered_bc.py, text_reward_conditioned.py.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from mimicry.checkpoints import find_checkpoint
from mimicry.data.tokenizers import tokenizer_from_state
from mimicry.errors import MimicryError
from mimicry.models.gpt import GPT
from mimicry.models.hf_gpt2 import is_hf
from mimicry.models.lm_run import lm_weights, read_lm_run
from mimicry.rewards import build_reward, check_reward
from mimicry.rewards.judge import build_judge, score_with_prompts
from mimicry.rewards.loading import as_scores
from mimicry.tasks.rl.base import ReinforcementTask

log = logging.getLogger("mimicry")


@dataclass(frozen=True)
class TextEnvironment:
    """Prompts to continue and the length of a continuation (the episode)."""
    name: str
    prompts: tuple[str, ...]
    max_new_tokens: int


def token_kl(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) between the next-token distributions of two models at each position (..., T): exact,
    summed over the vocabulary, in nats."""
    logp, logq = F.log_softmax(logits, -1), F.log_softmax(reference_logits, -1)
    return (logp.exp() * (logp - logq)).sum(-1)


class TextReinforcementTask(ReinforcementTask):
    #: True for a route that learns from a preference file (dpo); the others generate their own text
    learns_from_preferences = False
    throughput_unit = "tokens"
    sample_options = ("prompt", "length", "temperature")
    charts = {
        **ReinforcementTask.charts,
        "rl on text": {
            "reward (rollout, eval, true)": [r"^rollout/return_mean$", r"^eval/return_mean$", r"^eval/true_return_mean$"],
            "KL to the starting model": [r"^rollout/kl$", r"^eval/kl$"],
        },
    }

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, algo: dict, env: str = "text",
                 seed: int = 0, total_env_steps: int = 100_000, eval_every_env_steps: int = 5_000,
                 eval_episodes: int = 8, eval_seed: int = 10_000, stop_at_return: float | None = None,
                 torch_threads: int | None = 1, sample_every_n_steps: int = 0, prompts: list[str] | None = None,
                 max_new_tokens: int = 48, reward: dict | None = None, init_from: str | None = None,
                 lm: dict | None = None, true_reward: str | None = None):
        super().__init__(model, loss, optim, data_spec, algo, env, seed, total_env_steps, eval_every_env_steps,
                         eval_episodes, eval_seed, stop_at_return, torch_threads, sample_every_n_steps)
        if lm is None:  # a new run (or a resumed one): read the lm run; a checkpoint carries it (derived_arguments)
            lm = read_lm_run(init_from)
        self.lm = lm
        self.tokenizer = tokenizer_from_state(lm["tokenizer"])
        self.vocab_size = lm["vocab_size"]
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise MimicryError(f"env.max_new_tokens={max_new_tokens!r}: must be a whole number ≥ 1, e.g. 48")
        if not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise MimicryError(f"env.prompts={prompts!r}: give a list of non-empty prompts, e.g. "
                               "env.prompts='[\"ROMEO:\\n\"]'")
        self.spec = TextEnvironment("text", tuple(prompts), max_new_tokens)
        self.prompt_ids = [self.encode_prompt(p) for p in prompts]
        # Dropout off: PPO's probability ratios and the KL need the policy that acted, not a noisy one.
        settings = {**lm["model"], "dropout": 0.0}
        self.gpt = GPT(vocab_size=self.vocab_size, **settings)
        self.reference = GPT(vocab_size=self.vocab_size, **settings)
        self.reference.requires_grad_(False)
        self._reward: Callable[[list[str]], list[float]] | None = None
        self._true_reward: Callable[[list[str]], list[float]] | None = None
        if data_spec.get("kind") == "preferences" and not self.learns_from_preferences:
            raise MimicryError(f"algo={self.algo_name} learns from the continuations it writes, not from a preference "
                               f"file: drop data=preferences, or use algo=dpo, or train task=reward_model on the file "
                               f"and give reward=model reward.from_run=RM_RUN")
        self.build_route()

    def derived_arguments(self) -> dict[str, Any]:
        return {**super().derived_arguments(), "lm": self.lm}  # sampling a run needs no lm run on disk

    def build_route(self) -> None:
        """What a route adds to the policy (a value head), and the checks of its own settings."""

    def environment(self, env: str) -> None:
        if env != "text":
            raise MimicryError(f"algo={self.algo_name} fine-tunes a language model: it needs env=text, not env={env}")
        return None  # the text environment is built from the prompts, once the tokenizer is known

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer.encode(prompt)
        if len(ids) == 0:
            raise MimicryError(f"prompt {prompt!r} has no character the model knows; use text like its training text")
        room = self.gpt_block_size() - self.spec.max_new_tokens
        if len(ids) > room:
            raise MimicryError(f"prompt {prompt!r} is {len(ids)} tokens; with env.max_new_tokens="
                               f"{self.spec.max_new_tokens} "
                               f"it must be at most {room} (the model's context is {self.gpt_block_size()}); "
                               f"shorten it or lower env.max_new_tokens")
        return ids

    def gpt_block_size(self) -> int:
        return int(self.lm["model"].get("block_size", 64))

    # ---- init_from: the lm run's weights start both the policy and the reference -------------
    def init_weights_from(self, path: str | Path) -> Path:
        """Called by the runner for ``init_from`` (mimicry/checkpoints.py)."""
        self.start_from(lm_weights(path))
        return str(path) if is_hf(str(path)) else find_checkpoint(path)

    def start_from(self, state: dict[str, torch.Tensor]) -> None:
        """A GPT's weights become both the policy's start and the frozen reference."""
        self.reference.load_state_dict(state)
        self.gpt.load_state_dict(state)

    # ---- the reward ----------------------------------------------------------------------------
    @property
    def reward_name(self) -> str:
        return str((self.hparams.reward or {}).get("_target_"))

    def reward_fn(self) -> Callable[[list[str]], list[float]]:
        if self._reward is None:
            self._reward = build_reward(self.hparams.reward or {})
        return self._reward

    def true_score(self, texts: list[str], prompt: str) -> np.ndarray:
        """``env.true_reward``: a registered reward the policy never learns from, scored on the same texts
        (the hidden reward behind a preference set, beside the learned one: over-optimisation shows)."""
        if self._true_reward is None:
            self._true_reward = build_judge(self.hparams.true_reward, {}, "env.true_reward")
        scores = score_with_prompts(self._true_reward, texts, [prompt] * len(texts))
        return np.asarray(as_scores(scores, len(texts), str(self.hparams.true_reward)), np.float64)

    def score(self, texts: list[str], prompt: str | None = None) -> np.ndarray:
        """The reward of continuations of ``prompt``; a reward that reads prompts (reward=model) is given it."""
        scores = score_with_prompts(self.reward_fn(), texts, [prompt or ""] * len(texts))
        return np.asarray(as_scores(scores, len(texts), self.reward_name), np.float64)

    # ---- episodes: prompts continued by the policy ------------------------------------------
    def condition(self, n: int) -> dict[str, torch.Tensor]:
        """What the policy is told besides the prompt (the reward-conditioned route: the return asked for)."""
        return {}

    def counts_per_prompt(self, episodes: int) -> list[int]:
        """``episodes`` continuations spread over the prompts as evenly as they go."""
        n = len(self.prompt_ids)
        return [episodes // n + (i < episodes % n) for i in range(n)]

    def generate(self, group: dict[str, Any], start: torch.Tensor, generator: torch.Generator | None,
                 temperature: float) -> torch.Tensor:
        """``start`` (B, P) followed by max_new_tokens sampled tokens: the GPT's own generate."""
        return self.gpt.generate(start, self.spec.max_new_tokens, temperature=temperature, generator=generator)

    @torch.no_grad()
    def continue_prompts(self, counts: list[int], generator: torch.Generator | None = None,
                         temperature: float = 1.0) -> list[dict[str, Any]]:
        """One group of episodes per prompt (a group shares its prompt's length): the token
        sequences (prompt + continuation), the actions (continuation tokens), the texts."""
        groups = []
        for prompt, n in zip(self.prompt_ids, counts):
            if n == 0:
                continue
            group = {"context": len(prompt), "prompt": self.tokenizer.decode(prompt),
                     **{k: v.to(self.device) for k, v in self.condition(n).items()}}
            group["tokens"] = self.generate(group, prompt.unsqueeze(0).repeat(n, 1).to(self.device), generator,
                                            temperature)
            group["action"] = group["tokens"][:, group["context"]:]
            group["text"] = [self.tokenizer.decode(row) for row in group["action"].cpu()]
            groups.append(group)
        return groups

    def sample_episodes(self, episodes: int) -> list[dict[str, Any]]:
        """Continuations from the current policy, scored: what every route learns from."""
        groups = self.continue_prompts(self.counts_per_prompt(episodes))
        for group in groups:
            group["reward"] = torch.as_tensor(self.score(group["text"], group["prompt"]), dtype=torch.float32)
        rewards = torch.cat([g["reward"] for g in groups])
        generated = sum(g["action"].numel() for g in groups)
        self.env_steps += generated
        self.episode_stats(rewards.tolist(), [self.spec.max_new_tokens] * len(rewards))
        self.rollout_stats["rollout/generated_tokens"] = float(self.env_steps)
        self.rollout_stats["rollout/kl"] = float(torch.cat([self.kl_to_reference(g) for g in groups]).mean())
        self.time_env_steps()
        return groups

    # ---- the policy's view of a sequence -------------------------------------------------------
    def input_embeddings(self, batch: dict[str, Any]) -> torch.Tensor:
        """What the policy's transformer reads: every token but the last (each one predicts the next)."""
        return self.gpt.embed(batch["tokens"][:, :-1])

    def hidden_at_actions(self, batch: dict[str, Any]) -> torch.Tensor:
        """The policy's last hidden state at each position that chose an action (B, T, n_embd):
        position context-1 chose the first generated token, and so on."""
        return self.gpt.trunk(self.input_embeddings(batch))[:, batch["context"] - 1:]

    def action_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """The policy's logits over the vocabulary at each action (B, T, V), in float32: under bf16
        autocast they come out in bf16, too coarse for PPO's ratios and the KL (8 bits of mantissa)."""
        return self.gpt.lm_head(self.hidden_at_actions(batch)).float()

    def sampling_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """The logits the policy samples its actions from (the reward-conditioned route: guided)."""
        return self.action_logits(batch)

    @torch.no_grad()
    def reference_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """The starting model's logits at each action (float32, as the policy's)."""
        return self.reference(batch["tokens"][:, :-1])[:, batch["context"] - 1:].float()

    @torch.no_grad()
    def kl_to_reference(self, group: dict[str, Any]) -> torch.Tensor:
        """KL(policy ‖ start) of each continuation (B,): at every generated position the exact KL
        between the two next-token distributions, summed over the positions. Zero for the start."""
        return token_kl(self.sampling_logits(group), self.reference_logits(group)).sum(-1)

    # ---- evaluation: fixed prompts and seeds -------------------------------------------------
    def evaluate(self) -> dict[str, Any]:
        was_training = self.training
        self.eval()
        try:
            generator = torch.Generator(device=self.device).manual_seed(self.hparams.eval_seed)
            groups = self.continue_prompts([self.hparams.eval_episodes] * len(self.prompt_ids), generator)
            rewards = np.concatenate([self.score(g["text"], g["prompt"]) for g in groups])
            kl = torch.cat([self.kl_to_reference(g) for g in groups]).cpu().numpy()
            result = {"rewards": rewards, "kl": kl, "groups": groups}
            if self.hparams.true_reward:
                result["true_rewards"] = np.concatenate([self.true_score(g["text"], g["prompt"]) for g in groups])
        finally:
            self.train(was_training)
        return result

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log_evaluation()

    def log_evaluation(self) -> None:
        """The evaluation's reward and KL, and its samples, at x = generated tokens (updates for an offline route)."""
        result = self.evaluate()
        values = {"eval/return_mean": result["rewards"].mean(), "eval/return_std": result["rewards"].std(),
                  "eval/kl": result["kl"].mean()}
        if "true_rewards" in result:
            values["eval/true_return_mean"] = result["true_rewards"].mean()
        if self.step_is_env_steps:
            values.update({"rollout/env_steps": self.env_steps, "rollout/generated_tokens": self.env_steps,
                           "step": self.env_steps})
        for name, value in values.items():
            self.log(name, float(value), prog_bar=name == "eval/return_mean", batch_size=1)
        self.write_samples(result, self.env_steps if self.step_is_env_steps else self.global_step)

    def write_samples(self, result: dict[str, Any], step: int) -> None:
        """The first two continuations of each prompt, with their rewards, in TensorBoard's text tab."""
        writer = self.tensorboard()
        if writer is None or not self.trainer.is_global_zero:
            return
        lines, index = [], 0
        for prompt, group in zip(self.spec.prompts, result["groups"]):
            for i, text in enumerate(group["text"]):
                if i < 2:
                    lines.append(f"reward {result['rewards'][index + i]:.2f}, KL {result['kl'][index + i]:.1f}:")
                    lines += ["    " + line for line in (prompt + text).splitlines()] + [""]
            index += len(group["text"])
        writer.add_text("samples/text", "\n".join(lines), step)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        check_reward(self.reward_fn(), self.reward_name)  # a broken reward fails before any work
        if self.hparams.true_reward:
            self.true_score(["probe"], "")
        if self.env_steps == 0 and self.global_step == 0:  # "before": the starting model, at step 0
            result = self.evaluate()
            writer = self.tensorboard()
            if writer is not None and self.trainer.is_global_zero:
                values = {"eval/return_mean": result["rewards"].mean(), "eval/kl": result["kl"].mean(),
                          "rollout/env_steps": 0.0, "rollout/generated_tokens": 0.0}
                if "true_rewards" in result:
                    values["eval/true_return_mean"] = result["true_rewards"].mean()
                for name, value in values.items():
                    writer.add_scalar(name, float(value), 0)
                self.write_samples(result, 0)
            log.info(f"starting model: eval/return_mean {result['rewards'].mean():.3f} on "
                     f"{len(result['rewards'])} fixed continuations (reward {self.reward_name})")

    def imitate_continuations(self, batch: dict[str, Any], prediction: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy on the generated tokens only (the prompt is context, not something to copy).
        ``prediction``: the logits at those positions, when the caller has them already."""
        reference = batch["action"]                                       # the tokens to imitate
        if prediction is None:
            prediction = self.action_logits(batch)                       # logits at those positions
        loss = self.imitate(prediction.reshape(-1, prediction.size(-1)), reference.reshape(-1))
        if self.is_logging_step():
            self.log_rollout(len(reference))
        return loss

    def minibatches(self, groups: list[dict[str, Any]], rows: list[torch.Tensor],
                    fields: tuple[str, ...] = ("action",)) -> Iterator[dict[str, Any]]:
        """Shuffled minibatches of whole continuations (``rows`` of each group), one prompt length
        each; algo.batch_size counts tokens (env steps), as on CartPole."""
        size = max(1, self.algo["batch_size"] // self.spec.max_new_tokens)
        chunks = [(g, r[order[i:i + size]]) for g, r in zip(groups, rows) for order in [torch.randperm(len(r))]
                  for i in range(0, len(r), size)]
        for i in torch.randperm(len(chunks)).tolist():  # torch's generator: seeded runs repeat
            g, index = chunks[i]
            yield {"tokens": g["tokens"][index], "context": g["context"], **{k: g[k][index] for k in fields}}

    def count_items(self, batch: dict[str, Any]) -> int:
        return int(batch["action"].numel())

    def act(self, obs: torch.Tensor, greedy: bool) -> torch.Tensor:
        raise MimicryError("a text policy continues prompts; use mimicry sample RUN_DIR prompt=... length=...")

    # ---- mimicry sample ------------------------------------------------------------------------
    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """Continue ``prompt`` (default: the run's prompts) n times each; scored when the reward loads."""
        length = int(options.get("length", self.spec.max_new_tokens))
        if "prompt" in options:
            self.prompt_ids = [self.encode_prompt(str(options["prompt"]))]
            prompts = [str(options["prompt"])]
        else:
            prompts = list(self.spec.prompts)
        self.spec = TextEnvironment("text", tuple(prompts), length)
        for ids in self.prompt_ids:
            self.encode_prompt(self.tokenizer.decode(ids))  # the new length must still fit the context
        generator = torch.Generator(device=self.device).manual_seed(seed)
        groups = self.continue_prompts([n] * len(prompts), generator, float(options.get("temperature", 1.0)))
        try:
            scores = [self.score(g["text"], g["prompt"]) for g in groups]
        except MimicryError as error:  # e.g. a reward that needs a file not here: the text is still worth seeing
            log.warning(f"continuations not scored: {error}")
            scores = [None] * len(groups)
        blocks = []
        for prompt, group, score in zip(prompts, groups, scores):
            for i, text in enumerate(group["text"]):
                head = f"[reward {score[i]:.3f}]\n" if score is not None else ""
                blocks.append(head + prompt + text)
        path = out_dir / f"samples_seed{seed}.txt"
        path.write_text("\n\n=====\n\n".join(blocks), encoding="utf-8")
        return [path]


class TextRolloutTask(TextReinforcementTask):
    """A route whose Lightning batch is one rollout of ``continuations_per_rollout()`` continuations,
    learned from by minibatch updates stepped inside ``training_step`` (ppo, grpo, rloo)."""

    def continuations_per_rollout(self) -> int:
        raise NotImplementedError

    def collect(self) -> list[dict[str, Any]]:
        """One rollout: a group of scored continuations per prompt, with what the route learns from."""
        raise NotImplementedError

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        end = self.epoch_end_env_steps()
        while self.env_steps < end:
            yield self.collect()  # one Lightning batch = one rollout (a group of continuations per prompt)

    def env_steps_per_batch(self) -> int:
        return self.continuations_per_rollout() * self.spec.max_new_tokens

    def count_items(self, groups: list[dict[str, Any]]) -> int:
        return sum(int(g["action"].numel()) for g in groups)

    def planned_updates(self) -> int:
        a = self.algo
        rollouts = math.ceil(self.hparams.total_env_steps / self.env_steps_per_batch())
        per_batch = max(1, a["batch_size"] // self.spec.max_new_tokens)
        chunks = sum(math.ceil(n / per_batch) for n in self.counts_per_prompt(self.continuations_per_rollout()))
        return rollouts * a["update_epochs"] * chunks

