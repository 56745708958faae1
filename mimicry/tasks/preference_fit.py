"""The fit both preference learners share (task=reward_model, algo=dpo): each pair's reference is 1
where the judge preferred the first text, the prediction is the logit of "first preferred" (the
reward model's score difference, or DPO's margin of log-probability ratios), the loss is
Bradley–Terry cross-entropy; held out, how often the prediction picks what the judge picked."""
from __future__ import annotations

import torch


class PreferenceFit:
    """Mixed into a task that defines ``imitation(batch) -> (prediction, reference)`` over pairs."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.imitate(*self.imitation(batch))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        prediction, reference = self.imitation(batch)
        self.imitate(prediction, reference, stage="val")
        self.log_metric("val/preference_accuracy", ((prediction > 0).float() == reference).float().mean())
