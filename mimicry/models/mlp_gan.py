"""A small MLP generator/discriminator pair: the fastest GAN, any image size.

Same constructor signatures as the DCGAN pair, so `model=mlp_gan` swaps in with no other change.
"""

from __future__ import annotations

from torch import Tensor, nn

from mimicry.errors import MimicryError
from mimicry.models.conditional_norm import LabelledSequential, batch_norm, check_labels
from mimicry.models.dcgan import apply_spectral_norm, check_norm, label_projection


def _check_size(image_size: int) -> None:
    if image_size < 1:
        raise MimicryError(f"model=mlp_gan needs a positive image size, got {image_size}")


class MLPGenerator(nn.Module):
    """z -> 2 hidden layers (BatchNorm + ReLU) -> pixels -> Tanh; conditional: per-class BatchNorm gain and bias."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int, num_classes: int = 0):
        super().__init__()
        _check_size(image_size)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = LabelledSequential(
            nn.Linear(latent_dim, width),
            batch_norm(width, num_classes, dims=1),
            nn.ReLU(inplace=True),
            nn.Linear(width, 2 * width),
            batch_norm(2 * width, num_classes, dims=1),
            nn.ReLU(inplace=True),
            nn.Linear(2 * width, channels * image_size**2),
            nn.Tanh(),  # images live in [-1, 1]
            nn.Unflatten(1, (channels, image_size, image_size)),
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.net(z, labels)


class MLPDiscriminator(nn.Module):
    """Flattened image -> 2 hidden layers (LeakyReLU) -> one logit per image, shape (B,)."""

    def __init__(
        self, channels: int, image_size: int, width: int, num_classes: int = 0, norm: str = "spectral"
    ):
        super().__init__()
        _check_size(image_size)
        check_norm(norm)
        self.norm = norm
        batch_norm = (lambda dim: nn.BatchNorm1d(dim)) if norm == "batch" else (lambda dim: nn.Identity())
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * image_size**2, 2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * width, width),
            batch_norm(width),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.head = nn.Linear(width, 1)
        self.label_embedding = nn.Embedding(num_classes, width) if num_classes > 0 else None
        if norm == "spectral":
            apply_spectral_norm(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.features(images)
        return self.head(features).squeeze(1) + label_projection(features, labels, self.label_embedding)
