"""The run's config, flattened, as parameters of every tracker but TensorBoard, when fit starts: so
a run that dies part-way still shows what it was. (TensorBoard's HParams tab needs the final metrics
beside them, so it gets them at the end: mimicry/training.py.)"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger


class ConfigParams(pl.Callback):
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_fit_start(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                self.to_mlflow(logger)
            elif not isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(self.params)

    def to_mlflow(self, logger: MLFlowLogger) -> None:
        """Lightning cuts values to MLflow's 250 characters. A resumed run (the same MLflow run) keeps its first
        params, which MLflow never changes: the values this session changed go to a tag instead."""
        logged = logger.experiment.get_run(logger.run_id).data.params
        new = {k: v for k, v in self.params.items() if k not in logged}
        changed = sorted(k for k, v in self.params.items() if k in logged and str(v)[:250] != logged[k])
        if new:
            logger.log_hyperparams(new)
        if changed:
            logger.experiment.set_tag(logger.run_id, "mimicry.resumed_with",
                                      " ".join(f"{k}={self.params[k]}" for k in changed)[:5000])
