"""Training throughput that counts training only: ``train/<unit>_per_sec``.

The clock runs from the start of each training batch to its end (forward, backward, optimizer
steps), so validation, drawing samples and writing checkpoints never count as training time.
Listed before the sample logger in conf/callbacks, whose drawing then happens after the clock stops.
The task says what an item is (``throughput_unit``: samples or tokens; ``count_items(batch)``).
On a GPU also ``train/peak_memory_gb``.
"""
from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch

from mimicry.lightning_internals import is_logging_step


class TrainingThroughput(pl.Callback):
    def __init__(self) -> None:
        self._started = 0.0
        self._seconds = 0.0
        self._items = 0

    def on_train_batch_start(self, trainer: pl.Trainer, task: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, task: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if task.device.type == "cuda":
            torch.cuda.synchronize()  # kernels are asynchronous: wait for this batch's work to finish
        self._seconds += time.perf_counter() - self._started
        self._items += task.count_items(batch) if hasattr(task, "count_items") else len(batch)
        if is_logging_step(trainer) and self._seconds > 0:
            unit = getattr(task, "throughput_unit", "samples")
            task.log(f"train/{unit}_per_sec", self._items / self._seconds, on_step=True, on_epoch=False)
            if task.device.type == "cuda":  # the most GPU memory the run has held so far
                task.log("train/peak_memory_gb", torch.cuda.max_memory_allocated(task.device) / 2**30,
                         on_step=True, on_epoch=False)
            self._seconds, self._items = 0.0, 0
