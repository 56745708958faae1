"""Text tokenizers. Each one turns text into integer ids and back, and can be saved as plain
values (``state()``) so that it travels inside a checkpoint and sampling needs no training data.
``byte_lengths()`` says how many UTF-8 bytes each id stands for: bits per byte compares them all."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from mimicry.data.bpe import BPETokenizer, bpe_from_state, cached_bpe
from mimicry.errors import MimicryError

log = logging.getLogger(__name__)


class CharTokenizer:
    """One id per distinct character of the training text (nanoGPT's shakespeare_char)."""

    kind = "char"

    def __init__(self, vocab: str):
        self.vocab = vocab
        self.index = {ch: i for i, ch in enumerate(vocab)}

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        unknown = set(text) - self.index.keys()
        if unknown:
            # Fine-tuning on new text with a pretrained vocabulary: drop what the model never saw.
            shown = "".join(sorted(unknown))[:40]
            log.warning("dropping %d character kinds not in the vocabulary: %r (use data.tokenizer=byte to keep every character)",
                        len(unknown), shown)
            text = "".join(ch for ch in text if ch in self.index)
        return torch.tensor([self.index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.vocab[i] for i in _as_list(ids))

    def byte_lengths(self) -> torch.Tensor:
        return torch.tensor([len(ch.encode("utf-8")) for ch in self.vocab], dtype=torch.long)

    def state(self) -> dict:
        return {"kind": self.kind, "vocab": self.vocab}


class ByteTokenizer:
    """The 256 byte values of UTF-8: no unknown characters, ever."""

    kind = "byte"
    vocab_size = 256

    @classmethod
    def fit(cls, text: str) -> "ByteTokenizer":
        return cls()

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return bytes(_as_list(ids)).decode("utf-8", errors="replace")

    def byte_lengths(self) -> torch.Tensor:
        return torch.ones(self.vocab_size, dtype=torch.long)

    def state(self) -> dict:
        return {"kind": self.kind}


TOKENIZERS = {"char": CharTokenizer, "byte": ByteTokenizer, "bpe": BPETokenizer}
TextTokenizer = CharTokenizer | ByteTokenizer | BPETokenizer


def build_tokenizer(kind: str, text: str, vocab_size: int | None = None,
                    cache: Path | None = None) -> TextTokenizer:
    """The tokenizer ``kind`` fitted to ``text``; bpe trains ``vocab_size`` tokens (read from ``cache`` when there)."""
    if kind not in TOKENIZERS:
        raise MimicryError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(TOKENIZERS)} (data.tokenizer=...)")
    if kind == "bpe":
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 256:
            raise MimicryError(f"data.vocab_size={vocab_size!r}: a byte-level BPE vocabulary starts from the 256 "
                               f"byte values, so give more, e.g. data.vocab_size=1024")
        return cached_bpe(text, vocab_size, cache) if cache is not None else BPETokenizer.train(text, vocab_size)
    return TOKENIZERS[kind].fit(text)


def tokenizer_from_state(state: dict) -> TextTokenizer:
    """A tokenizer from its saved ``state()``, read from a checkpoint: checked as data."""
    kind = state.get("kind") if isinstance(state, Mapping) else None  # a dict, or a DictConfig via instantiate
    if kind == "char" and isinstance(state.get("vocab"), str) and state["vocab"]:
        return CharTokenizer(state["vocab"])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return bpe_from_state(state)
    raise MimicryError(f"the checkpoint's tokenizer is damaged or unknown ({str(state)[:60]!r}); "
                       f"expected kind char (with its vocab), byte, or bpe (with its json)")


def _as_list(ids: torch.Tensor | list[int]) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
