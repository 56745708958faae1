"""The convolutional encoder and decoder shared by the autoencoders (vqvae, kl_autoencoder).

The encoder halves the image ``downsamples`` times (16×16 → 4×4 with two) and ends in
``out_channels`` per position; the decoder mirrors it. Residual blocks with GroupNorm and SiLU,
as in Taming's and Stable Diffusion's autoencoders, only much smaller.
"""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from mimicry.errors import MimicryError


class ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def check_shape(image_size: int, downsamples: int, width: int, groups: int) -> None:
    """Fail before building: the image must halve evenly, and GroupNorm must divide every width."""
    if downsamples < 0 or image_size % (2 ** downsamples):
        raise MimicryError(f"model.downsamples={downsamples}: the image side {image_size} must be divisible by "
                           f"2^{downsamples}; use fewer downsamples or another data.image_size")
    if width < 1 or groups < 1 or width % groups:
        raise MimicryError(f"model.width={width} must be a positive multiple of model.groups={groups}")


class Encoder(nn.Module):
    """(B, C, S, S) images → (B, out_channels, S/2^d, S/2^d) features."""

    def __init__(self, channels: int, out_channels: int, width: int, downsamples: int, groups: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1)]
        ch = width
        for _ in range(downsamples):
            layers += [ResBlock(ch, groups), nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1)]
            ch *= 2
        layers += [ResBlock(ch, groups), nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class Decoder(nn.Module):
    """(B, in_channels, s, s) latents → (B, C, s·2^d, s·2^d) images (unbounded: the loss keeps them in range)."""

    def __init__(self, channels: int, in_channels: int, width: int, downsamples: int, groups: int) -> None:
        super().__init__()
        ch = width * 2 ** downsamples
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1), ResBlock(ch, groups)]
        for _ in range(downsamples):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, padding=1)]
            ch //= 2
            layers.append(ResBlock(ch, groups))
        layers += [nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: Tensor) -> Tensor:
        return self.net(latents)
