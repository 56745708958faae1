"""VQ-VAE: an image as a small grid of codebook indices (the tokenizer of Taming's first stage).

The encoder's output at each position is replaced by its nearest codebook vector
(vector-quantize-pytorch's ``VectorQuantize``: EMA codebook updates, a commitment term, gradients
through the rotation trick). The codebook *is* k-means: it starts as k-means of the untrained
encoder's outputs (``init_codebook``), each EMA update moves a code to the mean of the vectors it
won, and a code that wins (almost) nothing (EMA count below ``dead_code_threshold``) restarts at a
vector of the current batch.

``encode`` (images → codes) and ``decode`` (codes → images) are pure functions of the weights, for
the stages that model the codes (image_ar on codes) and for `mimicry probe codebook`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from vector_quantize_pytorch import VectorQuantize

from mimicry.errors import MimicryError
from mimicry.models.conv_coders import Decoder, Encoder, check_shape


class VQVAE(nn.Module):
    kind = "vq"

    def __init__(self, channels: int, image_size: int, width: int = 32, downsamples: int = 2, groups: int = 8,
                 codebook_size: int = 128, code_dim: int = 16, commitment_weight: float = 0.25,
                 codebook_decay: float = 0.8, kmeans_iters: int = 10, dead_code_threshold: float = 2.0,
                 usage_decay: float = 0.99) -> None:
        super().__init__()
        check_shape(image_size, downsamples, width, groups)
        if codebook_size < 2 or code_dim < 1:
            raise MimicryError(f"model.codebook_size={codebook_size} and model.code_dim={code_dim}: need at least "
                               f"2 codes of at least 1 dimension (e.g. codebook_size=128 code_dim=16)")
        if not 0 <= codebook_decay < 1 or not 0 <= usage_decay < 1:
            raise MimicryError(f"model.codebook_decay={codebook_decay}, model.usage_decay={usage_decay}: each in [0, 1)")
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.grid = image_size // 2 ** downsamples  # codes per side
        self.encoder = Encoder(channels, code_dim, width, downsamples, groups)
        self.decoder = Decoder(channels, code_dim, width, downsamples, groups)
        self.quantizer = VectorQuantize(
            dim=code_dim, codebook_size=codebook_size, decay=codebook_decay, commitment_weight=commitment_weight,
            kmeans_init=True, kmeans_iters=kmeans_iters, threshold_ema_dead_code=dead_code_threshold,
            accept_image_fmap=True)
        self.usage_decay, self.commitment_weight = usage_decay, commitment_weight
        # how often each code is used (an EMA of the batches' shares): the prior random codes are drawn from
        self.register_buffer("usage", torch.full((codebook_size,), 1.0 / codebook_size))

    @property
    def codebook(self) -> Tensor:
        """(codebook_size, code_dim) code vectors."""
        return self.quantizer.codebook

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.grid, self.grid

    @torch.no_grad()
    def init_codebook(self, images: Tensor) -> bool:
        """k-means of the encoder's outputs on these images as the starting codebook; False if already set."""
        book = self.quantizer._codebook  # the library runs k-means on its first batch; we give it a larger one
        if bool(book.initted):
            return False
        vectors = self.encoder(images).permute(0, 2, 3, 1).reshape(1, -1, self.code_dim)
        book.init_embed_(vectors)
        return True

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(reconstruction, {"commitment": weighted term}, codes (B, h, w)); in training the codebook moves."""
        features = self.encoder(images)
        quantized, codes, commitment = self.quantizer(features)
        if self.training:
            share = torch.bincount(codes.flatten(), minlength=self.codebook_size).float() / codes.numel()
            self.usage.mul_(self.usage_decay).add_(share, alpha=1 - self.usage_decay)
        else:  # the library returns zero outside training; validation reports the same term as training pays
            commitment = self.commitment_weight * F.mse_loss(features, quantized)
        return self.decoder(quantized), {"commitment": commitment.sum()}, codes

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] → code indices (B, h, w): the nearest code to each encoder output."""
        features = self.encoder(images).permute(0, 2, 3, 1)  # (B, h, w, d)
        distance = torch.cdist(features.reshape(len(images), -1, self.code_dim), self.codebook[None])
        return distance.argmin(-1).view(features.shape[:3])

    def decode(self, codes: Tensor) -> Tensor:
        """Code indices (B, h, w) → images in about [-1, 1] (unclamped)."""
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise MimicryError(f"codes must lie in 0..{self.codebook_size - 1}")
        return self.decoder(self.quantizer.get_output_from_indices(codes.long()))

    def random_latents(self, n: int, generator: torch.Generator) -> Tensor:
        """n code grids, each position drawn independently from the codes' usage: the baseline a
        model of the codes (image_ar) has to beat."""
        h, w = self.latent_shape
        picks = torch.multinomial(self.usage.cpu().clamp(min=0), n * h * w, replacement=True, generator=generator)
        return picks.view(n, h, w).to(self.usage.device)

    def latent_image(self, codes: Tensor) -> Tensor:
        """(B, 3, h, w) in [0, 1]: each code index shown as its own fixed colour (the code image)."""
        colours = torch.rand(self.codebook_size, 3, generator=torch.Generator().manual_seed(0)).to(codes.device)
        return colours[codes].permute(0, 3, 1, 2)
