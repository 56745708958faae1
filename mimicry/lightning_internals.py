"""The two places mimicry touches Lightning's private state, each because no public API does the
job. Kept in one file so that a Lightning upgrade has one place to check; the logging tests
(tests/test_logging.py) and the lookup-table tests (tests/test_generalization.py) fail if either breaks.
"""
from __future__ import annotations

import pytorch_lightning as pl


def is_logging_step(trainer: pl.Trainer) -> bool:
    """True on the batches whose on-step values Lightning writes (every ``log_every_n_steps``).
    No public API says so; Lightning's own LearningRateMonitor and ThroughputMonitor read the same flag."""
    return bool(trainer._logger_connector.should_update_logs)


def count_step_without_optimizer(trainer: pl.Trainer) -> None:
    """Advance ``trainer.global_step`` by one for a batch that took no optimizer step. The step counter
    counts optimizer steps only and has no public setter; a lookup table fitted by counting takes none,
    yet each counted batch is a step of fitting for curves and checkpoints."""
    trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.increment_completed()
