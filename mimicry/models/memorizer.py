"""An image lookup table: it remembers the training images it is shown and draws them back.

The extreme imitator, for calibration: a generator that copies its training set must score as
a copy in the memorization metric (mimicry/metrics/memorization.py) and sit at the FID floor.
Like the n-gram table it is fitted by counting (no optimizer: ``count(batch)`` stores the
batch), and the images live in buffers, so checkpoints and sampling work as for any model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from mimicry.errors import MimicryError


class ImageMemorizer(nn.Module):
    fitted_by_counting = True

    def __init__(self, channels: int, image_size: int, capacity: int = 10_000):
        super().__init__()
        if not isinstance(capacity, int) or capacity < 1:
            raise MimicryError(f"model.capacity={capacity!r}: the number of images to remember, a whole number ≥ 1")
        self.capacity = capacity
        self.register_buffer("images", torch.zeros(0, channels, image_size, image_size))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))

    @torch.no_grad()
    def count(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Remember the batch's images (and labels) until ``capacity`` are stored."""
        images, labels = batch
        room = self.capacity - len(self.images)
        if room > 0:
            self.images = torch.cat([self.images, images[:room].detach().to(self.images)])
            self.labels = torch.cat([self.labels, labels[:room].to(self.labels)])

    def draw(self, n: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n stored images picked at random (of the asked-for classes when ``labels`` is given)."""
        if len(self.images) == 0:  # nothing remembered yet (the samples drawn before training): blank images
            return self.images.new_zeros(n, *self.images.shape[1:])
        generator = torch.Generator().manual_seed(seed)
        if labels is None:
            return self.images[torch.randint(len(self.images), (n,), generator=generator)]
        picks = []
        for label in labels.tolist():
            same = torch.nonzero(self.labels == label).flatten()
            pool = same if len(same) else torch.arange(len(self.images))
            picks.append(pool[torch.randint(len(pool), (1,), generator=generator)])
        return self.images[torch.cat(picks)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The stored image nearest (in pixels) to each of ``images``: what the memorizer "predicts"."""
        from mimicry.metrics.distances import nearest

        if len(self.images) == 0:  # nothing remembered yet: a blank guess
            return torch.zeros_like(images)
        _, index = nearest(images.flatten(1).float(), self.images.flatten(1).float())
        return self.images[index]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        for name in ("images", "labels"):  # a saved memory is as long as what it stored
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
