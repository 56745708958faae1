"""Read the factors of a shapes image back (data=shapes): which shape, colour, size and place.

Analysis by synthesis: every image the generator can draw is a template (a shape's coverage map)
times a colour, so the reader finds the template and colour whose drawing is nearest to the image
(least squares over all of them at once). On a real image the nearest drawing is the image itself.

An image is read *with confidence* when one drawing explains it (the unexplained share of its
energy is at most ``max_unexplained``) and it is clearly that shape and that colour (the best
drawing of any other shape, or in any other colour, is worse by at least ``min_margin`` of the
image's energy). Noise, blobs between two shapes and muddy colours are not read with confidence.
``share_read`` is then the judge of a model's samples: the share of them read with confidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mimicry.data.shapes import COLOURS, SHAPES, class_of, palette, templates
from mimicry.errors import MimicryError

MAX_UNEXPLAINED = 0.15  # a blurred or slightly noisy shape still passes; a smear does not
MIN_MARGIN = 0.05


@dataclass
class ShapeReading:
    shape: Tensor       # (N,) index into SHAPES
    colour: Tensor      # (N,) index into COLOURS
    size: Tensor        # (N,) side in pixels
    x: Tensor           # (N,) centre from the left edge, pixels
    y: Tensor           # (N,) centre from the top edge
    unexplained: Tensor  # (N,) share of the image's energy the best drawing leaves
    shape_margin: Tensor   # (N,) how much worse the best other shape fits (share of the energy)
    colour_margin: Tensor  # (N,) how much worse the best other colour fits
    confident: Tensor   # (N,) bool

    @property
    def label(self) -> Tensor:
        return class_of(self.shape, self.colour)


@torch.no_grad()
def read_shapes(images: Tensor, max_unexplained: float = MAX_UNEXPLAINED, min_margin: float = MIN_MARGIN,
                batch: int = 256) -> ShapeReading:
    """The factors of (N, 3, S, S) images in [0, 1] (e.g. a task's ``draw``), with their confidence."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise MimicryError(f"the shape reader reads square RGB images (N, 3, S, S); got {tuple(images.shape)}")
    bank = templates(int(images.shape[-1]))
    maps = bank.coverage.flatten(1)                       # (T, P)
    colours = palette()                                   # (K, 3)
    # |x - t⊗c|² = |x|² - 2 Σ_p t_p <x_p, c> + |t|²|c|², for every template t and colour c at once
    drawn_energy = maps.pow(2).sum(1)[None, :] * colours.pow(2).sum(1)[:, None]  # (K, T)
    parts = []
    for chunk in images.float().flatten(2).split(batch):  # (B, 3, P)
        energy = chunk.pow(2).sum(dim=(1, 2))              # (B,)
        projected = torch.einsum("bcp,kc->bkp", chunk, colours)  # <x_p, c> per colour
        error = energy[:, None, None] - 2 * projected @ maps.T + drawn_energy[None]  # (B, K, T)
        parts.append((error.clamp(min=0), energy))
    error = torch.cat([e for e, _ in parts])
    energy = torch.cat([e for _, e in parts]).clamp(min=1e-8)
    n, k, t = error.shape
    best = error.view(n, -1).argmin(1)
    colour, template = best // t, best % t
    best_error = error.view(n, -1).gather(1, best[:, None]).squeeze(1)
    shape = bank.shape[template]
    other_shape = bank.shape[None, None, :] != shape[:, None, None]                 # (N, 1, T)
    other_colour = torch.arange(k)[None, :, None] != colour[:, None, None]         # (N, K, 1)
    worst = torch.finfo(error.dtype).max
    shape_margin = (error.masked_fill(~other_shape, worst).view(n, -1).min(1).values - best_error) / energy
    colour_margin = (error.masked_fill(~other_colour, worst).view(n, -1).min(1).values - best_error) / energy
    unexplained = best_error / energy
    confident = (unexplained <= max_unexplained) & (shape_margin >= min_margin) & (colour_margin >= min_margin)
    confident &= energy > 1e-4  # a black image holds no shape
    return ShapeReading(shape, colour, bank.size[template], bank.x[template], bank.y[template],
                        unexplained, shape_margin, colour_margin, confident)


def share_read(images: Tensor, **thresholds: float) -> float:
    """The share of images (N, 3, S, S) in [0, 1] whose shape and colour are read with confidence."""
    return float(read_shapes(images, **thresholds).confident.float().mean())


def describe(reading: ShapeReading, index: int) -> str:
    """One image's reading in words, e.g. 'red circle, 8 px at (6.5, 9)'."""
    i = index
    return (f"{list(COLOURS)[int(reading.colour[i])]} {SHAPES[int(reading.shape[i])]}, {int(reading.size[i])} px at "
            f"({float(reading.x[i]):g}, {float(reading.y[i]):g})" + ("" if reading.confident[i] else " (not confident)"))
