"""The forgery map: where the discriminator would change a fake to make it look real.

It is the gradient of D's verdict with respect to each pixel of a fake: exactly the per-pixel
signal the generator is trained to follow. When D wins completely and saturates, the verdict
stops moving with the pixels and the map fades to nothing; `forgery_heatmap` returns the mean
gradient norm alongside the picture so that fading shows as a number too.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.utils import make_grid


def forgery_map(
    discriminator: nn.Module,
    fakes: Tensor,
    labels: Tensor | None = None,
    verdict: Callable[[Tensor], Tensor] = torch.sigmoid,
) -> Tensor:
    """d verdict(D(fake)) / d pixel for each fake: same shape as `fakes`.

    `verdict` maps D's logits to what it "says"; the default, sigmoid, is D's probability of
    "real", which saturates (and the map fades) when D is sure. D runs in eval mode so BatchNorm
    does not mix images, and no parameter gradients are touched.
    """
    was_training = discriminator.training
    discriminator.eval()
    try:
        with torch.enable_grad():
            pixels = fakes.detach().clone().requires_grad_(True)
            logits = discriminator(pixels) if labels is None else discriminator(pixels, labels)
            scores = verdict(logits)
            if not scores.requires_grad:  # a D that ignores its input has nothing to say about pixels
                return torch.zeros_like(pixels)
            # Each image's verdict depends only on its own pixels, so one backward gives all maps.
            (grads,) = torch.autograd.grad(scores.sum(), pixels, allow_unused=True)
    finally:
        discriminator.train(was_training)
    return torch.zeros_like(pixels) if grads is None else grads


def forgery_heatmap(grads: Tensor, nrow: int = 8) -> tuple[Tensor, float]:
    """Grid image (3, H, W) in [0, 1] of per-image normalised gradient magnitude, and the mean gradient norm.

    Each map is scaled by its own maximum so the *pattern* stays visible even when the
    gradients are tiny; the returned norm tells how tiny they are.
    """
    magnitude = grads.detach().float().pow(2).sum(dim=1, keepdim=True).sqrt()  # (B, 1, H, W), over channels
    peak = magnitude.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    heat = _hot_colormap(magnitude / peak)
    mean_norm = grads.detach().flatten(1).norm(dim=1).mean().item()
    return make_grid(heat, nrow=nrow, padding=1, pad_value=0.5), mean_norm


def _hot_colormap(values: Tensor) -> Tensor:
    """(B, 1, H, W) in [0, 1] -> (B, 3, H, W): black -> red -> yellow -> white, like matplotlib's 'hot'."""
    return torch.cat([(3 * values).clamp(0, 1), (3 * values - 1).clamp(0, 1), (3 * values - 2).clamp(0, 1)], dim=1)
