"""Keep ``summary.json`` current while a run goes: steps, wall time and the latest metrics after
every validation, so ``mimicry compare`` shows runs that are still going (status ``running``)."""
from __future__ import annotations

import pytorch_lightning as pl

from mimicry.run_record import RunRecord


def scalar_metrics(trainer: pl.Trainer, prefix: str = "") -> dict[str, float]:
    """The trainer's latest one-number metrics (those starting with ``prefix``) as floats."""
    return {name: float(value) for name, value in trainer.callback_metrics.items()
            if name.startswith(prefix) and value.numel() == 1 and name != "step"}  # "step": an x-axis (rl), not a metric


class SummaryRefresh(pl.Callback):
    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def on_validation_end(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.record.update("running", metrics=scalar_metrics(trainer), steps=trainer.global_step, epochs=trainer.current_epoch)
