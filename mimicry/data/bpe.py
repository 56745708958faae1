"""Byte-level BPE tokens (GPT-2's kind) with Hugging Face's ``tokenizers``: trained on the corpus,
cached beside it, and saved with a run as the tokenizer's JSON (data the Rust library parses; no code).

Every UTF-8 text encodes (the 256 byte values are the base alphabet), and each token stands for a
known number of bytes, which is what bits per byte counts.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mimicry.errors import MimicryError

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # part of the cache file's name: a new training recipe never reads an old file


class BPETokenizer:
    """A ``tokenizers.Tokenizer``; ``vocab_size`` may exceed its own (a pretrained model's padded rows)."""

    kind = "bpe"

    def __init__(self, tokenizer: Tokenizer, vocab_size: int | None = None):
        self.tokenizer = tokenizer
        own = tokenizer.get_vocab_size(with_added_tokens=True)
        self.vocab_size = own if vocab_size is None else vocab_size
        if self.vocab_size < own:
            raise MimicryError(f"a BPE tokenizer of {own} tokens cannot serve a model of {self.vocab_size} "
                               f"token rows; the tokenizer and the weights do not belong together")

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[], show_progress=False)
        lines = text.splitlines(keepends=True)  # newlines kept: merges like "\n\n" are learned too
        tokenizer.train_from_iterator(("".join(lines[i:i + 1000]) for i in range(0, len(lines), 1000)), trainer,
                                      length=len(lines) // 1000 + 1)
        trained = cls(tokenizer)
        if trained.vocab_size < vocab_size:  # the text ran out of pairs worth merging
            log.warning(f"data.vocab_size={vocab_size}: this text gives only {trained.vocab_size} BPE tokens; "
                        f"the model uses {trained.vocab_size}")
        return trained

    @classmethod
    def from_json(cls, text: str, source: str, vocab_size: int | None = None) -> "BPETokenizer":
        """A tokenizer from its JSON (a checkpoint's, a cache file's, a tokenizer.json): parsed, never run."""
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception as error:  # the Rust parser's message names the line and column
            raise MimicryError(f"{source}: not a readable tokenizer ({' '.join(str(error).split())[:120]})") from None
        if tokenizer.get_vocab_size(with_added_tokens=True) == 0:
            raise MimicryError(f"{source}: the tokenizer has no tokens")
        return cls(tokenizer, vocab_size)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        own = self.tokenizer.get_vocab_size(with_added_tokens=True)
        return self.tokenizer.decode([i for i in ids if i < own], skip_special_tokens=False)  # padded rows: no text

    def byte_lengths(self) -> torch.Tensor:
        """UTF-8 bytes each id stands for (vocab_size,). In a byte-level vocabulary every character of a
        token's string is one byte; a token spelled otherwise (an added one) counts its own UTF-8."""
        alphabet = set(pre_tokenizers.ByteLevel.alphabet())
        lengths = torch.zeros(self.vocab_size, dtype=torch.long)
        for token, index in self.tokenizer.get_vocab(with_added_tokens=True).items():
            lengths[index] = len(token) if set(token) <= alphabet else len(token.encode("utf-8"))
        return lengths

    def state(self) -> dict:
        # "$" written as its JSON escape: the same tokenizer, and no "${" that OmegaConf would take
        # for an interpolation when the state passes through a config (or that a checkpoint's check refuses).
        return {"kind": self.kind, "json": self.tokenizer.to_str().replace("$", "\\u0024"),
                "vocab_size": self.vocab_size}


def bpe_from_state(state: dict) -> BPETokenizer:
    text, size = state.get("json"), state.get("vocab_size")
    if not isinstance(text, str) or not isinstance(size, int) or isinstance(size, bool):
        raise MimicryError("the checkpoint's BPE tokenizer is damaged (it needs its json text and a vocab_size)")
    return BPETokenizer.from_json(text, "the checkpoint's BPE tokenizer", size)


# ---- the cache beside the data ------------------------------------------------------------------------
def cache_path(text: str, vocab_size: int, name: str, data_file: Path | None, cache_dir: str | None) -> Path:
    """``<folder>/<name>.bpe-<N>-<hash of the text>.json``: beside the data file unless ``cache_dir`` is
    given (the bundled pydoc text has no file: the user's cache folder). The name is made file-safe."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "text"
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser()
    elif data_file is not None:
        folder = data_file.parent
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mimicry" / "tokenizers"
    return folder / f"{safe}.bpe-{vocab_size}-v{CACHE_VERSION}-{digest}.json"


def cached_bpe(text: str, vocab_size: int, path: Path) -> BPETokenizer:
    """The BPE tokenizer of ``text`` read from ``path``, else trained and written there. A damaged
    file is said in one line and rebuilt; a folder that cannot be written only costs the retraining."""
    if path.is_file():
        try:
            return BPETokenizer.from_json(path.read_text(encoding="utf-8"), str(path))
        except (MimicryError, OSError, UnicodeDecodeError) as error:
            log.warning(f"BPE cache {path} is damaged ({str(error)[:100]}); training it again")
    log.info(f"training a {vocab_size}-token byte-level BPE tokenizer on {len(text):,} characters")
    tokenizer = BPETokenizer.train(text, vocab_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(tokenizer.tokenizer.to_str(), encoding="utf-8")
        os.replace(partial, path)  # whole or not at all: sweep jobs may train the same one at once
    except OSError as error:
        log.warning(f"BPE tokenizer not cached at {path} ({error.strerror}); set data.cache_dir=DIR to keep it")
    return tokenizer
