"""The image lookup table as a generator: training remembers images, drawing gives them back.

A calibration task for the image metrics: a perfect copier should score ``val/copy_rate`` 1.0
and a FID at the floor (``val/fid_floor``: real training images against the same reference).
The memorizer (mimicry/models/memorizer.py) is fitted by counting, so the task base runs it with
no optimizer; its loss is how far each image is from the nearest one it remembers.
"""
from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from torch import Tensor

from mimicry.data.images import to_unit
from mimicry.tasks.counted_fit import CountedFit
from mimicry.tasks.image_generation import ImageGeneration


class ImageLookup(CountedFit, ImageGeneration):
    data_value_range = "signed"

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 250,
                 conditional: bool = False, sample_seed: int = 0, num_samples: int = 64,
                 metrics_every_n_epochs: int = 1, metrics_samples: int = 500, feature_net: dict | None = None):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)  # checks the data spec
        self.model = instantiate(model, channels=self.channels, image_size=self.image_size)

    def imitation(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        images, _ = batch
        reference = images               # a real image
        prediction = self.model(images)  # the nearest image the memorizer remembers (blank before any)
        return prediction, reference

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        prediction, reference = self.imitation(batch)
        loss = self.imitate(prediction, reference)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.imitate(*self.imitation(batch), stage="val")  # held-out images: far from everything remembered

    def draw(self, n: int, seed: int, labels: Tensor | None = None, **options: Any) -> Tensor:
        return to_unit(self.model.draw(n, seed, labels), "signed").to(self.device)
