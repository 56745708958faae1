"""A style-based generator (StyleGAN2, Karras et al. 2019/2020), small enough for CPU at 16-32 px.

    z ──mapping MLP──▶ w ──(one w per layer: ws)──┐
                                                  ▼ affine → style s of each layer
    learned constant (size/4) ─▶ modulated conv ─▶ +noise ─▶ ... ─▶ up ×2 ─▶ ... ─▶ up ×2 ─▶ ...
                                       │                          │                  │
                                     toRGB ────────── up ×2 ──▶ + toRGB ── up ×2 ──▶ + toRGB ─▶ image

- mapping: z (normalised) → an MLP → w. The synthesis network never sees z; each of its layers
  reads w through its own affine map, so "what the image shows" is decided layer by layer.
- modulated conv: the style scales the conv weight per input channel; demodulation then rescales
  each output channel so that unit-variance inputs give unit-variance outputs (what AdaIN did,
  without the blob artefacts of normalising the activations).
- noise: one image of N(0, 1) noise per layer, scaled by a learned strength: the stochastic detail.
  In eval mode each layer uses one fixed noise image (StyleGAN2's noise_mode="const"), so a z
  always gives the same image and the cells of a style-mixing grid differ only by their styles.
- style mixing (training): with probability `mixing_prob` the layers after a random crossover get
  the w of a second z, so neighbouring layers cannot rely on sharing one style.
- truncation: w ← w_avg + psi·(w − w_avg); w_avg is an EMA of the mapping's outputs over training
  (a buffer, so it is saved in the checkpoint). psi = 0 draws the "mean image" for every z.
- equalised learning rate: weights are stored as N(0, 1) / m and used as m · w / sqrt(fan_in), so
  an Adam step moves every layer by the same share of its scale, m times optim.lr. StyleGAN2
  trains at lr 0.0025; the GAN task's lr is DCGAN's 2e-4 (for weights of std 0.02, a far larger
  share), so `lr_multiplier` (m) sets this generator's pace without a learning rate of its own:
  m = 10 is StyleGAN2's, but against our DCGAN discriminator at 2e-4 it outran it and collapsed to a
  few digits on MNIST; m = 3 (the default) did not. The mapping learns 100× slower still (×0.01), as
  in the paper.

Sizes as the DCGAN (16, 20, 24, 28, 32): the constant is size/4 and two ×2 upsamplings (bilinear)
reach the image size, so 28×28 MNIST needs no padding. The output goes through a Tanh, as the DCGAN's
(`output="linear"` is the paper's, clamped to [-1, 1] when drawn: on MNIST its background never
reached black, FID 130 against tanh's 16.6 at 200 CPU-s). Conditional: the label's embedding is
concatenated to z before the mapping (StyleGAN2-ADA), so it reaches every layer through w.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mimicry.errors import MimicryError
from mimicry.models.conditional_norm import check_labels
from mimicry.models.dcgan import check_image_size

LRELU_GAIN = math.sqrt(2)  # keeps the variance of a leaky ReLU's output at that of its input


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate: w ~ N(0, 1) / lr_multiplier, used as w · lr_multiplier / sqrt(fan_in)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_multiplier: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier))
        self.weight_gain, self.bias_gain = lr_multiplier / math.sqrt(in_features), lr_multiplier
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activate else x


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True) -> Tensor:
    """Convolve each image with the weight scaled by its own styles (B, C_in); with `demodulate`,
    divide each output channel by the norm of its scaled weights, so unit-variance input gives
    unit-variance output. Written as scale → shared conv → rescale, which is the same as the
    per-image weights w'_{b,o,i,k} = s_{b,i} w_{o,i,k} / ||s_b w_o|| but needs no grouped conv;
    ||s_b w_o||² = Σ_i s_{b,i}² Σ_k w_{o,i,k}² is one small matmul."""
    kernel = weight.shape[-1]
    x = F.conv2d(x * styles[:, :, None, None], weight, padding=kernel // 2)
    if demodulate:
        squared_norms = styles.pow(2) @ weight.pow(2).sum(dim=(2, 3)).T  # (B, C_out)
        x = x * torch.rsqrt(squared_norms + 1e-8)[:, :, None, None]
    return x


class StyleConv(nn.Module):
    """(×2 upsampling) → modulated 3×3 conv → + scaled noise → + bias → leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, upsample: bool = False,
                 lr_multiplier: float = 1.0):
        super().__init__()
        self.upsample, self.lr_multiplier = upsample, lr_multiplier
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0, lr_multiplier=lr_multiplier)  # styles start at 1
        # Demodulation divides out the weight's scale, so storing it at 1/m is all the equalised lr needs here.
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))  # starts without noise; learns how much to use
        self.register_buffer("fixed_noise", torch.randn(1, 1, resolution, resolution))  # eval mode's noise

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = modulated_conv2d(x, self.weight, self.affine(w), demodulate=True)
        noise = torch.randn_like(x[:, :1]) if self.training else self.fixed_noise
        x = x + self.lr_multiplier * (self.noise_strength * noise + self.bias[None, :, None, None])
        return F.leaky_relu(x, 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1×1 conv to the image channels, without demodulation (colours keep their scale)."""

    def __init__(self, in_channels: int, channels: int, w_dim: int, lr_multiplier: float = 1.0):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0, lr_multiplier=lr_multiplier)
        self.weight = nn.Parameter(torch.randn(channels, in_channels, 1, 1) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.lr_multiplier = lr_multiplier
        self.style_gain = lr_multiplier / math.sqrt(in_channels)  # the equalised-lr gain, applied to the styles

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.style_gain
        rgb = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return rgb + self.lr_multiplier * self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    """The convs of one resolution and its toRGB; the first block starts from the learned constant."""

    def __init__(self, in_channels: int, out_channels: int, channels: int, w_dim: int, resolution: int, first: bool,
                 lr_multiplier: float):
        super().__init__()
        convs = [] if first else [StyleConv(in_channels, out_channels, w_dim, resolution, True, lr_multiplier)]
        convs.append(StyleConv(out_channels, out_channels, w_dim, resolution, False, lr_multiplier))
        self.convs = nn.ModuleList(convs)
        self.to_rgb = ToRGB(out_channels, channels, w_dim, lr_multiplier)


class StyleGANGenerator(nn.Module):
    """z (and a label) → w → image (B, C, size, size); `truncation` = psi in W, used when drawing."""

    truncation_space = "w"  # the GAN task passes `truncation` here instead of truncating z

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 32, w_dim: int = 64,
                 mapping_layers: int = 2, mixing_prob: float = 0.9, w_avg_beta: float = 0.995,
                 lr_multiplier: float = 3.0, num_classes: int = 0, output: str = "tanh"):
        super().__init__()
        check_image_size(image_size, model="stylegan")
        if output not in ("linear", "tanh"):
            raise MimicryError(f"model.generator.output={output!r}: linear (the paper's) or tanh (the DCGAN's)")
        self.output = output
        if not 0.0 <= mixing_prob <= 1.0:
            raise MimicryError(f"model.generator.mixing_prob={mixing_prob}: give a probability in [0, 1]")
        self.latent_dim, self.num_classes, self.w_dim = latent_dim, num_classes, w_dim
        self.mixing_prob, self.w_avg_beta = mixing_prob, w_avg_beta

        # Mapping network: normalised z (and label embedding) → w.
        self.label_embedding = EqualLinear(num_classes, w_dim, lr_multiplier=lr_multiplier) if num_classes else None
        dims = [latent_dim + (w_dim if num_classes else 0)] + [w_dim] * mapping_layers
        self.mapping = nn.Sequential(*[EqualLinear(a, b, lr_multiplier=0.01 * lr_multiplier, activate=True)
                                       for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))  # EMA of w over training: the centre of truncation

        # Synthesis network: constant at size/4, then size/2 and size; 4×, 2×, 1× width channels.
        sizes, widths = [image_size // 4, image_size // 2, image_size], [4 * width, 2 * width, width]
        self.const_gain = lr_multiplier
        self.const = nn.Parameter(torch.randn(widths[0], sizes[0], sizes[0]) / lr_multiplier)
        self.blocks = nn.ModuleList(SynthesisBlock(widths[max(i - 1, 0)], widths[i], channels, w_dim, sizes[i],
                                                   first=i == 0, lr_multiplier=lr_multiplier) for i in range(3))
        self.num_ws = sum(len(block.convs) for block in self.blocks) + 1  # one w per conv, one for the last toRGB
        # Coarse styles act below the full resolution; fine styles (the rest) at the image size itself.
        self.coarse_layers = sum(len(block.convs) for block in self.blocks[:-1])

    def map(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z (B, latent_dim) → w (B, w_dim)."""
        x = normalize_2nd_moment(z)
        if self.label_embedding is not None:
            one_hot = F.one_hot(labels, self.num_classes).to(z.dtype)
            x = torch.cat([x, normalize_2nd_moment(self.label_embedding(one_hot))], dim=1)
        return self.mapping(x)

    def synthesize(self, ws: Tensor) -> Tensor:
        """ws (B, num_ws, w_dim): one w per layer → images. Each block's toRGB reads the w of the next conv."""
        x = (self.const * self.const_gain)[None].expand(ws.shape[0], -1, -1, -1)
        image, layer = None, 0
        for block in self.blocks:
            for conv in block.convs:
                x = conv(x, ws[:, layer])
                layer += 1
            rgb = block.to_rgb(x, ws[:, layer])
            image = rgb if image is None else F.interpolate(image, scale_factor=2, mode="bilinear",
                                                            align_corners=False) + rgb
        return torch.tanh(image) if self.output == "tanh" else image

    def truncate(self, ws: Tensor, psi: float) -> Tensor:
        """Pull every w towards the average: psi = 1 leaves it, psi = 0 gives w_avg for every z."""
        if not 0.0 <= psi <= 1.0:
            raise MimicryError(f"truncation={psi:g}: model=stylegan truncates in W with psi in [0, 1] "
                               f"(1 = no truncation, 0 = the mean image for every z)")
        return self.w_avg.lerp(ws, psi)

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation: float | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        w = self.map(z, labels)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if self.training and self.mixing_prob > 0 and torch.rand(()) < self.mixing_prob:
            # Style mixing regularisation: after a random crossover, the layers follow a second z.
            crossover = int(torch.randint(1, self.num_ws, ()))
            ws[:, crossover:] = self.map(torch.randn_like(z), labels)[:, None]
        if truncation is not None:
            ws = self.truncate(ws, truncation)
        return self.synthesize(ws)

    def mix_styles(self, coarse_z: Tensor, fine_z: Tensor, coarse_labels: Tensor | None = None,
                   fine_labels: Tensor | None = None, truncation: float | None = None) -> Tensor:
        """(R, C, channels, size, size): cell (r, c) takes the coarse styles of coarse_z[r] and the
        fine styles of fine_z[c], as in the StyleGAN paper's style-mixing figure."""
        coarse, fine = self.map(coarse_z, coarse_labels), self.map(fine_z, fine_labels)
        rows, columns = len(coarse), len(fine)
        ws = torch.cat([coarse[:, None, None].expand(-1, columns, self.coarse_layers, -1),
                        fine[None, :, None].expand(rows, -1, self.num_ws - self.coarse_layers, -1)], dim=2)
        ws = ws.reshape(rows * columns, self.num_ws, self.w_dim)
        if truncation is not None:
            ws = self.truncate(ws, truncation)
        images = self.synthesize(ws)
        return images.reshape(rows, columns, *images.shape[1:])
