"""Coloured shapes drawn from a seed: the embedded colour dataset (no download, no files).

Each image is one shape (circle, square, triangle) in one of six colours, at one of three sizes
and a position on a half-pixel grid, on black. The factors are known, so samples of a model can be
judged exactly (mimicry/metrics/shape_reader.py reads them back). Every image is drawn from a
*template*: the shape's coverage of each pixel (4×4 supersampled, so edges are antialiased) times
its colour. The reader compares an image against the same templates, so it is exact on real images.

The label of an image is its class ``shape × 6 + colour`` (18 classes), which the classifier and
the feature-net metrics read; ``draw_shapes`` also gives every factor for code that wants them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from mimicry.data.images import ImageDataModule
from mimicry.errors import MimicryError

SHAPES = ("circle", "square", "triangle")
COLOURS = {  # far apart in RGB, so a colour is read from the pixels alone
    "red": (1.0, 0.15, 0.15),
    "green": (0.15, 0.85, 0.2),
    "blue": (0.2, 0.4, 1.0),
    "yellow": (1.0, 0.9, 0.15),
    "cyan": (0.1, 0.85, 0.9),
    "magenta": (0.9, 0.2, 0.85),
}
SIZE_FRACTIONS = (0.375, 0.5, 0.625)  # of the image side: 6, 8, 10 px at 16×16
SUPERSAMPLE = 4
MARGIN = 1  # pixels kept clear at the border
MIN_IMAGE_SIZE = 8


def palette() -> Tensor:
    """(6, 3) colours in [0, 1], in the order of ``COLOURS``."""
    return torch.tensor(list(COLOURS.values()))


def class_of(shape: Tensor, colour: Tensor) -> Tensor:
    """The class label of (shape, colour) factor indices."""
    return shape * len(COLOURS) + colour


@dataclass(frozen=True)
class Templates:
    """Every (shape, size, position) the generator draws: coverage maps and their factors."""

    coverage: Tensor  # (T, S, S) in [0, 1]
    shape: Tensor     # (T,) index into SHAPES
    size: Tensor      # (T,) side in pixels
    x: Tensor         # (T,) centre, in pixels from the left edge (half-pixel steps)
    y: Tensor         # (T,) centre, from the top edge


def sizes_for(image_size: int) -> list[int]:
    return [max(2, round(f * image_size)) for f in SIZE_FRACTIONS]


def coverage(shape: str, size: int, cx: float, cy: float, image_size: int) -> Tensor:
    """(S, S) share of each pixel the shape covers, from SUPERSAMPLE² points per pixel."""
    steps = (torch.arange(image_size * SUPERSAMPLE, dtype=torch.float64) + 0.5) / SUPERSAMPLE
    py, px = torch.meshgrid(steps, steps, indexing="ij")
    r = size / 2
    dx, dy = px - cx, py - cy
    if shape == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif shape == "square":
        inside = (dx.abs() <= r) & (dy.abs() <= r)
    else:  # an upright triangle: apex at the top centre, base along the bottom of the box
        inside = (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) / 2)
    s = SUPERSAMPLE
    return inside.double().view(image_size, s, image_size, s).mean(dim=(1, 3)).float()


@lru_cache(maxsize=4)
def templates(image_size: int) -> Templates:
    """All templates for one image size (cached: the dataset and the reader share them)."""
    if image_size < MIN_IMAGE_SIZE:
        raise MimicryError(f"data.image_size={image_size}: shapes need at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} pixels")
    maps, factors = [], []
    for shape_index, shape in enumerate(SHAPES):
        for size in sizes_for(image_size):
            low, high = MARGIN + size / 2, image_size - MARGIN - size / 2
            centres = torch.arange(low, high + 1e-9, 0.5).tolist()
            for cy in centres:
                for cx in centres:
                    maps.append(coverage(shape, size, cx, cy, image_size))
                    factors.append((shape_index, size, cx, cy))
    table = torch.tensor(factors)
    return Templates(torch.stack(maps), table[:, 0].long(), table[:, 1].long(), table[:, 2], table[:, 3])


def draw_shapes(count: int, seed: int, image_size: int = 16) -> tuple[Tensor, dict[str, Tensor]]:
    """``count`` distinct images (uint8, (N, 3, S, S)) and their factors: shape, colour, size, x, y, label.

    Shape, colour and size are equally likely; the position is uniform among those that fit. No image
    repeats, so a split never holds a copy of a training image."""
    bank = templates(image_size)
    colours = palette()
    sizes = sizes_for(image_size)
    if count < 1:
        raise MimicryError(f"data.count={count}: must be a positive number of images, e.g. data.count=3000")
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for i, size in enumerate(sizes):  # each size the same share; within a size, (shape, position, colour) uniform
        of_size = (bank.size == size).nonzero().squeeze(1)
        combos = (of_size[:, None] * len(colours) + torch.arange(len(colours))[None]).flatten()  # (template, colour)
        wanted = count // len(sizes) + (i < count % len(sizes))
        if wanted > len(combos):
            raise MimicryError(f"data.count={count}: only {len(combos) * len(sizes)} distinct shape images fit "
                               f"{image_size}×{image_size} evenly over the sizes; ask for fewer or a larger data.image_size")
        picks.append(combos[torch.randperm(len(combos), generator=generator)[:wanted]])
    picks = torch.cat(picks)
    picks = picks[torch.randperm(len(picks), generator=generator)]
    template, colour = picks // len(colours), picks % len(colours)
    images = bank.coverage[template][:, None] * colours[colour][:, :, None, None]
    factors = {"shape": bank.shape[template], "colour": colour, "size": bank.size[template],
               "x": bank.x[template], "y": bank.y[template]}
    factors["label"] = class_of(factors["shape"], colour)
    return (images * 255).round().to(torch.uint8), factors


class ShapesDataModule(ImageDataModule):
    """Procedurally drawn coloured shapes, 18 classes (shape × colour); needs no download."""

    name = "shapes"
    num_classes = len(SHAPES) * len(COLOURS)

    def __init__(self, image_size: int | None = 16, count: int = 3000, draw_seed: int = 0, **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.count = count
        self.draw_seed = draw_seed

    def _read(self) -> dict[str, tuple[Tensor, Tensor]]:
        images, factors = draw_shapes(self.count, self.draw_seed, self.image_size or 16)
        return {"all": (images, factors["label"])}

    def identity(self) -> str:
        return f"{super().identity()}_n{self.count}-seed{self.draw_seed}"
