"""Preference pairs: a prompt, the continuation a judge chose and the one it rejected.

On disk a preference set is plain JSON Lines, one object per line::

    {"prompt": "ROMEO:\\n", "chosen": "...", "rejected": "...", "chosen_reward": 0.8, "rejected_reward": 0.1}

Only ``prompt``, ``chosen`` and ``rejected`` (strings) are read; other keys (the judge's hidden
scores) are kept for analysis. Reading is ``json.loads`` per line: nothing in the file runs or is
imported. A malformed line stops the run with one message naming the file, the line and the fix.

For training, each pair becomes two texts (prompt + continuation) in a seeded random order, so that
the reference, "the first one was preferred", is 1 for about half the pairs (a model cannot learn
"always the first"). A batch holds each pair's two texts, right-padded: ``tokens`` (B, 2, T),
``length`` and ``context`` (prompt tokens) (B, 2), and ``preferred`` (B,).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mimicry.data.text import text_file_path
from mimicry.data.tokenizers import CharTokenizer, TextTokenizer, tokenizer_from_state
from mimicry.errors import MimicryError

log = logging.getLogger("mimicry")

FIELDS = ("prompt", "chosen", "rejected")
ROW_EXAMPLE = '{"prompt": "...", "chosen": "...", "rejected": "..."}'
MAX_FILE_BYTES = 1 << 30  # a preference set is text: a file beyond this is not one


def write_preferences(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One JSON object per line (UTF-8, non-ASCII kept readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_preferences(path: str | Path) -> list[dict[str, str]]:
    """The (prompt, chosen, rejected) rows of a JSONL file; one line naming the first bad row."""
    path = Path(path)
    if not path.is_file():
        raise MimicryError(f"preference file not found: {path.resolve()} (check data.path; make one with "
                           f"mimicry sample LM_RUN pairs=N judge=REWARD out=DIR)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise MimicryError(f"{path}: {path.stat().st_size:,} bytes is not a preference file (at most 1 GiB of JSON lines)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise MimicryError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); a preference file is "
                           f"JSON lines, one {ROW_EXAMPLE} per line") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deep"
            raise MimicryError(f"{where}: not JSON ({reason}); each line must be {ROW_EXAMPLE}") from None
        if not isinstance(row, dict):
            raise MimicryError(f"{where}: a JSON {type(row).__name__}, not an object; each line must be {ROW_EXAMPLE}")
        missing = [key for key in FIELDS if key not in row]
        if missing:
            raise MimicryError(f"{where}: no {', '.join(repr(k) for k in missing)}; each line must be {ROW_EXAMPLE}")
        wrong = [key for key in FIELDS if not isinstance(row[key], str)]
        if wrong:
            raise MimicryError(f"{where}: {wrong[0]!r} is a {type(row[wrong[0]]).__name__}, not text; "
                               f"each line must be {ROW_EXAMPLE}")
        empty = [key for key in FIELDS if not row[key]]
        if empty:
            raise MimicryError(f"{where}: {empty[0]!r} is empty; a pair continues a non-empty prompt in two "
                               f"non-empty ways")
        rows.append({key: row[key] for key in FIELDS})
    if not rows:
        raise MimicryError(f"{path}: no preference pairs in it; each line must be {ROW_EXAMPLE}")
    return rows


def encode_rows(rows: list[dict[str, str]], tokenizer: TextTokenizer, source: str) -> list[dict[str, torch.Tensor]]:
    """Token ids of each row's prompt and continuations. Characters a char model never saw are dropped
    (said once), as when fine-tuning on new text; a text left with no tokens is refused."""
    if isinstance(tokenizer, CharTokenizer):
        unknown = {ch for row in rows for key in FIELDS for ch in row[key]} - tokenizer.index.keys()
        if unknown:
            log.warning("%s: dropping %d character kinds the model does not know: %r", source, len(unknown),
                        "".join(sorted(unknown))[:40])
            rows = [{key: "".join(ch for ch in row[key] if ch in tokenizer.index) for key in FIELDS} for row in rows]
    encoded = []
    for number, row in enumerate(rows, 1):
        ids = {key: tokenizer.encode(row[key]) for key in FIELDS}
        empty = [key for key in FIELDS if len(ids[key]) == 0]
        if empty:
            raise MimicryError(f"{source} pair {number}: {empty[0]!r} has no character the model knows; "
                               f"the pairs must be written in the model's own alphabet")
        encoded.append(ids)
    return encoded


def check_fits(spec: dict[str, Any], block_size: int) -> None:
    """Every text (prompt + continuation) must fit the model's context."""
    if spec.get("kind") == "preferences" and int(spec["longest"]) > block_size:
        raise MimicryError(f"data={spec['dataset']}: its longest text (prompt + continuation) is {spec['longest']} "
                           f"tokens, the model's context is {block_size}; write shorter pairs (mimicry sample ... "
                           f"length=) or start from a model with a larger model.block_size")


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pairs → ``tokens`` (B, 2, T): each pair's first and second text, right-padded with token 0 (a
    causal model's positions before the padding never see it); ``length`` and ``context`` (B, 2)."""
    texts = [torch.cat([item["prompt"], item[side]]) for item in items for side in ("first", "second")]
    tokens = torch.zeros(len(texts), max(len(t) for t in texts), dtype=torch.long)
    for row, text in enumerate(texts):
        tokens[row, :len(text)] = text
    pairs = len(items)
    return {"tokens": tokens.view(pairs, 2, -1), "length": torch.tensor([len(t) for t in texts]).view(pairs, 2),
            "context": torch.tensor([len(item["prompt"]) for item in items]).unsqueeze(1).repeat(1, 2),
            "preferred": torch.stack([item["preferred"] for item in items])}


