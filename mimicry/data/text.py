"""Text for next-token imitation: any UTF-8 text becomes one long id sequence, split 90/10
into train and validation, served as windows of ``block_size + 1`` tokens (input + the next token)."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mimicry.data.bpe import cache_path
from mimicry.data.tokenizers import build_tokenizer, tokenizer_from_state
from mimicry.errors import MimicryError


def pydoc_text() -> str:
    """The documentation text bundled with CPython (pydoc_data): ~465k characters, no download."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def text_file_path(path: str | Path, root: str | None = None) -> Path:
    """Where a text file is: a relative ``path`` is looked up under ``root`` when one is given."""
    path = Path(path).expanduser()
    if root is not None and not path.is_absolute():
        path = Path(root).expanduser() / path
    return path


def read_text_file(path: str | Path, root: str | None = None) -> str:
    """Read a UTF-8 file; a relative ``path`` is looked up under ``root`` when one is given."""
    path = text_file_path(path, root)
    if not path.is_file():
        where = (f" (looked under data.root={root}: put the file there, or point data.root or MIMICRY_DATA "
                 f"at a folder that holds it)") if root is not None else " (check data.path)"
        raise MimicryError(f"text file not found: {path.resolve()}{where}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise MimicryError(f"text file is empty: {path.resolve()}; give a file with some text in it")
    return text


class Windows(Dataset):
    """Item ``i`` is the window of ``block_size + 1`` tokens starting at offset ``i``."""

    def __init__(self, tokens: torch.Tensor, block_size: int):
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, offset: int) -> torch.Tensor:
        return self.tokens[offset : offset + self.block_size + 1]


