"""GAN networks: shapes, conditioning, bad sizes; the forgery map; the generator's EMA."""

import pytest
import torch
from torch import nn

from mimicry.errors import MimicryError
from mimicry.metrics.forgery_map import forgery_heatmap, forgery_map
from mimicry.models.conditional_norm import ClassConditionalBatchNorm
from mimicry.models.dcgan import DCGANDiscriminator, DCGANGenerator, MinibatchStd
from mimicry.models.ema import exponential_moving_average, warmup_decay
from mimicry.models.mlp_gan import MLPDiscriminator, MLPGenerator

PAIRS = [(DCGANGenerator, DCGANDiscriminator), (MLPGenerator, MLPDiscriminator)]


@pytest.mark.parametrize("size", [16, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("pair", PAIRS, ids=["dcgan", "mlp"])
def test_shapes(pair, channels, size):
    generator_cls, discriminator_cls = pair
    generator = generator_cls(latent_dim=8, channels=channels, image_size=size, width=8)
    discriminator = discriminator_cls(channels=channels, image_size=size, width=8)
    fakes = generator(torch.randn(3, 8))
    assert fakes.shape == (3, channels, size, size)
    assert fakes.abs().max() <= 1.0  # Tanh: the [-1, 1] range of signed image data
    assert discriminator(fakes).shape == (3,)


@pytest.mark.parametrize("norm", ["spectral", "none", "batch"])
@pytest.mark.parametrize("pair", PAIRS, ids=["dcgan", "mlp"])
def test_conditional_models_use_the_labels(pair, norm):
    generator_cls, discriminator_cls = pair
    torch.manual_seed(0)
    generator = generator_cls(latent_dim=8, channels=1, image_size=16, width=8, num_classes=10).eval()
    discriminator = discriminator_cls(channels=1, image_size=16, width=8, num_classes=10, norm=norm).eval()
    # Per-class BatchNorm gains start at 1 and biases at 0 (every class alike); give each class its
    # own, as training does.
    conditional_norms = [m for m in generator.modules() if isinstance(m, ClassConditionalBatchNorm)]
    assert len(conditional_norms) == (3 if generator_cls is DCGANGenerator else 2)
    for norm_layer in conditional_norms:
        nn.init.normal_(norm_layer.gain.weight, 1.0, 0.5)
        nn.init.normal_(norm_layer.bias.weight, 0.0, 0.5)
    z = torch.randn(4, 8).repeat(2, 1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    fakes = generator(z, labels)
    assert fakes.shape == (8, 1, 16, 16)
    assert (fakes[:4] - fakes[4:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # same z, other label, other image
    logits = discriminator(fakes[:4].repeat(2, 1, 1, 1), labels)
    assert logits.shape == (8,)
    assert not torch.allclose(logits[:4], logits[4:])
    with pytest.raises(MimicryError, match="labels"):
        generator(z)


@pytest.mark.parametrize("size", [8, 18, 30, 64])
def test_dcgan_refuses_sizes_it_cannot_make(size):
    with pytest.raises(MimicryError, match="16, 20, 24, 28, 32"):
        DCGANGenerator(latent_dim=8, channels=1, image_size=size, width=8)
    with pytest.raises(MimicryError, match="16, 20, 24, 28, 32"):
        DCGANDiscriminator(channels=1, image_size=size, width=8)


def test_minibatch_std_reads_how_much_a_group_differs():
    layer = MinibatchStd(group_size=4)
    same = torch.randn(1, 3, 5, 5).repeat(8, 1, 1, 1)  # one image for every z: nothing to tell apart
    out = layer(same)
    assert out.shape == (8, 4, 5, 5) and torch.equal(out[:, :3], same)
    assert float(out[:, 3].abs().max()) < 1e-3
    x = torch.tensor([0.0, 2.0]).reshape(2, 1, 1, 1)  # one group of two: std 1 (population std)
    assert MinibatchStd(4)(x)[:, 1].flatten().tolist() == pytest.approx([1.0, 1.0])
    for n in range(1, 8):  # any batch: the group is the largest divisor up to group_size
        assert layer(torch.randn(n, 2, 3, 3)).shape == (n, 3, 3, 3)
    plain, with_std = DCGANDiscriminator(1, 16, 8), DCGANDiscriminator(1, 16, 8, minibatch_std=4)
    assert with_std(torch.randn(6, 1, 16, 16)).shape == (6,)
    assert plain(torch.randn(6, 1, 16, 16)).shape == (6,) and not any(isinstance(m, MinibatchStd) for m in plain.modules())
    with pytest.raises(MimicryError, match="minibatch_std=1"):
        DCGANDiscriminator(1, 16, 8, minibatch_std=1)


def test_unknown_norm_is_refused():
    with pytest.raises(MimicryError, match="spectral, none, batch"):
        DCGANDiscriminator(channels=1, image_size=16, width=8, norm="layer")


def test_spectral_norm_bounds_the_discriminator_slope():
    torch.manual_seed(0)
    discriminator = DCGANDiscriminator(channels=1, image_size=16, width=8, norm="spectral")
    for _ in range(20):  # let power iteration converge
        discriminator(torch.randn(4, 1, 16, 16))
    discriminator.eval()
    grads = forgery_map(discriminator, torch.randn(16, 1, 16, 16), verdict=lambda logits: logits)
    # Each layer is 1-Lipschitz (LeakyReLU too), so is the whole network, up to power-iteration error.
    assert grads.flatten(1).norm(dim=1).max() < 1.1


class ConstantDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(3.0))

    def forward(self, images):
        return self.bias.expand(images.shape[0])


class LinearDiscriminator(nn.Module):
    def __init__(self, pixels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-1, 1, pixels))

    def forward(self, images):
        return images.flatten(1) @ self.weight


def test_forgery_map_has_the_image_shape_and_is_zero_for_a_constant_discriminator():
    fakes = torch.randn(5, 3, 16, 16)
    grads = forgery_map(ConstantDiscriminator(), fakes)
    assert grads.shape == fakes.shape
    assert grads.abs().max() == 0.0
    grid, mean_norm = forgery_heatmap(grads)
    assert mean_norm == 0.0
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1


def test_forgery_map_is_the_gradient_of_the_verdict_and_touches_no_parameter():
    torch.manual_seed(0)
    discriminator = LinearDiscriminator(16).train()
    fakes = torch.randn(4, 1, 4, 4)
    grads = forgery_map(discriminator, fakes)  # d sigmoid(x.w) / dx = sigmoid'(x.w) w
    probability = torch.sigmoid(fakes.flatten(1) @ discriminator.weight.detach())
    expected = (probability * (1 - probability))[:, None] * discriminator.weight.detach()
    assert torch.allclose(grads.flatten(1), expected, atol=1e-6)
    assert discriminator.weight.grad is None and discriminator.training


def test_forgery_map_fades_when_the_discriminator_is_sure():
    discriminator = LinearDiscriminator(16)
    fakes = torch.ones(4, 1, 4, 4)
    with torch.no_grad():
        discriminator.weight.fill_(-5.0)  # D(fake) = -80: certainly fake
    _, sure = forgery_heatmap(forgery_map(discriminator, fakes))
    with torch.no_grad():
        discriminator.weight.fill_(0.01)  # D(fake) = 0.16: undecided
    _, unsure = forgery_heatmap(forgery_map(discriminator, fakes))
    assert sure < 1e-20 < unsure


def test_forgery_map_passes_labels_to_a_conditional_discriminator():
    discriminator = DCGANDiscriminator(channels=1, image_size=16, width=8, num_classes=10)
    grads = forgery_map(discriminator, torch.randn(3, 1, 16, 16), torch.tensor([1, 2, 3]))
    assert grads.shape == (3, 1, 16, 16) and grads.abs().sum() > 0


def test_ema_update_math_on_a_toy_module():
    toy = nn.Linear(2, 1)
    with torch.no_grad():
        toy.weight.fill_(1.0)
    ema = exponential_moving_average(toy, decay=0.9, warmup=False)
    assert not any(p.requires_grad for p in ema.parameters())
    ema.update_parameters(toy)  # the first update copies
    assert torch.allclose(ema.module.weight, torch.ones(1, 2))
    expected = 1.0
    for value in [3.0, -1.0, 5.0]:
        with torch.no_grad():
            toy.weight.fill_(value)
        ema.update_parameters(toy)
        expected = 0.9 * expected + 0.1 * value
        assert torch.allclose(ema.module.weight, torch.full((1, 2), expected))


def test_ema_warmup_follows_the_model_closely_at_first():
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.999, 100_000) == 0.999
    toy = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = exponential_moving_average(toy, decay=0.999)
    ema.update_parameters(toy)
    with torch.no_grad():
        toy[0].weight.add_(1.0)
    toy(torch.randn(8, 2))  # moves BatchNorm's running statistics too
    before = ema.module[0].weight.clone()
    ema.update_parameters(toy)
    d = warmup_decay(0.999, 1)
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * toy[0].weight)
    assert torch.allclose(ema.module[1].running_mean, (1 - d) * toy[1].running_mean)
    assert ema.module[1].num_batches_tracked.item() == 1
