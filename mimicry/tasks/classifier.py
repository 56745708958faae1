"""Classification: imitate the label a person gave each image.

The same network (`CNNClassifier`) is the offline feature net behind the image metrics; that
one is fitted and cached by mimicry/metrics/feature_net.py, not by this task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torchmetrics import MeanMetric

from mimicry.errors import MimicryError
from mimicry.tasks.base import ImitationTask


class Classification(ImitationTask):
    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 0):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)
        if data_spec.get("kind") != "image":
            raise MimicryError(f"task=classifier needs image data, got {data_spec.get('kind')!r} data")
        if data_spec["num_classes"] < 2:
            raise MimicryError(f"task=classifier needs labelled data with at least 2 classes; "
                               f"{data_spec['dataset']} has {data_spec['num_classes']}")
        if data_spec["value_range"] != "signed":
            raise MimicryError("task=classifier reads images in [-1, 1]: set data.value_range=signed")
        self.model = instantiate(model, channels=data_spec["channels"], num_classes=data_spec["num_classes"],
                                 image_size=data_spec["image_size"])
        self.val_accuracy = MeanMetric()

    def imitation(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        reference = labels              # the class a person gave the image
        prediction = self.model(images)  # logits over the classes
        return prediction, reference

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        prediction, reference = self.imitation(batch)
        loss = self.imitate(prediction, reference)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.imitate(logits, labels, stage="val")
        self.val_accuracy.update((logits.argmax(dim=1) == labels).float().mean(), weight=len(labels))

    def on_validation_epoch_end(self) -> None:
        self.log("val/accuracy", self.val_accuracy.compute(), prog_bar=True)
        self.val_accuracy.reset()

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        raise MimicryError("a classifier draws no samples; `mimicry sample` is for generative tasks")
