"""The run's config, flattened, as parameters of every tracker but TensorBoard, when fit starts: so
a run that dies part-way still shows what it was. (TensorBoard's HParams tab needs the final metrics
beside them, so it gets them at the end: mimicry/training.py.)"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger


class ConfigParams(pl.Callback):
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_fit_start(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(self.params)  # MLflow: Lightning cuts values to its 250 characters
