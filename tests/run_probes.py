"""Callbacks the tests add to a real `mimicry train` run (`+callbacks.NAME._target_=run_probes.X`,
with tests/ on PYTHONPATH) to see what happened inside it, batch by batch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class LossRecorder(pl.Callback):
    """Writes {batch index: training loss of that batch} to `path` when training ends."""

    def __init__(self, path: str):
        self.path, self.losses = Path(path), {}

    def on_train_batch_end(self, trainer: pl.Trainer, task: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses[trainer.fit_loop.epoch_loop._batches_that_stepped] = float(loss)

    def on_train_end(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        self.path.write_text(json.dumps(self.losses))


class SummarySnoop(pl.Callback):
    """Copies summary.json as it stands at the start of each epoch after the first (mid-run)."""

    def __init__(self, path: str):
        self.path, self.seen = Path(path), []

    def on_train_epoch_start(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        summary = Path(trainer.default_root_dir) / "summary.json"
        if trainer.current_epoch > 0 and summary.is_file():
            self.seen.append(json.loads(summary.read_text()))
            self.path.write_text(json.dumps(self.seen))


class FailOnce(pl.Callback):
    """When `fail` is true, raises a RuntimeError (a bug, not bad input) at the first training
    batch, once: it leaves `marker` behind, and a later run with the same marker trains normally."""

    def __init__(self, fail: bool, marker: str):
        self.fail, self.marker = fail, Path(marker)

    def on_train_batch_start(self, trainer: pl.Trainer, task: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.fail and not self.marker.exists():
            self.marker.write_text("failed once")
            raise RuntimeError("a bug in this job")
