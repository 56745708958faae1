"""Lightning's Rich progress bar, drawn only where someone watches it, and at most a few times a second.

Lightning's bar gathers every logged metric and redraws after each training batch: on a small
model on CPU that is about 2% of the step (scripts/bench_lm.py measures the framework's share).
Here it redraws at most every ``min_interval_s`` (and after an epoch's last batch), and is off when
stdout is not a terminal (a log file, a scheduler), where mimicry.callbacks.ProgressLog writes
progress lines instead.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def __init__(self, min_interval_s: float = 0.2, terminal_only: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._last_drawn = -float("inf")
        if terminal_only and not sys.stdout.isatty():
            self.disable()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.is_disabled:
            return  # (Lightning's bar would still gather the metrics for a bar nobody sees)
        now = time.monotonic()
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if now - self._last_drawn < self.min_interval_s and not last_of_epoch:
            return
        self._last_drawn = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
