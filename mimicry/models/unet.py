"""A small UNet denoiser (after DDPM's): it reads a noised image and its noise level t (and,
optionally, a class) and returns an image-shaped prediction (the noise, the clean image or v).

Per resolution level: `blocks_per_level` residual blocks (GroupNorm, SiLU, 3x3 convs, the time
embedding added in between), then a strided conv halves the size. The lowest resolution adds
self-attention, where it is cheap and sees the whole image. The way up mirrors the way down,
with the skips of the way down concatenated in. A class-conditional UNet has one extra "null"
class, which classifier-free guidance uses as "no class given".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mimicry.errors import MimicryError


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style sinusoids of the integer noise level t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: a deep UNet trains from step one
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]  # the noise level (and class) enters every block
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a feature map, residual."""

    def __init__(self, ch: int, groups: int, heads: int):
        super().__init__()
        if ch % heads:
            raise MimicryError(f"model.attention_heads={heads} must divide the lowest level's width {ch}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    def __init__(self, channels: int, image_size: int, num_classes: int = 0, width: int = 32,
                 channel_mult: tuple[int, ...] | list[int] = (1, 2, 2), blocks_per_level: int = 1,
                 attention: bool = True, attention_heads: int = 1, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        levels = len(channel_mult)
        if levels < 1 or blocks_per_level < 1:
            raise MimicryError("model.channel_mult needs at least one level and model.blocks_per_level ≥ 1")
        factor = 2 ** (levels - 1)
        if image_size % factor:
            sizes = " → ".join(str(image_size / 2**i).rstrip("0").rstrip(".") for i in range(levels))
            fits = [n for n in range(1, levels + 1) if image_size % 2 ** (n - 1) == 0][-1]
            raise MimicryError(f"a {len(channel_mult)}-level UNet halves the image {levels - 1} times, and "
                               f"{image_size}×{image_size} does not halve evenly ({sizes}); use "
                               f"{fits} levels (model.channel_mult) or a data.image_size divisible by {factor}")
        widths = [width * m for m in channel_mult]
        bad = [w for w in widths if w % groups]
        if bad:
            raise MimicryError(f"GroupNorm with model.groups={groups} needs every level's width divisible by it; "
                               f"widths {widths} (model.width × model.channel_mult) include {bad}: "
                               f"choose model.width as a multiple of {groups}, or other groups")
        self.num_classes = num_classes
        emb_dim = 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # num_classes real classes + 1 "null" class for classifier-free guidance
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [width], width
        for level, w in enumerate(widths):
            lowest = level == levels - 1
            for _ in range(blocks_per_level):
                self.down.append(self._block(ch, w, emb_dim, groups, dropout, attention and lowest, attention_heads))
                ch = w
                skips.append(ch)
            if not lowest:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # halve the resolution
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups, dropout),
                                  SelfAttention(ch, groups, attention_heads) if attention else nn.Identity(),
                                  ResBlock(ch, ch, emb_dim, groups, dropout)])
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            lowest = level == levels - 1
            for _ in range(blocks_per_level + 1):  # one more than down: the downsampler's skip too
                self.up.append(self._block(ch + skips.pop(), w, emb_dim, groups, dropout, attention and lowest,
                                           attention_heads))
                ch = w
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # predicts 0 at first: a calm start for any objective
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _block(in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float, attend: bool,
               heads: int) -> nn.Module:
        block = ResBlock(in_ch, out_ch, emb_dim, groups, dropout)
        return _Attended(block, SelfAttention(out_ch, groups, heads)) if attend else block

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) noised images; t: (B,) integer noise levels; labels: (B,) classes
        (the null class `num_classes` or None = unconditional) -> (B, C, H, W)."""
        emb = self.time_mlp(timestep_embedding(t, self.width))
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full((len(x),), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(labels)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, (ResBlock, _Attended)) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, (ResBlock, _Attended)):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)


class _Attended(nn.Module):
    """A residual block followed by self-attention (the lowest resolution's blocks)."""

    def __init__(self, block: ResBlock, attention: SelfAttention):
        super().__init__()
        self.block, self.attention = block, attention

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attention(self.block(x, emb))
