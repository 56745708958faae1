"""Keep ``summary.json`` current while a run goes: steps, wall time and the latest metrics after
every validation, so ``mimicry compare`` shows runs that are still going (status ``running``)."""
from __future__ import annotations

import pytorch_lightning as pl

from mimicry.run_record import RunRecord


class SummaryRefresh(pl.Callback):
    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def on_validation_end(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}
        self.record.update("running", metrics=metrics, steps=trainer.global_step, epochs=trainer.current_epoch)
