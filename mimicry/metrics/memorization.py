"""Did the model copy its training set? Nearest training images of a few samples, and a copy rate.

Copy rule: a sample counts as a copy when its pixel (L2) distance to the nearest training image
is below `ratio` (default 1/3) times the typical distance between a training image and its
nearest *other* training image (the median over up to 1,000 training images). Distinct real
images sit about one typical distance apart, so a sample much closer than that to one of them
is a near-duplicate of it rather than a new image.

Distances are exact for copies (mimicry/metrics/distances.py): a copy is at 0.0 on every machine.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.utils import make_grid

from mimicry.metrics.distances import nearest
from mimicry.metrics.image_quality import extract


def typical_train_distance(train_images: Tensor, max_queries: int = 1000, seed: int = 0) -> float:
    """Median pixel distance from a training image to its nearest other training image."""
    flat = train_images.flatten(1).float()
    order = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))
    flat = flat[order]  # a seeded sample of queries goes first so `exclude_self` lines up
    distances, _ = nearest(flat[:max_queries], flat, exclude_self=True)
    return distances.median().item()


@torch.no_grad()
def memorization(
    samples: Tensor,
    train_images: Tensor,
    feature_net: nn.Module | None = None,
    value_range: str = "signed",
    n_show: int = 8,
    ratio: float = 1 / 3,
    typical: float | None = None,
) -> dict:
    """Nearest training images of `samples` and the copy rate over all of them.

    Returns {"grid": (3, H', W') image in [0, 1] with rows `sample | nearest by pixels |
    nearest by features` for the first `n_show` samples, "copy_rate": share of samples that are
    copies (rule in the module docstring), "nearest_distance": median pixel distance to the
    nearest training image, "typical_distance": the train-to-train reference}.
    `typical` skips recomputing that reference (it depends on the training images only).
    """
    flat_train = train_images.flatten(1).float()
    pixel_distance, pixel_index = nearest(samples.flatten(1).float(), flat_train)
    typical = typical_train_distance(train_images) if typical is None else typical
    copy_rate = (pixel_distance < ratio * typical).float().mean().item()

    shown = samples[:n_show]
    columns = [shown, train_images[pixel_index[:n_show]]]
    if feature_net is not None:
        train_features, _ = extract(train_images, feature_net, value_range)
        shown_features, _ = extract(shown, feature_net, value_range)
        _, feature_index = nearest(shown_features, train_features)
        columns.append(train_images[feature_index])
    rows = torch.stack(columns, dim=1).flatten(0, 1).float()  # sample, pixel-nearest, feature-nearest, ...
    unit = (rows + 1) / 2 if value_range == "signed" else rows
    grid = make_grid(unit.clamp(0, 1).cpu(), nrow=len(columns), padding=1, pad_value=0.5)
    return {
        "grid": grid,
        "copy_rate": copy_rate,
        "nearest_distance": pixel_distance.median().item(),
        "typical_distance": typical,
    }
