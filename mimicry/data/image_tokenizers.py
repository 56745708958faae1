"""Turn images into token sequences (and back) so a GPT can imitate them like text.

Both tokenizers read images in [0, 1] (datamodules give that with `value_range=unit`) and
write raster order: row by row, left to right.

- `PixelTokenizer`: each pixel value quantized to K levels; colour channels interleaved
  (r, g, b of one pixel, then the next pixel), so one token per pixel per channel.
- `PatchTokenizer`: each p×p patch replaced by the id of its nearest prototype in a codebook
  learned by k-means over training patches ("give common groups a token id").
- `AutoencoderCodes`: the grid of codebook indices a trained VQ-VAE encodes an image to (Taming's
  first stage, `tokenizer=vq tokenizer.from_run=AE_RUN`); decoding runs its decoder.

Both are `nn.Module`s, so inside a task the patch codebook is a buffer: it moves with the
model to the GPU and is saved in the checkpoint's state dict. Outside a task, a tokenizer
travels as `state()` (plain values and tensors, loadable with `torch.load(weights_only=True)`)
and comes back with `tokenizer_from_state`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mimicry.errors import MimicryError


def _check_images(images: Tensor, channels: int | None = None) -> None:
    if images.dim() != 4:
        raise MimicryError(f"expected images shaped (B, C, H, W), got {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise MimicryError(f"tokenizer built for {channels} channel(s) got images with {images.shape[1]}")
    if images.shape[-1] != images.shape[-2]:
        raise MimicryError(f"tokenizers expect square images, got {images.shape[-2]}×{images.shape[-1]}")


def nearest(points: Tensor, centres: Tensor) -> Tensor:
    """Index of the nearest centre for each point, by squared L2 distance.

    ‖x − c‖² = ‖x‖² − 2x·c + ‖c‖², and ‖x‖² does not change the argmin: one matrix product per chunk.
    """
    centre_norms = (centres**2).sum(dim=1)
    return torch.cat([(centre_norms - 2 * chunk @ centres.T).argmin(dim=1) for chunk in points.split(16384)])


def kmeans(points: Tensor, k: int, generator: torch.Generator, iterations: int = 20) -> Tensor:
    """Lloyd's k-means with k-means++ seeding; returns (k, D) centres.

    k-means++ spreads the initial centres over the data, which avoids dead codes (Taming
    Transformers makes the same point for VQ codebooks); an empty cluster keeps its centre.
    """
    points = points.float()
    seeding = points[torch.randperm(len(points), generator=generator)[: 50 * k]]  # a sample is enough to seed
    norms = (seeding**2).sum(dim=1)
    first = int(torch.randint(len(seeding), (1,), generator=generator))
    centres = [seeding[first]]
    closest = norms - 2 * seeding @ seeding[first] + norms[first]  # squared distance to the nearest chosen centre
    for _ in range(k - 1):  # next centre drawn with probability ∝ that squared distance
        cumulative = closest.clamp(min=0).cumsum(0)
        draw = torch.rand(1, generator=generator) * cumulative[-1]
        pick = min(int(torch.searchsorted(cumulative, draw)), len(seeding) - 1)
        centres.append(seeding[pick])
        closest = torch.minimum(closest, norms - 2 * seeding @ seeding[pick] + norms[pick])
    centres = torch.stack(centres)
    for _ in range(iterations):
        assignment = nearest(points, centres)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres.clamp(0, 1)


class PixelTokenizer(nn.Module):
    """One token per pixel and channel: the pixel's value quantized to `levels` levels."""

    kind = "pixels"

    def __init__(self, levels: int = 16, channels: int = 1) -> None:
        super().__init__()
        if levels < 2:
            raise MimicryError(f"tokenizer.levels={levels}: need at least 2 levels")
        self.levels = levels
        self.channels = channels

    @property
    def vocab_size(self) -> int:
        return self.levels

    def tokens_per_image(self, image_size: int) -> int:
        return image_size * image_size * self.channels

    def token_rows(self, image_size: int) -> int:
        """Rows of tokens per image: the first k rows are the top k/rows of the picture."""
        return image_size

    def check(self, channels: int, image_size: int) -> None:
        """Raise before training if this tokenizer cannot encode the data."""
        if channels != self.channels:
            raise MimicryError(f"pixel tokenizer has channels={self.channels} but the data has {channels}")

    def fit(self, train_images: Tensor) -> "PixelTokenizer":
        return self  # nothing to learn: the levels are fixed

    def encode(self, images: Tensor) -> Tensor:
        """[0, 1] images (B, C, H, W) → level ids (B, H·W·C); level k stands for the value k/(K-1)."""
        _check_images(images, self.channels)
        levels = (images.clamp(0, 1) * (self.levels - 1)).round().long()
        return levels.permute(0, 2, 3, 1).reshape(len(images), -1)  # (row, col, channel) order

    def decode(self, tokens: Tensor, image_size: int) -> Tensor:
        """Level ids (B, H·W·C) → [0, 1] images (B, C, H, W)."""
        grid = tokens.reshape(len(tokens), image_size, image_size, self.channels).permute(0, 3, 1, 2)
        return grid.float() / (self.levels - 1)

    def state(self) -> dict:
        return {"kind": self.kind, "levels": self.levels, "channels": self.channels}


