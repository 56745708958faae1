"""DCGAN-style generator and discriminator for small images (16x16 to 32x32).

The generator upsamples twice (x4 in all) from a (size/4)x(size/4) seed, so any image size that
is a multiple of 4 between 16 and 32 works: 16, 20, 24, 28, 32. Class-conditional when
num_classes > 0: every BatchNorm of G has a gain and bias per class (z stays G's only input, so
it still decides the stroke, slant and shape within a class); D is a projection discriminator
(Miyato & Koyama 2018): logit = head(h) + <embed(y), h>.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from mimicry.errors import MimicryError
from mimicry.models.conditional_norm import LabelledSequential, batch_norm, check_labels

IMAGE_SIZES = (16, 20, 24, 28, 32)
DISCRIMINATOR_NORMS = ("spectral", "none", "batch")


def check_image_size(image_size: int, sizes: tuple[int, ...] = IMAGE_SIZES, model: str = "dcgan") -> None:
    if image_size not in sizes:
        raise MimicryError(
            f"model={model} cannot make {image_size}x{image_size} images; it takes image sizes "
            f"{', '.join(map(str, sizes))}. Set data.image_size to one of them (or use model=mlp_gan)."
        )


def check_norm(norm: str) -> None:
    if norm not in DISCRIMINATOR_NORMS:
        raise MimicryError(f"unknown discriminator norm {norm!r}; choose one of {', '.join(DISCRIMINATOR_NORMS)}")


class DCGANGenerator(nn.Module):
    """z -> Linear -> 2x [ConvTranspose 4/2/1 + BatchNorm + ReLU] -> Conv3x3 -> Tanh.

    Conditional: the three BatchNorms are class-conditional (per-class gain and bias).
    """

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int, num_classes: int = 0):
        super().__init__()
        check_image_size(image_size)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.seed_size = image_size // 4
        self.project = LabelledSequential(
            nn.Linear(latent_dim, 4 * width * self.seed_size**2, bias=False),
            nn.Unflatten(1, (4 * width, self.seed_size, self.seed_size)),
            batch_norm(4 * width, num_classes),
            nn.ReLU(inplace=True),
        )
        self.upsample = LabelledSequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False),  # size/4 -> size/2
            batch_norm(2 * width, num_classes),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),  # size/2 -> size
            batch_norm(width, num_classes),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, 1, 1),
            nn.Tanh(),  # images live in [-1, 1]
        )
        self.apply(_dcgan_init)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.upsample(self.project(z, labels), labels)


class DCGANDiscriminator(nn.Module):
    """Image -> 3 strided/plain convs with LeakyReLU -> one logit per image, shape (B,)."""

    def __init__(
        self, channels: int, image_size: int, width: int, num_classes: int = 0, norm: str = "spectral",
        minibatch_std: int = 0,
    ):
        super().__init__()
        check_image_size(image_size)
        check_norm(norm)
        if not isinstance(minibatch_std, int) or minibatch_std < 0 or minibatch_std == 1:
            raise MimicryError(f"model.discriminator.minibatch_std={minibatch_std!r}: give a group size ≥ 2 "
                               f"(StyleGAN's is 4), or 0 for none")
        self.norm = norm

        def block(c_in: int, c_out: int, kernel: int, stride: int, first: bool = False) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, padding=1)]
            if norm == "batch" and not first:  # DCGAN: no BatchNorm on the input layer
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        # minibatch_std: the last conv also sees how much the images of a group differ (StyleGAN), so
        # a generator that draws one image for every z is easy to call fake
        mbstd = [MinibatchStd(minibatch_std)] if minibatch_std else []
        self.features = nn.Sequential(
            *block(channels, width, 4, 2, first=True),  # size -> size/2
            *block(width, 2 * width, 4, 2),  # size/2 -> size/4
            *mbstd,
            *block(2 * width + len(mbstd), 4 * width, 3, 1),  # refine at size/4
            nn.Flatten(),
        )
        feature_dim = 4 * width * (image_size // 4) ** 2
        self.head = nn.Linear(feature_dim, 1)
        # Projection: the label picks a direction in feature space; agreeing with it counts as "real".
        self.label_embedding = nn.Embedding(num_classes, feature_dim) if num_classes > 0 else None
        self.apply(_dcgan_init)
        if norm == "spectral":
            apply_spectral_norm(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.features(images)
        logits = self.head(features).squeeze(1)
        return logits + label_projection(features, labels, self.label_embedding)


class MinibatchStd(nn.Module):
    """StyleGAN's minibatch standard deviation: split the batch into groups of ``group_size`` (the largest
    divisor of the batch up to it), take each feature's std over a group, average it to one number per
    group, and append it to every image of the group as one more constant channel."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        group = next(g for g in range(min(self.group_size, n), 0, -1) if n % g == 0)
        grouped = x.reshape(group, n // group, *x.shape[1:])                   # (G, N/G, C, H, W)
        spread = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N/G,)
        return torch.cat([x, spread.repeat(group)[:, None, None, None].expand(n, 1, h, w)], dim=1)


def label_projection(features: Tensor, labels: Tensor | None, embedding: nn.Module | None) -> Tensor:
    """Projection discriminator's class term <embed(y), features>; zero when unconditional."""
    if embedding is None:
        return features.new_zeros(features.shape[0])
    if labels is None:
        raise MimicryError("this discriminator is class-conditional: pass labels with the images")
    return (embedding(labels) * features).sum(dim=1)


def apply_spectral_norm(network: nn.Module) -> None:
    """Spectral norm on every weight layer, added after initialisation so its power iteration
    starts from the final weights (re-initialising afterwards would leave sigma stale and huge)."""
    for module in [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]:
        spectral_norm(module)


def _dcgan_init(module: nn.Module) -> None:
    # DCGAN paper: weights from N(0, 0.02); BatchNorm scale from N(1, 0.02). The projection
    # discriminator's class embeddings keep N(0, 1) (spectral norm rescales them); the
    # class-conditional BatchNorm sets its own gains (1) and biases (0).
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
