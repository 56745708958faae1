"""Class-conditional BatchNorm: how a conditional generator hears the label without drowning z.

Each BatchNorm of the generator normalises with statistics shared by all classes, then scales and
shifts with a gain and bias *per class* (de Vries et al. 2017; SNGAN's and BigGAN's conditional
generators). The label thus modulates every layer, while z stays the only input, so different z
still give different images of one class. Feeding the label in as a vector concatenated to z
instead let it dominate: every z of a class gave nearly the same image.
"""

from __future__ import annotations

from torch import Tensor, nn

from mimicry.errors import MimicryError


class ClassConditionalBatchNorm(nn.Module):
    """BatchNorm without its own affine, then gain[y] * x + bias[y] (gains start at 1, biases at 0)."""

    def __init__(self, channels: int, num_classes: int, dims: int = 2):
        super().__init__()
        batch_norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
        self.norm = batch_norm(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)  # broadcast over the pixels
        return self.norm(x) * self.gain(labels).view(shape) + self.bias(labels).view(shape)


class LabelledSequential(nn.Sequential):
    """nn.Sequential that hands the labels to the class-conditional layers (and only to them)."""

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, labels) if isinstance(layer, ClassConditionalBatchNorm) else layer(x)
        return x


def batch_norm(channels: int, num_classes: int, dims: int = 2) -> nn.Module:
    """A plain BatchNorm for an unconditional generator (its checkpoints keep their names), else the
    class-conditional one."""
    if num_classes > 0:
        return ClassConditionalBatchNorm(channels, num_classes, dims)
    return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)


def check_labels(labels: Tensor | None, num_classes: int) -> None:
    """A conditional generator needs one label per z; an unconditional one ignores labels."""
    if num_classes > 0 and labels is None:
        raise MimicryError("this generator is class-conditional: pass labels (task.conditional=true needs labelled data)")
