"""Stop at the first NaN or infinite loss, before a broken model is checkpointed."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from mimicry.callbacks.plain_updates import PlainUpdates
from mimicry.errors import DivergedError


class DivergenceGuard(pl.Callback):
    """Raises ``DivergedError`` when the training loss stops being finite. Lightning then stops
    without saving, so ``checkpoints/last.ckpt`` still holds the last good weights."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            clipping = ", trainer.gradient_clip_val=1.0" if lightning_may_clip(trainer, pl_module) else ""
            raise DivergedError(
                f"training diverged: loss is {loss.item()} at step {trainer.global_step}. The last good checkpoint is "
                f"kept in checkpoints/. Try a lower optim.lr{clipping}, or trainer.precision=32."
            )


def lightning_may_clip(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """Whether trainer.gradient_clip_val applies: the task's update is Lightning's or PlainUpdates' (which
    clips as Lightning does), not one the task steps itself."""
    return pl_module.automatic_optimization or any(isinstance(c, PlainUpdates) and c.active for c in trainer.callbacks)
