"""Exponential moving average of a model's weights, built on torch.optim.swa_utils.AveragedModel.

What torch's `get_ema_multi_avg_fn` lacks is a warm-up: with decay 0.999 and a short CPU run the
average would still be mostly the random initial weights (a "young EMA" gives noise samples).
Here the decay used after n updates is min(decay, (1 + n) / (10 + n)), as in TensorFlow's
ExponentialMovingAverage with num_updates. Lightning's EMAWeightAveraging callback averages the
whole LightningModule (a GAN's discriminator too) and swaps it in for validation, so a GAN keeps
its own average of the generator instead.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def warmup_decay(decay: float, num_averaged: int) -> float:
    """Decay for the update after `num_averaged` earlier ones: short memory first, `decay` later."""
    return min(decay, (1 + num_averaged) / (10 + num_averaged))


def ema_multi_avg_fn(decay: float, warmup: bool = True) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    """`multi_avg_fn` for AveragedModel: ema <- d * ema + (1 - d) * current."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")

    @torch.no_grad()
    def update(ema: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        d = warmup_decay(decay, int(num_averaged)) if warmup else decay
        if torch.is_floating_point(ema[0]):
            torch._foreach_lerp_(ema, current, 1 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): just follow the model
            for e, c in zip(ema, current):
                e.copy_(c)

    return update


def exponential_moving_average(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """A frozen copy of `model` whose weights (and BatchNorm statistics) track it by EMA.

    Call `.update_parameters(model)` after each optimizer step; use `.module` to run it.
    """
    # AveragedModel deep-copies the model; the first update copies its weights exactly.
    average = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(decay, warmup), use_buffers=True)
    average.requires_grad_(False)
    return average
