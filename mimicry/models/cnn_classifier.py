"""A small CNN classifier: trained per dataset, it is also our feature net for FID/KID and friends.

No Inception weights can be downloaded, so image metrics use features of this net and its class
predictions. The penultimate features (global-average-pooled, like Inception's pool3) mostly
encode the class: trained for labels, the net learns to ignore how one 7 differs from another.
`metric_features` therefore adds an earlier layer's activations, pooled over a 2×2 grid of
image quarters, which still see strokes and where they are.

Expected input: images in [-1, 1], shape (B, channels, image_size, image_size).
Metric code maps other value ranges to [-1, 1] before calling it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mimicry.errors import MimicryError


EARLY_BLOCKS = 3  # the metric features also read the output of the third block (S/2, 2·width channels)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class CNNClassifier(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        if image_size < 4:
            raise MimicryError(f"CNNClassifier needs images of at least 4×4, got {image_size}")
        self.channels, self.num_classes, self.image_size = channels, num_classes, image_size
        self.body = nn.Sequential(
            _block(channels, width, 1),
            _block(width, 2 * width, 2),  # S/2
            _block(2 * width, 2 * width, 1),
            _block(2 * width, 4 * width, 2),  # S/4
            _block(4 * width, 4 * width, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = 4 * width  # torchmetrics reads this name
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, 4·width) of images in [-1, 1]."""
        return self.body(x)

    def metric_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features for image metrics (B, 2·width·4 + 4·width), class logits (B, num_classes))."""
        early = self.body[:EARLY_BLOCKS](x)
        late = self.body[EARLY_BLOCKS:](early)
        return torch.cat([F.adaptive_avg_pool2d(early, 2).flatten(1), late], dim=1), self.head(late)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes) of images in [-1, 1]."""
        return self.head(self.features(x))
