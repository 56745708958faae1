"""After a job's summary.json is final (Hydra calls this once per job, after the training function
returns): the MLflow run gets summary.json as an artifact, and the wandb run is closed, so that the
next job of a sweep run in this process starts its own. Wired in conf/train.yaml (hydra.callbacks).

Imported by Hydra at every start, so it imports nothing heavy unless a tracker was used.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class TrackersAfterJob(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if "mimicry.trackers" not in sys.modules:  # never imported here: no tracker was built (and no import cost)
            return
        from pytorch_lightning.loggers import MLFlowLogger, WandbLogger

        from mimicry.run_record import read_summary
        from mimicry.trackers import opened_for

        run_dir = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
        summary = run_dir / "summary.json"
        completed = summary.is_file() and read_summary(run_dir).get("status") == "completed"
        for logger in opened_for(run_dir):  # a logger that never started (the job failed first) is left so
            if isinstance(logger, MLFlowLogger) and logger._initialized and summary.is_file():
                logger.experiment.log_artifact(logger.run_id, str(summary))
            # (wandb is not given summary.json: a copy inside the run folder would look like a run of its own)
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger._experiment.finish(exit_code=0 if completed else 1)
