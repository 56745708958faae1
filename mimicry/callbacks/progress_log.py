"""Progress lines for logs that are not a terminal (a scheduler, ``nohup``, ``| tee``).

A progress bar draws nothing into a file, so a long run piped to a file looked dead until it
ended. When stdout is not a terminal, this writes one line every ``every_n_seconds`` to the run's
log: step, epoch, loss, throughput, time spent and time left; and one line after each validation
with its metrics.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import pytorch_lightning as pl

from mimicry.callbacks.run_summary import scalar_metrics

log = logging.getLogger("mimicry")


def duration(seconds: float) -> str:
    """12s, 4m05s, 2h03m."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLog(pl.Callback):
    def __init__(self, every_n_seconds: float = 30.0, when: str = "not_a_terminal") -> None:
        if when not in ("not_a_terminal", "always", "never"):
            raise ValueError(f"ProgressLog when={when!r}: choose not_a_terminal, always or never")
        self.every_n_seconds = every_n_seconds
        self.when = when
        self._start = self._last = 0.0
        self._first_step = 0

    def active(self) -> bool:
        return self.when == "always" or (self.when == "not_a_terminal" and not sys.stdout.isatty())

    def on_train_start(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        self._start = self._last = time.perf_counter()
        self._first_step = trainer.global_step  # a resumed run starts part-way

    def on_train_batch_end(self, trainer: pl.Trainer, task: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        if not self.active() or not trainer.is_global_zero or now - self._last < self.every_n_seconds:
            return
        self._last = now
        log.info(self.line(trainer, now))

    def on_validation_end(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        if not self.active() or not trainer.is_global_zero or trainer.sanity_checking:
            return
        measured = {name: value for name, value in scalar_metrics(trainer).items()  # val/*, eval/*, ...
                    if not name.startswith(("train/", "rollout/", "lr-", "gan/"))}
        metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted(measured.items()))
        log.info(f"validation at step {trainer.global_step} (epoch {trainer.current_epoch + 1}): {metrics or 'no metrics'}")

    def line(self, trainer: pl.Trainer, now: float) -> str:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        elapsed = now - self._start
        known = math.isfinite(total) and total > 0  # Lightning gives max_steps (-1: none) for an iterable dataset
        parts = [f"step {step}" + (f"/{int(total)} ({100 * step / total:.0f}%)" if known else "")]
        if trainer.max_epochs and trainer.max_epochs > 0:
            parts.append(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
        for name, value in scalar_metrics(trainer, "train/").items():
            if name == "train/loss" or name.endswith("_per_sec"):
                parts.append(f"{name} {value:.4g}")
        done = step - self._first_step
        left = (elapsed / done) * (total - step) if done > 0 and known else None
        parts.append(f"{duration(elapsed)} elapsed" + (f", ~{duration(left)} left" if left is not None else ""))
        return " | ".join(parts)
