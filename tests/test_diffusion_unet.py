"""The UNet denoiser: shapes, the time and class inputs, and clear errors for sizes it cannot take."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mimicry.errors import MimicryError
from mimicry.models.unet import UNet, timestep_embedding

CONF = str((__import__("pathlib").Path(__file__).resolve().parents[1] / "conf").resolve())


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised output layers make an untrained UNet ignore its inputs; perturb every weight."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("size,mult", [(16, (1, 2, 2)), (28, (1, 2, 2)), (8, (1, 2)), (12, (1,))])
def test_output_has_the_input_shape(size, mult):
    torch.manual_seed(0)
    model = UNet(channels=3, image_size=size, width=16, channel_mult=mult, blocks_per_level=2)
    x = torch.randn(2, 3, size, size)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_untrained_output_is_zero_so_every_objective_starts_calm():
    model = UNet(channels=1, image_size=16, width=16)
    assert torch.equal(model(torch.randn(2, 1, 16, 16), torch.tensor([3, 500])), torch.zeros(2, 1, 16, 16))


def test_noise_level_and_class_change_the_output():
    torch.manual_seed(0)
    model = _randomize(UNet(channels=1, image_size=16, width=16, num_classes=10))
    x = torch.randn(1, 1, 16, 16)
    t = torch.tensor([100])
    base = model(x, t, torch.tensor([3]))
    assert not torch.allclose(base, model(x, torch.tensor([900]), torch.tensor([3])), atol=1e-4)
    assert not torch.allclose(base, model(x, t, torch.tensor([4])), atol=1e-4)
    # no labels = the "null" class (index num_classes), the unconditional half of guidance
    assert torch.allclose(model(x, t), model(x, t, torch.tensor([10])))


def test_each_image_is_denoised_on_its_own():
    """GroupNorm normalizes per image: a batch neighbour must not change an image's output."""
    torch.manual_seed(0)
    model = _randomize(UNet(channels=1, image_size=16, width=16)).eval()
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([10, 500, 900])
    alone = model(x[:1], t[:1])
    assert torch.allclose(model(x, t)[:1], alone, atol=1e-5)


def test_timestep_embedding_is_distinct_per_level():
    emb = timestep_embedding(torch.arange(1000), 32)
    assert emb.shape == (1000, 32)
    distances = torch.cdist(emb[:-1, None], emb[1:, None]).diagonal()
    assert distances.min() > 1e-3


def test_an_image_size_that_cannot_be_halved_is_refused_with_the_fix():
    with pytest.raises(MimicryError, match=r"30×30 does not halve evenly \(30 → 15 → 7.5\).*2 levels"):
        UNet(channels=1, image_size=30, channel_mult=(1, 2, 2))


def test_widths_not_divisible_by_groups_are_refused_with_the_fix():
    with pytest.raises(MimicryError, match=r"model.groups=8.*\[12, 24, 24\].*multiple of 8"):
        UNet(channels=1, image_size=16, width=12)
    with pytest.raises(MimicryError, match="attention_heads=3"):
        UNet(channels=1, image_size=16, width=16, attention_heads=3)


@pytest.mark.parametrize("preset,size", [("unet", 16), ("unet_mnist", 28), ("unet_large", 32)])
def test_presets_build_for_their_image_sizes(preset, size):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="train", overrides=[f"model={preset}"])
    if preset == "unet_large":  # 36M weights: check the shape only, skip the forward pass
        model = instantiate(cfg.model, channels=3, image_size=size)
        assert sum(p.numel() for p in model.parameters()) > 20e6
        return
    model = instantiate(cfg.model, channels=1, image_size=size)
    assert model(torch.randn(1, 1, size, size), torch.tensor([5])).shape == (1, 1, size, size)
