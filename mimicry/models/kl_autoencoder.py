"""KL autoencoder: an image as a small continuous latent grid (Stable Diffusion's first stage).

The encoder gives a mean and a log-variance per latent value; training decodes a sample from that
Gaussian and pays ``kl_weight`` times its KL divergence from N(0, 1). The weight is small: the
latents stay near unit scale (what a diffusion model in latent space wants) while the
reconstruction stays nearly as sharp as without it. The KL term is summed over an image's latents
and divided by its number of pixel values, so it is on the scale of the per-pixel reconstruction loss.

``encode`` (images → latent means) and ``decode`` (latents → images) are what latent diffusion calls.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from mimicry.errors import MimicryError
from mimicry.models.conv_coders import Decoder, Encoder, check_shape


class KLAutoencoder(nn.Module):
    kind = "kl"

    def __init__(self, channels: int, image_size: int, width: int = 32, downsamples: int = 2, groups: int = 8,
                 latent_channels: int = 4, kl_weight: float = 1.0e-3) -> None:
        super().__init__()
        check_shape(image_size, downsamples, width, groups)
        if latent_channels < 1 or kl_weight < 0:
            raise MimicryError(f"model.latent_channels={latent_channels} must be ≥ 1 and model.kl_weight={kl_weight} "
                               f"≥ 0 (e.g. latent_channels=4 kl_weight=0.001)")
        self.latent_channels, self.kl_weight = latent_channels, kl_weight
        self.grid = image_size // 2 ** downsamples
        self.pixel_values = channels * image_size**2
        self.encoder = Encoder(channels, 2 * latent_channels, width, downsamples, groups)
        self.decoder = Decoder(channels, latent_channels, width, downsamples, groups)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.latent_channels, self.grid, self.grid

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log-variance) of the latents, each (B, c, h, w)."""
        mean, log_var = self.encoder(images).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)  # as Stable Diffusion's: no overflow in exp

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(reconstruction, {"kl": weighted term}, latent means); training decodes a sample, eval the mean."""
        mean, log_var = self.posterior(images)
        latents = mean + (0.5 * log_var).exp() * torch.randn_like(mean) if self.training else mean
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).flatten(1).sum(1).mean() / self.pixel_values
        return self.decoder(latents), {"kl": self.kl_weight * kl}, mean

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] → latent means (B, c, h, w)."""
        return self.posterior(images)[0]

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (B, c, h, w) → images in about [-1, 1] (unclamped)."""
        return self.decoder(latents)

    def random_latents(self, n: int, generator: torch.Generator) -> Tensor:
        """n latents from the prior N(0, 1); a small KL weight leaves them far from what images encode to."""
        device = next(self.parameters()).device
        return torch.randn(n, *self.latent_shape, generator=generator).to(device)

    def latent_image(self, latents: Tensor) -> Tensor:
        """(B, 3, h, w) in [0, 1]: the first three latent channels as RGB, ±3 mapped onto [0, 1]."""
        shown = latents[:, :3]
        if shown.shape[1] < 3:
            shown = torch.cat([shown, shown[:, :1].expand(-1, 3 - shown.shape[1], -1, -1)], 1)
        return (shown / 6 + 0.5).clamp(0, 1)
