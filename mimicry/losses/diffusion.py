"""Diffusion objectives: what the denoiser imitates (the noise, the clean image, or v) and how
much each noise level counts.

The loss is the squared error per example (mean over pixels); the task multiplies it by
`weight(schedule, t)` and averages. Min-SNR-γ weighting (Hang et al. 2023) caps the weight of
the easy, almost-clean levels so that they do not crowd out the rest. With SNR = ᾱ / (1 − ᾱ):
eps: min(SNR, γ) / SNR;  x0: min(SNR, γ);  v: min(SNR, γ) / (SNR + 1).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mimicry.diffusion.schedule import NoiseSchedule
from mimicry.errors import MimicryError

WEIGHTINGS = ("uniform", "min_snr")


class DiffusionObjective(nn.Module):
    prediction = "eps"  # what the network outputs: eps | x0 | v

    def __init__(self, weighting: str = "uniform", snr_gamma: float = 5.0):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise MimicryError(f"loss.weighting={weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if snr_gamma <= 0:
            raise MimicryError(f"loss.snr_gamma={snr_gamma}: γ must be positive (5 is usual)")
        self.weighting, self.snr_gamma = weighting, float(snr_gamma)

    def target(self, schedule: NoiseSchedule, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The reference the network imitates at (x0, noise, t)."""
        return schedule.target(self.prediction, x0, noise, t)

    def weight(self, schedule: NoiseSchedule, t: Tensor) -> Tensor:
        """Per-example weight of the loss at noise level t."""
        if self.weighting == "uniform":
            return torch.ones(len(t), device=t.device)
        snr = schedule.snr(t)
        capped = snr.clamp(max=self.snr_gamma)
        return {"eps": capped / snr, "x0": capped, "v": capped / (snr + 1)}[self.prediction]

    def forward(self, prediction: Tensor, reference: Tensor) -> Tensor:
        """Squared error per example, averaged over its pixels: shape (B,)."""
        return (prediction - reference).pow(2).flatten(1).mean(1)


class EpsObjective(DiffusionObjective):
    """Predict the noise that was added (DDPM)."""
    prediction = "eps"


class X0Objective(DiffusionObjective):
    """Predict the clean image itself."""
    prediction = "x0"


class VObjective(DiffusionObjective):
    """Predict v = √ᾱ·eps − √(1−ᾱ)·x0 (Salimans & Ho 2022): bounded targets at every noise level."""
    prediction = "v"
