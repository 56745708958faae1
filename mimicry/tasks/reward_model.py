"""A reward model: imitate which of two continuations a judge preferred.

The GPT trunk of a trained ``lm`` run (``init_from=LM_RUN``) reads prompt + continuation; a scalar
head on its last hidden state, at the text's last token, gives the text a score. The reference is
which of the two texts was preferred, the prediction the difference of their scores, the loss the
Bradley–Terry cross-entropy −log σ(±(s₁ − s₂)) (InstructGPT's reward model). Held-out pairs give
``val/preference_accuracy``. ``reward=model reward.from_run=RUN`` then scores texts with it
(mimicry/rewards/learned.py) in every RL-on-text route.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mimicry.checkpoints import find_checkpoint
from mimicry.data.preferences import as_texts, check_fits
from mimicry.data.tokenizers import tokenizer_from_state
from mimicry.errors import MimicryError
from mimicry.models.gpt import GPT
from mimicry.models.hf_gpt2 import is_hf
from mimicry.models.lm_run import lm_weights, read_lm_run
from mimicry.tasks.base import ImitationTask
from mimicry.tasks.preference_fit import PreferenceFit


class RewardModel(PreferenceFit, ImitationTask):
    throughput_unit = "samples"
    sample_options = ("prompt", "texts")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 0,
                 init_from: str | None = None, lm: dict | None = None):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)
        if data_spec.get("kind") != "preferences":
            raise MimicryError("task=reward_model imitates preferences: give data=preferences data.path=FILE "
                               "(make one with mimicry sample LM_RUN pairs=512 judge=sentence_length out=DIR)")
        if lm is None:  # a new run: read the lm run; a checkpoint carries it (derived_arguments)
            lm = read_lm_run(init_from, "task=reward_model")
        self.lm = lm
        self.tokenizer = tokenizer_from_state(lm["tokenizer"])
        self.gpt = GPT(vocab_size=lm["vocab_size"], **lm["model"])
        check_fits(data_spec, self.gpt.block_size)
        self.score_head = nn.Linear(self.gpt.lm_head.in_features, 1)
        nn.init.zeros_(self.score_head.weight)  # every text scores 0 at the start: P(first preferred) = 1/2
        nn.init.zeros_(self.score_head.bias)

    def derived_arguments(self) -> dict[str, Any]:
        return {**super().derived_arguments(), "lm": self.lm}  # scoring needs no lm run on disk

    def init_weights_from(self, path: str | Path) -> Path | str:
        """``init_from``: the lm run's GPT becomes the trunk (its lm head is not used)."""
        self.gpt.load_state_dict(lm_weights(path))
        return str(path) if is_hf(str(path)) else find_checkpoint(path)

    def scores(self, tokens: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """One score per text (N,): the head on the hidden state of each text's last real token."""
        hidden = self.gpt.trunk(self.gpt.embed(tokens))
        last = hidden[torch.arange(len(tokens), device=tokens.device), length - 1]
        return self.score_head(last).squeeze(-1).float()

    def imitation(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reference = batch["preferred"]                       # 1 where the first text was preferred
        tokens, length, _ = as_texts(batch)
        first, second = self.scores(tokens, length).view(-1, 2).unbind(1)
        prediction = first - second                          # Bradley–Terry: P(first preferred) = σ(prediction)
        return prediction, reference

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["preferred"])  # pairs

    # ---- scoring texts: reward=model and mimicry sample -----------------------------------------
    @torch.no_grad()
    def score_texts(self, texts: list[str], prompts: list[str] | None = None) -> list[float]:
        """The score of each prompt + text (the last block_size tokens, where it is longer)."""
        prompts = prompts if prompts is not None else [""] * len(texts)
        was_training = self.training
        self.eval()
        values = []
        for prompt, text in zip(prompts, texts):
            ids = self.tokenizer.encode(prompt + text)[-self.gpt.block_size:]
            if len(ids) == 0:
                ids = torch.zeros(1, dtype=torch.long)  # nothing the model knows: score the first token alone
            ids = ids.to(self.device).unsqueeze(0)
            values.append(float(self.scores(ids, torch.tensor([ids.size(1)], device=self.device))[0]))
        self.train(was_training)
        return values

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """``mimicry sample RM_RUN texts='[a, b]' prompt=P``: the score of each prompt + text."""
        texts = options.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise MimicryError("a reward model scores texts: mimicry sample RM_RUN texts='[\"one text\", \"another\"]' "
                               "[prompt=...]; or use it as reward=model reward.from_run=RM_RUN")
        prompt = str(options.get("prompt", ""))
        scores = self.score_texts(texts, [prompt] * len(texts))
        path = out_dir / "scores.txt"
        path.write_text("".join(f"{score:+.4f}  {prompt + text!r}\n" for score, text in zip(scores, texts)),
                        encoding="utf-8")
        return [path]
