"""Text tokenizers. Each one turns text into integer ids and back, and can be saved as plain
values (``state()``) so that it travels inside a checkpoint and sampling needs no training data."""
from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

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

    def state(self) -> dict:
        return {"kind": self.kind}


TOKENIZERS = {"char": CharTokenizer, "byte": ByteTokenizer}


def build_tokenizer(kind: str, text: str) -> CharTokenizer | ByteTokenizer:
    if kind not in TOKENIZERS:
        raise MimicryError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind].fit(text)


def tokenizer_from_state(state: dict) -> CharTokenizer | ByteTokenizer:
    """A tokenizer from its saved ``state()``, read from a checkpoint: checked as data."""
    kind = state.get("kind") if isinstance(state, Mapping) else None  # a dict, or a DictConfig via instantiate
    if kind == "char" and isinstance(state.get("vocab"), str) and state["vocab"]:
        return CharTokenizer(state["vocab"])
    if kind == "byte":
        return ByteTokenizer()
    raise MimicryError(f"the checkpoint's tokenizer is damaged or unknown ({str(state)[:60]!r}); "
                       f"expected kind char (with its vocab) or byte")


def _as_list(ids: torch.Tensor | list[int]) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
