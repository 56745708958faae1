"""Draw samples during training: at the start (the untrained baseline), every N steps, and at the end.

The task decides what a sample is (text, an image grid); this callback decides when, and hands it
the TensorBoard writer and the run's ``samples/`` folder (whose new files also go to MLflow). Tasks
seed their samplers from a fixed seed, so the same cell shows the same sample across steps and runs.
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from mimicry.trackers import log_sample_files, tensorboard_writer


class SampleLogger(pl.Callback):
    def __init__(self, every_n_steps: int | None = None):
        self.every_n_steps = every_n_steps  # None: the task's own ``sample_every_n_steps``
        self._last_step = -1

    def _draw(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step or not trainer.is_global_zero:
            return
        self._last_step = step
        sample_dir = Path(trainer.default_root_dir) / "samples"
        sample_dir.mkdir(parents=True, exist_ok=True)
        before = written(sample_dir)
        was_training = task.training
        task.eval()
        task.log_samples(tensorboard_writer(trainer.loggers), step, sample_dir)
        task.train(was_training)
        after = written(sample_dir)
        log_sample_files(trainer.loggers, sorted(path for path, stamp in after.items() if before.get(path) != stamp))

    def on_train_start(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        self._draw(trainer, task)

    def on_train_batch_end(self, trainer: pl.Trainer, task: pl.LightningModule, outputs, batch, batch_idx) -> None:
        every = self.every_n_steps or getattr(task.hparams, "sample_every_n_steps", 0)
        if every and trainer.global_step % every == 0:
            self._draw(trainer, task)

    def on_train_end(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        self._draw(trainer, task)


def written(folder: Path) -> dict[Path, tuple[int, int]]:
    """Each file in ``folder`` with its modification time and size: what a draw added or rewrote."""
    return {path: (path.stat().st_mtime_ns, path.stat().st_size) for path in folder.iterdir() if path.is_file()}
