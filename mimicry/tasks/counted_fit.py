"""Fitting by counting: a task whose model may be a lookup table (``model.fitted_by_counting = True``,
e.g. lm's n-gram table, image_lookup's memorizer) mixes this in before ImitationTask.

A counted table has no parameters for an optimizer: the task then runs without one (manual
optimization, no gradient step), calls ``model.count(batch)`` after each training batch, and stops
after one epoch, the one pass over the training data that fills the table. Everything else (loss,
validation metrics, checkpoints, samples) goes through the same task code as a net's.
"""
from __future__ import annotations

import logging
from typing import Any

from mimicry.lightning_internals import advance_global_step

log = logging.getLogger("mimicry")


class CountedFit:
    @property
    def fitted_by_counting(self) -> bool:
        return bool(getattr(getattr(self, "model", None), "fitted_by_counting", False))

    @property
    def automatic_optimization(self) -> bool:
        # Lightning would call backward() on the loss of a counted table; manual mode lets it just count.
        return self._automatic_optimization and not self.fitted_by_counting

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    def configure_optimizers(self):
        if self.fitted_by_counting:
            return None  # a counted table has no parameters: no optimizer, no gradient step
        return super().configure_optimizers()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.fitted_by_counting and self.current_epoch >= 1:
            self.trainer.should_stop = True  # resumed after its one pass: the table is full already

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.fitted_by_counting and self.current_epoch == 0:
            self.model.count(batch)  # after training_step: its train/loss is the table's guess before seeing the batch
            advance_global_step(self.trainer)  # a counted batch is one step of fitting

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.fitted_by_counting:
            log.info("the table has counted its one pass over the training data; training stops here")
            self.trainer.should_stop = True