class WindowOrder(DistributedSampler):
    """The window offsets of one training epoch, and this process's share of them.

    ``random``: ``world_size × samples`` offsets drawn from (seed, epoch) alone, so that a run resumed
    at an epoch boundary sees exactly the windows an uninterrupted run would; ``in_order``: every
    ``stride``-th offset, each training token a target once. Process ``rank`` takes every
    ``world_size``-th offset, so batch k of all ranks together is batch k of one process with a
    ``world_size`` times larger batch: the same global batch trains the same weights on any number of
    devices. (A DistributedSampler is one Lightning uses as it is, instead of shuffling it again.)
    """

    def __init__(self, num_offsets: int, samples: int | None, seed: int, stride: int = 1,
                 rank: int = 0, world_size: int = 1):
        super().__init__(range(num_offsets), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.num_offsets, self.samples, self.stride = num_offsets, samples, stride

    def __iter__(self):
        if self.samples is None:  # in order; every rank gets as many offsets (DDP ranks step together)
            offsets = list(range(0, self.num_offsets, self.stride))
            offsets = offsets[: len(offsets) - len(offsets) % self.num_replicas]
        else:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            offsets = torch.randint(self.num_offsets, (self.samples * self.num_replicas,), generator=generator).tolist()
        yield from offsets[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        if self.samples is None:
            return len(range(0, self.num_offsets, self.stride)) // self.num_replicas
        return self.samples


class TextDataModule(pl.LightningDataModule):
    """``path=None`` reads CPython's bundled pydoc text; otherwise any UTF-8 file (under ``root`` if relative).

    An "epoch" is ``steps_per_epoch`` random batches (nanoGPT samples windows at random too), or
    with ``order="sequential"`` one pass over the training text in consecutive windows (every
    training token is a target once); ``order="auto"`` is sequential for a model fitted by
    counting (an n-gram table reads the text once) and random for a net. Validation uses
    ``val_batches`` fixed, evenly spaced batches of the held-out tail (and ``train_eval_batches``
    of the training text, logged as ``val/train_loss``). ``train_fraction`` keeps
    the first share of the training split (the validation split stays the same).
    ``tokenizer="bpe"`` trains ``vocab_size`` byte-level BPE tokens on the whole text, cached
    beside the data file (or in ``cache_dir``).
    """

    def __init__(
        self,
        name: str,
        path: str | None = None,
        root: str | None = None,
        block_size: int = 64,
        batch_size: int = 32,
        tokenizer: str = "char",
        val_fraction: float = 0.1,
        steps_per_epoch: int = 100,
        val_batches: int = 10,
        seed: int = 0,
        num_workers: int = 0,
        tokenizer_state: dict | None = None,
        train_fraction: float = 1.0,
        order: str = "auto",
        train_eval_batches: int = 0,
        vocab_size: int = 1024,
        cache_dir: str | None = None,
    ):
        super().__init__()
        self.name, self.path, self.block_size, self.batch_size = name, path, block_size, batch_size
        self.tokenizer_kind, self.val_fraction = tokenizer, val_fraction
        self.steps_per_epoch, self.val_batches, self.seed = steps_per_epoch, val_batches, seed
        self.root, self.num_workers = root, num_workers
        if order not in ("auto", "random", "sequential"):
            raise MimicryError(f"data.order={order}: choose random (random windows), sequential (one pass in order) "
                               f"or auto (sequential for a counted table, random for a net)")
        if not 0.0 < train_fraction <= 1.0:
            raise MimicryError(f"data.train_fraction={train_fraction}: must be in (0, 1], e.g. data.train_fraction=0.1")
        self.train_fraction, self.order, self.train_eval_batches = train_fraction, order, train_eval_batches
        self.vocab_size, self.cache_dir = vocab_size, cache_dir
        # A pretrained model's tokenizer (fine-tuning) wins over fitting a new one.
        self.tokenizer = tokenizer_from_state(tokenizer_state) if tokenizer_state else None
        self.train_tokens: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_tokens is not None:
            return
        text = pydoc_text() if self.path is None else read_text_file(self.path, self.root)
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer(self.tokenizer_kind, text, self.vocab_size, self.bpe_cache(text))
        tokens = self.tokenizer.encode(text)
        n_val = int(len(tokens) * self.val_fraction)
        self.train_tokens, self.val_tokens = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
        self.train_tokens = self.train_tokens[: round(len(self.train_tokens) * self.train_fraction)]
        shortest = min(len(self.train_tokens), len(self.val_tokens))
        if shortest <= self.block_size:
            raise MimicryError(
                f"{self.name}: {len(tokens)} tokens is too little text for windows of {self.block_size + 1} tokens "
                f"in both train and validation ({self.val_fraction:.0%} held out, train_fraction="
                f"{self.train_fraction:g}); use a longer file, a larger data.train_fraction or a smaller model.block_size"
            )

    def bpe_cache(self, text: str) -> Path | None:
        if self.tokenizer_kind != "bpe":
            return None
        data_file = None if self.path is None else text_file_path(self.path, self.root).resolve()
        return cache_path(text, self.vocab_size, data_file.name if data_file else self.name, data_file, self.cache_dir)

    def spec(self) -> dict:
        """What a model needs to know about this data, as plain values (saved in checkpoints)."""
        self.setup()
        return {"kind": "text", "dataset": self.name, "vocab_size": self.tokenizer.vocab_size,
                "tokenizer": self.tokenizer.state()}

    def train_dataloader(self) -> DataLoader:
        """``data.batch_size`` windows per process and step; under DDP each rank takes its share of
        one epoch's windows (WindowOrder), so the global batch is ``devices × data.batch_size``."""
        windows = Windows(self.train_tokens, self.block_size)
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        if self.reads_in_order():  # windows every block_size tokens: each training token is a target once
            order = WindowOrder(len(windows), None, self.seed, self.block_size, rank, world_size)
            return DataLoader(windows, batch_size=self.batch_size, sampler=order, num_workers=self.num_workers)
        order = WindowOrder(len(windows), self.steps_per_epoch * self.batch_size, self.seed, 1, rank, world_size)
        return DataLoader(windows, batch_size=self.batch_size, sampler=order, num_workers=self.num_workers,
                          drop_last=True)

    def reads_in_order(self) -> bool:
        if self.order == "auto":  # a table fitted by counting reads the text once, in order; a net, random windows
            task = self.trainer.lightning_module if self.trainer is not None else None
            return bool(getattr(task, "fitted_by_counting", False))
        return self.order == "sequential"

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Fixed, evenly spaced windows of the held-out text; with ``train_eval_batches`` also of the
        training text (a second loader: the loss on seen text, measured the same way)."""
        held_out = self.evenly_spaced(self.val_tokens, self.val_batches)
        return [held_out, self.evenly_spaced(self.train_tokens, self.train_eval_batches)] if self.train_eval_batches \
            else held_out

    def evenly_spaced(self, tokens: torch.Tensor, batches: int) -> DataLoader:
        windows = Windows(tokens, self.block_size)
        count = min(len(windows), batches * self.batch_size)
        offsets = torch.linspace(0, len(windows) - 1, count).long().tolist()
        return DataLoader(torch.utils.data.Subset(windows, offsets), batch_size=self.batch_size,
                          num_workers=self.num_workers)
