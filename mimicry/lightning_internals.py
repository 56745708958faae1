"""The three things mimicry does with Lightning's private state, each because no public API does the
job. Kept in one file so that a Lightning upgrade has one place to check; the logging tests
(tests/test_logging.py), the lookup-table tests (tests/test_generalization.py) and the plain-update tests
(tests/test_plain_updates.py) fail if one breaks.
"""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.strategies import SingleDeviceStrategy


def is_logging_step(trainer: pl.Trainer) -> bool:
    """True on the batches whose on-step values Lightning writes (every ``log_every_n_steps``).
    No public API says so; Lightning's own LearningRateMonitor and ThroughputMonitor read the same flag."""
    return bool(trainer._logger_connector.should_update_logs)


def advance_global_step(trainer: pl.Trainer) -> None:
    """Advance ``trainer.global_step`` by one for a step Lightning's optimizer did not take. The step
    counter counts Lightning's optimizer steps only and has no public setter: a lookup table fitted by
    counting takes none (each counted batch is still a step of fitting), and an RL update stepped on
    the plain optimizer (mimicry/tasks/rl/base.py, mimicry/callbacks/plain_updates.py) bypasses it.

    Lightning keeps two counters, one for each kind of optimization, and ``global_step`` reads the one
    of the task's current kind; both advance here, so checkpoints agree whichever kind reads them."""
    loop = trainer.fit_loop.epoch_loop
    loop.manual_optimization.optim_step_progress.increment_completed()
    loop.automatic_optimization.optim_progress.optimizer.step.increment_completed()


def sync_step_counters(trainer: pl.Trainer) -> None:
    """Set both step counters to the larger, so that a run resumed with the other kind of optimization
    (callbacks.plain_updates turned on or off, a checkpoint from before it) keeps its ``global_step``."""
    loop = trainer.fit_loop.epoch_loop
    trackers = (loop.manual_optimization.optim_step_progress.total,
                loop.automatic_optimization.optim_progress.optimizer.step.total)
    steps = max(tracker.completed for tracker in trackers)
    for tracker in trackers:
        tracker.ready = tracker.completed = steps


def single_device_unscaled(trainer: pl.Trainer) -> bool:
    """One device and no gradient scaler: an update needs nothing of Lightning's strategy or precision, so
    it may be stepped by hand (with ``advance_global_step``). Public attributes only; here beside the counter."""
    return (isinstance(trainer.strategy, SingleDeviceStrategy)
            and getattr(trainer.precision_plugin, "scaler", None) is None)
