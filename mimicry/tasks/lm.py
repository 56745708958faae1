"""Language modelling: imitate the next token of real text."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import MeanMetric, SumMetric

from mimicry.data.preferences import write_preferences
from mimicry.data.tokenizers import tokenizer_from_state
from mimicry.errors import MimicryError
from mimicry.models.gpt import GPT
from mimicry.models.hf_gpt2 import read_pretrained
from mimicry.rewards.judge import bradley_terry_prefers_first, build_judge, score_with_prompts
from mimicry.tasks.base import ImitationTask
from mimicry.tasks.counted_fit import CountedFit


class LanguageModeling(CountedFit, ImitationTask):
    throughput_unit = "tokens"
    sample_options = ("prompt", "length", "temperature", "top_k", "top_p", "pairs", "judge", "prompts")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 200,
                 prompt: str = "\n", sample_tokens: int = 200, temperature: float = 0.8, top_k: int | None = None,
                 top_p: float | None = None, sample_seed: int = 0):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)
        self.tokenizer = tokenizer_from_state(data_spec["tokenizer"])
        self.model = instantiate(model, vocab_size=data_spec["vocab_size"])
        self.val_nll = MeanMetric()
        # bits per byte: the same axis for char, byte and BPE tokens (not saved: the tokenizer says it)
        self.register_buffer("token_bytes", self.tokenizer.byte_lengths(), persistent=False)
        self.val_nats, self.val_bytes = SumMetric(), SumMetric()

    def imitation(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reference = tokens[:, 1:]                 # the next token of real text
        prediction = self.model(tokens[:, :-1])   # logits over the vocabulary (a table's log-probabilities)
        return prediction, reference

    def training_step(self, tokens: torch.Tensor, batch_idx: int) -> torch.Tensor:
        prediction, reference = self.imitation(tokens)
        loss = self.imitate(prediction, reference)
        return loss

    def validation_step(self, tokens: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 1:  # fixed training windows (data.train_eval_batches): the loss on text it learned from
            self.imitate(*self.imitation(tokens), stage="val", name="train_loss")
            return
        prediction, reference = self.imitation(tokens)
        loss = self.imitate(prediction, reference, stage="val")
        self.val_nll.update(loss)
        self.val_nats.update(loss.detach().float() * reference.numel())  # the loss is a mean over the tokens
        self.val_bytes.update(self.token_bytes[reference].sum())         # the UTF-8 bytes those tokens spell

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()  # nats per token
        self.log("val/perplexity", nll.exp(), sync_dist=True)
        self.log("val/bits_per_char", nll / math.log(2), sync_dist=True)  # per token: per character for char
        self.log("val/bits_per_byte", self.val_nats.compute() / math.log(2) / self.val_bytes.compute().clamp(min=1),
                 sync_dist=True)
        for metric in (self.val_nll, self.val_nats, self.val_bytes):
            metric.reset()

    def start_from_pretrained(self, init_from: str) -> str:
        """``init_from=hf:DIR``: GPT-2 weights from a Hugging Face folder (the runner built this model from
        its config.json, and the data from its tokenizer)."""
        if not isinstance(self.model, GPT):
            raise MimicryError(f"init_from={init_from} loads GPT-2 weights: it needs model=gpt")
        pretrained = read_pretrained(init_from)
        weights = pretrained.weights(self.model.block_size)
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as error:  # the runner sets the settings from the same config.json: a changed folder
            raise MimicryError(f"init_from={init_from}: its weights do not fit this run's model "
                               f"({str(error).splitlines()[-1].strip()[:120]}); keep model settings as config.json "
                               f"says (only model.block_size may be smaller)") from None
        return str(pretrained.folder)

    def count_items(self, tokens: torch.Tensor) -> int:
        return tokens[:, 1:].numel()

    # ---- samples ---------------------------------------------------------------------------------
    def complete(self, prompt: str, max_new_tokens: int, seed: int, n: int = 1, **sampling: Any) -> list[str]:
        """Continue ``prompt`` ``n`` times; the same seed gives the same text."""
        prompt_ids = self.tokenizer.encode(prompt) if prompt else torch.zeros(0, dtype=torch.long)
        if len(prompt_ids) == 0:
            prompt_ids = torch.zeros(1, dtype=torch.long)  # start from token 0 when there is no prompt
        idx = prompt_ids.to(self.device).unsqueeze(0).repeat(n, 1)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        was_training = self.training
        self.eval()
        out = self.model.generate(idx, max_new_tokens, generator=generator, **sampling)
        self.train(was_training)
        return [self.tokenizer.decode(row) for row in out.cpu()]

    def _sampling_options(self, **overrides: Any) -> dict:
        h = self.hparams
        options = {"temperature": h.temperature, "top_k": h.top_k, "top_p": h.top_p}
        options.update({k: v for k, v in overrides.items() if k in options})
        return options

    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        h = self.hparams
        text = self.complete(h.prompt, h.sample_tokens, h.sample_seed, **self._sampling_options())[0]
        (sample_dir / f"step_{step:07d}.txt").write_text(text, encoding="utf-8")
        if writer is not None:  # indented = preformatted in TensorBoard's markdown text tab
            writer.add_text("samples/text", "\n".join("    " + line for line in text.splitlines()), step)

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        if "pairs" in options or any(key == "judge" or key.startswith("judge.") for key in options):
            return self.preference_pairs(out_dir, seed, **options)
        h = self.hparams
        prompt = options.get("prompt", h.prompt)
        length = int(options.get("length", h.sample_tokens))
        texts = self.complete(str(prompt), length, seed, n=n, **self._sampling_options(**options))
        path = out_dir / f"samples_seed{seed}.txt"
        path.write_text("\n\n=====\n\n".join(texts), encoding="utf-8")
        return [path]

    # ---- preference pairs: mimicry sample RUN pairs=N judge=REWARD --------------------------------
    def continuations(self, prompt: str, n: int, length: int, generator: torch.Generator, **sampling: Any) -> list[str]:
        """``n`` continuations of ``prompt`` (the prompt itself left out)."""
        ids = self.tokenizer.encode(prompt)
        if len(ids) == 0:
            raise MimicryError(f"prompt {prompt!r} has no character the model knows; use text like its training text")
        if len(ids) + length > self.model.block_size:
            raise MimicryError(f"prompt {prompt!r} ({len(ids)} tokens) + length={length} is more than the model's "
                               f"context ({self.model.block_size}); lower length= or shorten the prompt")
        was_training = self.training
        self.eval()
        out = self.model.generate(ids.to(self.device).unsqueeze(0).repeat(n, 1), length, generator=generator, **sampling)
        self.train(was_training)
        return [self.tokenizer.decode(row[len(ids):]) for row in out.cpu()]

    def preference_pairs(self, out_dir: Path, seed: int, pairs: Any = None, judge: Any = None, **options: Any) -> list[Path]:
        """Two continuations of a prompt per pair, labelled by a reward with Bradley–Terry noise
        (``judge.temperature``), written as JSON lines: a preference set made offline."""
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise MimicryError(f"pairs={pairs!r}: give the number of preference pairs, e.g. pairs=512 judge=sentence_length")
        if judge is None:
            raise MimicryError("pairs=N needs judge=REWARD: the reward that labels them (e.g. judge=sentence_length "
                               "judge.temperature=0.1; `mimicry list` shows the rewards)")
        judge_options = {k[len("judge."):]: v for k, v in options.items() if k.startswith("judge.")}
        temperature = judge_options.pop("temperature", 0.1)
        reward = build_judge(judge, judge_options)
        prompts = options.get("prompts", [options.get("prompt", self.hparams.prompt)])
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise MimicryError(f"prompts={prompts!r}: give a list of non-empty prompts, e.g. prompts='[\"ROMEO:\\n\"]'")
        if "prompts" in options:  # escapes read as prompt= reads them
            prompts = [p.encode().decode("unicode_escape") for p in prompts]
        length = int(options.get("length") or 48)
        # the model's own distribution (temperature 1) unless told: DPO measures its ratios against it
        sampling = self._sampling_options(**{"temperature": 1.0, **options})
        generator = torch.Generator(device=self.device).manual_seed(seed)
        rng = np.random.default_rng(seed)
        rows = []
        for prompt, count in Counter(prompts[k % len(prompts)] for k in range(pairs)).items():
            texts = self.continuations(prompt, 2 * count, length, generator, **sampling)
            scores = np.asarray(score_with_prompts(reward, texts, [prompt] * len(texts)), np.float64)
            first, second = texts[0::2], texts[1::2]
            prefers_first = bradley_terry_prefers_first(scores[0::2], scores[1::2], temperature, rng)
            for a, b, ra, rb, keep in zip(first, second, scores[0::2], scores[1::2], prefers_first):
                chosen, rejected, rc, rr = (a, b, ra, rb) if keep else (b, a, rb, ra)
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                             "chosen_reward": float(rc), "rejected_reward": float(rr)})
        path = write_preferences(out_dir / f"preferences_seed{seed}.jsonl", rows)
        report = out_dir / f"preferences_seed{seed}.txt"
        report.write_text(pairs_report(rows, judge, temperature, path), encoding="utf-8")
        return [report, path]


def pairs_report(rows: list[dict[str, Any]], judge: str, temperature: float, path: Path) -> str:
    """What the judge did: how often the higher reward won, the rewards, the first pair."""
    chosen = np.array([r["chosen_reward"] for r in rows])
    rejected = np.array([r["rejected_reward"] for r in rows])
    differ = chosen != rejected
    agree = float((chosen[differ] > rejected[differ]).mean()) if differ.any() else float("nan")
    first = rows[0]
    return (f"{len(rows)} preference pairs judged by {judge} (Bradley–Terry temperature {temperature}) in {path}\n"
            f"reward of the chosen {chosen.mean():.3f}, of the rejected {rejected.mean():.3f}; where the rewards "
            f"differ ({int(differ.sum())} pairs) the higher one was chosen in {agree:.1%}\n"
            f"first pair, prompt {first['prompt']!r}:\n  chosen   ({first['chosen_reward']:.2f}) {first['chosen']!r}\n"
            f"  rejected ({first['rejected_reward']:.2f}) {first['rejected']!r}\n")