class PatchTokenizer(nn.Module):
    """One token per p×p patch: the id of the nearest of `codebook_size` k-means prototypes."""

    kind = "patches"

    def __init__(
        self, patch_size: int = 2, codebook_size: int = 256, channels: int = 1, seed: int = 0, max_fit_patches: int = 100_000
    ) -> None:
        super().__init__()
        if patch_size < 1 or codebook_size < 2:
            raise MimicryError(f"tokenizer needs patch_size ≥ 1 and codebook_size ≥ 2, got {patch_size}, {codebook_size}")
        self.patch_size = patch_size
        self.codebook_size = codebook_size
        self.channels = channels
        self.seed = seed
        self.max_fit_patches = max_fit_patches  # k-means on a seeded sample keeps fitting fast on big datasets
        self.register_buffer("codebook", torch.zeros(codebook_size, channels * patch_size**2))
        self.register_buffer("fitted", torch.tensor(False))  # saved with the codebook: a loaded one is ready

    @property
    def vocab_size(self) -> int:
        return self.codebook_size

    def tokens_per_image(self, image_size: int) -> int:
        self._check_size(image_size)
        return (image_size // self.patch_size) ** 2

    def token_rows(self, image_size: int) -> int:
        """Rows of tokens per image: one per row of patches."""
        self._check_size(image_size)
        return image_size // self.patch_size

    def check(self, channels: int, image_size: int) -> None:
        """Raise before training if this tokenizer cannot encode the data."""
        self._check_size(image_size)
        if channels != self.channels:
            raise MimicryError(f"patch tokenizer has channels={self.channels} but the data has {channels}")

    def _check_size(self, image_size: int) -> None:
        if image_size % self.patch_size:
            raise MimicryError(
                f"image size {image_size} is not divisible by tokenizer.patch_size={self.patch_size}: "
                f"choose a patch size that divides it, or set data.image_size"
            )

    def _require_fit(self) -> None:
        if not self.fitted:
            raise MimicryError("patch tokenizer has no codebook yet: call fit(train_images) first")

    def _patches(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → (B, L, C·p·p), patches in raster order."""
        _check_images(images)
        self._check_size(images.shape[-1])
        return F.unfold(images.float(), kernel_size=self.patch_size, stride=self.patch_size).transpose(1, 2)

    def fit(self, train_images: Tensor) -> "PatchTokenizer":
        """Learn the codebook by k-means over training patches in [0, 1] (seeded: same data, same codebook)."""
        _check_images(train_images, self.channels)
        patches = self._patches(train_images.cpu()).reshape(-1, self.codebook.shape[1])
        generator = torch.Generator().manual_seed(self.seed)
        if len(patches) > self.max_fit_patches:
            patches = patches[torch.randperm(len(patches), generator=generator)[: self.max_fit_patches]]
        if len(patches) < self.codebook_size:
            raise MimicryError(f"{len(patches)} training patches cannot fill a codebook of {self.codebook_size}")
        self.codebook.copy_(kmeans(patches, self.codebook_size, generator=generator))
        self.fitted.fill_(True)
        return self

    def encode(self, images: Tensor) -> Tensor:
        """[0, 1] images → codebook ids (B, (H/p)·(W/p)), nearest prototype by squared distance."""
        self._require_fit()
        _check_images(images, self.channels)
        patches = self._patches(images)
        return nearest(patches.reshape(-1, patches.shape[-1]), self.codebook).reshape(len(images), -1)

    def decode(self, tokens: Tensor, image_size: int) -> Tensor:
        """Codebook ids → [0, 1] images: each id pasted as its prototype patch."""
        self._require_fit()
        patches = self.codebook[tokens].transpose(1, 2)  # (B, C·p·p, L) as fold wants
        return F.fold(patches, output_size=image_size, kernel_size=self.patch_size, stride=self.patch_size)

    def reconstruction_error(self, images: Tensor) -> float:
        """Mean squared error of decode(encode(images)) in [0, 1] units: what the codebook loses."""
        restored = self.decode(self.encode(images), images.shape[-1])
        return F.mse_loss(restored, images.float()).item()

    def state(self) -> dict:
        self._require_fit()
        return {
            "kind": self.kind,
            "patch_size": self.patch_size,
            "codebook_size": self.codebook_size,
            "channels": self.channels,
            "seed": self.seed,
            "codebook": self.codebook.detach().cpu().clone(),
        }


class AutoencoderCodes(nn.Module):
    """One token per position of a trained VQ-VAE's code grid: the index of its codebook vector.

    ``autoencoder`` is the run's frozen model (mimicry/tasks/first_stage.py reads it as data); it is
    a submodule, so its weights travel in the checkpoint of the run that models its codes."""

    kind = "vq"

    def __init__(self, autoencoder: nn.Module, channels: int = 1) -> None:
        super().__init__()
        if getattr(autoencoder, "kind", None) != "vq":
            raise MimicryError("tokenizer=vq reads the codes of a VQ-VAE run (task=autoencoder model=vqvae)")
        self.autoencoder = autoencoder
        self.channels = channels

    @property
    def vocab_size(self) -> int:
        return self.autoencoder.codebook_size

    def tokens_per_image(self, image_size: int) -> int:
        self.check(self.channels, image_size)
        h, w = self.autoencoder.latent_shape
        return h * w

    def token_rows(self, image_size: int) -> int:
        """Rows of tokens per image: one per row of codes (each covers a band of the picture)."""
        return self.autoencoder.latent_shape[0]

    def check(self, channels: int, image_size: int) -> None:
        """Raise before training if the autoencoder was trained on other images."""
        theirs = (self.autoencoder.channels, self.autoencoder.image_size)
        if (channels, image_size) != theirs:
            raise MimicryError(f"tokenizer=vq: the autoencoder encodes {theirs[0]}-channel {theirs[1]}×{theirs[1]} "
                               f"images, the data are {channels}-channel {image_size}×{image_size}; train it on this data")

    def fit(self, train_images: Tensor) -> "AutoencoderCodes":
        return self  # the codebook was learned by the autoencoder run

    def encode(self, images: Tensor) -> Tensor:
        """[0, 1] images (B, C, H, W) → code ids (B, h·w), raster order."""
        _check_images(images, self.channels)
        return self.autoencoder.encode(images.float() * 2 - 1).flatten(1)

    def decode(self, tokens: Tensor, image_size: int) -> Tensor:
        """Code ids (B, h·w) → [0, 1] images through the autoencoder's decoder."""
        codes = tokens.reshape(len(tokens), *self.autoencoder.latent_shape)
        return (self.autoencoder.decode(codes) + 1) / 2


def tokenizer_from_state(state: dict) -> PixelTokenizer | PatchTokenizer:
    """Rebuild a tokenizer saved with `state()` (e.g. from a checkpoint)."""
    kind = state.get("kind")
    if kind == PixelTokenizer.kind:
        return PixelTokenizer(levels=int(state["levels"]), channels=int(state["channels"]))
    if kind == PatchTokenizer.kind:
        tokenizer = PatchTokenizer(
            int(state["patch_size"]), int(state["codebook_size"]), int(state["channels"]), int(state["seed"])
        )
        tokenizer.codebook.copy_(state["codebook"])
        tokenizer.fitted.fill_(True)
        return tokenizer
    raise MimicryError(f"unknown tokenizer kind {kind!r} in saved state (expected 'pixels' or 'patches')")
