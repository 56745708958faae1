"""Optional: the sharpness probe (mimicry/probes/sharpness.py) on the trained model when fit ends.

    mimicry train task=lm +callbacks.sharpness._target_=mimicry.callbacks.sharpness_probe.SharpnessAtEnd

writes RUN_DIR/probes/sharpness.{json,png} and the picture and table to TensorBoard, as
`mimicry probe sharpness RUN_DIR` would for the final weights (the probe reads the best checkpoint).
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from mimicry.probes.common import batches_of
from mimicry.probes.sharpness import OPTIONS, check_eps, sharpness, table_text, write


class SharpnessAtEnd(pl.Callback):
    def __init__(self, eps: list[float] | None = None, draws: int = 5, ascent_steps: int = 5, batches: int = 4,
                 seed: int = 0):
        self.eps = check_eps(list(eps) if eps is not None else OPTIONS["eps"])
        self.draws, self.ascent_steps, self.batches, self.seed = draws, ascent_steps, batches, seed

    def on_fit_end(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        batches = [b for b in batches_of(trainer.datamodule.train_dataloader(), self.batches)]
        batches = [b.to(task.device) if hasattr(b, "to") else [t.to(task.device) for t in b] for b in batches]
        result = sharpness(task, batches, self.eps, self.draws, self.ascent_steps, self.seed)
        write(Path(trainer.default_root_dir), type(task.model).__name__, result, step=trainer.global_step)
        print(table_text(result))