def as_texts(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's 2B texts one per row (pair i's first at row 2i, its second at 2i + 1): tokens
    (2B, T), length and context (2B,)."""
    return batch["tokens"].flatten(0, 1), batch["length"].flatten(), batch["context"].flatten()


def response_mask(length: torch.Tensor, context: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width - 1): True where position t predicts a continuation token (t + 1 in context..length-1)."""
    target = torch.arange(1, width, device=length.device)
    return (target >= context.unsqueeze(1)) & (target < length.unsqueeze(1))


class PreferenceDataModule(pl.LightningDataModule):
    """``data=preferences data.path=FILE``: pairs tokenized with the model's own tokenizer (the
    runner passes the ``init_from`` model's as ``tokenizer_state``), a seeded ``val_fraction`` held out
    for ``val/preference_accuracy``. One epoch is one pass over the training pairs, shuffled by seed."""

    def __init__(self, name: str = "preferences", path: str | None = None, root: str | None = None,
                 tokenizer: str = "char", vocab_size: int = 1024, batch_size: int = 16, val_fraction: float = 0.1,
                 seed: int = 0, num_workers: int = 0, tokenizer_state: dict | None = None):
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise MimicryError(f"data.val_fraction={val_fraction}: must be in (0, 1), e.g. 0.1 (held-out pairs "
                               f"give val/preference_accuracy)")
        self.name, self.path, self.root, self.batch_size = name, path, root, batch_size
        self.tokenizer_kind, self.vocab_size, self.val_fraction = tokenizer, vocab_size, val_fraction
        self.seed, self.num_workers, self.tokenizer_state = seed, num_workers, tokenizer_state
        self.train_items: list[dict[str, torch.Tensor]] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        if not self.tokenizer_state:
            raise MimicryError("data=preferences is read with the tokenizer of the model it fine-tunes: give "
                               "init_from=LM_RUN_DIR (a run of task=lm) or init_from=hf:DIR")
        file = text_file_path(self.path, self.root)
        self.tokenizer = tokenizer_from_state(self.tokenizer_state)
        rows = encode_rows(read_preferences(file), self.tokenizer, str(file))
        if len(rows) < 2:
            raise MimicryError(f"{file}: one pair cannot be split into training and held-out pairs; give at least 2")
        generator = torch.Generator().manual_seed(self.seed)
        first_is_chosen = torch.rand(len(rows), generator=generator) < 0.5
        items = [{"prompt": r["prompt"], "first": r["chosen"] if keep else r["rejected"],
                  "second": r["rejected"] if keep else r["chosen"], "preferred": torch.tensor(float(keep))}
                 for r, keep in zip(rows, first_is_chosen.tolist())]
        order = torch.randperm(len(items), generator=generator).tolist()
        n_val = min(len(items) - 1, max(1, math.floor(len(items) * self.val_fraction)))
        self.val_items = [items[i] for i in order[:n_val]]
        self.train_items = [items[i] for i in order[n_val:]]
        self.longest = max(len(r["prompt"]) + max(len(r["chosen"]), len(r["rejected"])) for r in rows)
        self.file = file

    def spec(self) -> dict:
        """Plain values, saved in checkpoints: the tokenizer, how many pairs, the longest text."""
        self.setup()
        return {"kind": "preferences", "dataset": self.name, "vocab_size": self.tokenizer.vocab_size,
                "tokenizer": self.tokenizer.state(), "train_pairs": len(self.train_items),
                "val_pairs": len(self.val_items), "longest": self.longest}

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed + (self.trainer.current_epoch if self.trainer else 0))
        return DataLoader(self.train_items, batch_size=self.batch_size, shuffle=True, generator=generator,
                          collate_fn=collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_items, batch_size=self.batch_size, collate_fn=collate, num_workers=self.num_workers)
