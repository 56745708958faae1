"""The two things mimicry does with Lightning's private state, each because no public API does the
job. Kept in one file so that a Lightning upgrade has one place to check; the logging tests
(tests/test_logging.py) and the lookup-table tests (tests/test_generalization.py) fail if either breaks.
"""
from __future__ import annotations

import pytorch_lightning as pl


def is_logging_step(trainer: pl.Trainer) -> bool:
    """True on the batches whose on-step values Lightning writes (every ``log_every_n_steps``).
    No public API says so; Lightning's own LearningRateMonitor and ThroughputMonitor read the same flag."""
    return bool(trainer._logger_connector.should_update_logs)


def advance_global_step(trainer: pl.Trainer) -> None:
    """Advance ``trainer.global_step`` by one for a step Lightning's optimizer did not take. The step
    counter counts Lightning's optimizer steps only and has no public setter: a lookup table fitted by
    counting takes none (each counted batch is still a step of fitting), and an RL update stepped on
    the plain optimizer (mimicry/tasks/rl/base.py) bypasses it."""
    trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.increment_completed()
