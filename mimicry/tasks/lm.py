"""Language modelling: imitate the next token of real text."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import MeanMetric, SumMetric

from mimicry.data.tokenizers import tokenizer_from_state
from mimicry.errors import MimicryError
from mimicry.models.gpt import GPT
from mimicry.models.hf_gpt2 import read_pretrained
from mimicry.tasks.base import ImitationTask
from mimicry.tasks.counted_fit import CountedFit


class LanguageModeling(CountedFit, ImitationTask):
    throughput_unit = "tokens"
    sample_options = ("prompt", "length", "temperature", "top_k", "top_p")

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
        h = self.hparams
        prompt = options.get("prompt", h.prompt)
        length = int(options.get("length", h.sample_tokens))
        texts = self.complete(str(prompt), length, seed, n=n, **self._sampling_options(**options))
        path = out_dir / f"samples_seed{seed}.txt"
        path.write_text("\n\n=====\n\n".join(texts), encoding="utf-8")
        return [path]
