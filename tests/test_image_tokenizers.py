"""Image tokenizers: round trips (pixels exact up to quantization, patches within codebook error)."""

from __future__ import annotations

import io

import pytest
import torch

from mimicry.data.image_tokenizers import PatchTokenizer, PixelTokenizer, tokenizer_from_state
from mimicry.data.images import DigitsDataModule
from mimicry.errors import MimicryError


@pytest.fixture(scope="module")
def digit_images() -> torch.Tensor:
    return DigitsDataModule(value_range="unit").train_images()


@pytest.fixture(scope="module")
def patches(digit_images: torch.Tensor) -> PatchTokenizer:
    return PatchTokenizer(patch_size=4, codebook_size=64, seed=0).fit(digit_images)


def _through_disk(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_pixel_round_trip_up_to_quantization() -> None:
    tokenizer = PixelTokenizer(levels=16, channels=3)
    images = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer.encode(images)
    assert tokens.shape == (4, tokenizer.tokens_per_image(6)) == (4, 108)
    assert tokens.min() >= 0 and tokens.max() < tokenizer.vocab_size
    restored = tokenizer.decode(tokens, 6)
    assert (restored - images).abs().max() <= 0.5 / 15 + 1e-6
    assert torch.equal(tokenizer.encode(restored), tokens)  # quantized images survive exactly


def test_pixel_order_is_raster_with_channels_interleaved() -> None:
    tokenizer = PixelTokenizer(levels=256, channels=3)
    image = torch.arange(12, dtype=torch.float32).view(1, 3, 2, 2) / 255  # channel-major values 0..11
    # pixel (0,0) has r,g,b = 0,4,8; pixel (0,1) has 1,5,9; ...
    assert tokenizer.encode(image).tolist() == [[0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]]


def test_binarized_pixels() -> None:
    tokenizer = PixelTokenizer(levels=2)
    tokens = tokenizer.encode(torch.tensor([0.0, 0.49, 0.51, 1.0]).view(1, 1, 2, 2))
    assert tokens.tolist() == [[0, 0, 1, 1]]


def test_pixel_wrong_channels() -> None:
    with pytest.raises(MimicryError, match="channel"):
        PixelTokenizer(levels=4, channels=1).encode(torch.rand(1, 3, 4, 4))
    with pytest.raises(MimicryError, match="channels"):
        PixelTokenizer(levels=4, channels=1).check(channels=3, image_size=4)


def test_patch_round_trip_within_codebook_error(patches: PatchTokenizer, digit_images: torch.Tensor) -> None:
    images = digit_images[:200]
    tokens = patches.encode(images)
    assert tokens.shape == (200, patches.tokens_per_image(16)) == (200, 16)
    assert tokens.max() < patches.vocab_size
    restored = patches.decode(tokens, 16)
    error = ((restored - images) ** 2).mean().item()
    assert error == pytest.approx(patches.reconstruction_error(images), rel=1e-5)
    mean_patch_error = ((images - images.mean()) ** 2).mean().item()
    assert error < 0.25 * mean_patch_error  # the codebook captures most of the variance
    # Prototypes map back to themselves (or to a prototype equal to them within the product's rounding).
    assert torch.allclose(patches.decode(patches.encode(restored), 16), restored, atol=1e-3)


def test_patch_codes_are_nearest_prototypes(patches: PatchTokenizer, digit_images: torch.Tensor) -> None:
    image = digit_images[:1]
    tokens = patches.encode(image)[0]
    first_patch = image[0, :, :4, :4].reshape(-1)
    distances = ((patches.codebook - first_patch) ** 2).sum(dim=1)
    # The id is chosen by a matrix product: near-ties may resolve either way, within its rounding.
    assert distances[tokens[0]].item() == pytest.approx(distances.min().item(), abs=1e-4)


def test_patch_fit_is_deterministic(patches: PatchTokenizer, digit_images: torch.Tensor) -> None:
    again = PatchTokenizer(patch_size=4, codebook_size=64, seed=0).fit(digit_images)
    assert torch.allclose(again.codebook, patches.codebook)


def test_patch_incompatible_sizes(patches: PatchTokenizer) -> None:
    with pytest.raises(MimicryError, match="not divisible"):
        patches.check(channels=1, image_size=18)
    with pytest.raises(MimicryError, match="not divisible"):
        patches.encode(torch.rand(1, 1, 18, 18))
    with pytest.raises(MimicryError, match="channel"):
        patches.check(channels=3, image_size=16)
    with pytest.raises(MimicryError, match="fit"):
        PatchTokenizer(patch_size=2, codebook_size=8).encode(torch.rand(1, 1, 4, 4))


def test_state_round_trip_weights_only(patches: PatchTokenizer, digit_images: torch.Tensor) -> None:
    for tokenizer in (PixelTokenizer(levels=4, channels=1), patches):
        loaded = tokenizer_from_state(_through_disk(tokenizer.state()))
        assert type(loaded) is type(tokenizer) and loaded.vocab_size == tokenizer.vocab_size
        assert torch.equal(loaded.encode(digit_images[:10]), tokenizer.encode(digit_images[:10]))
    with pytest.raises(MimicryError, match="unknown tokenizer"):
        tokenizer_from_state({"kind": "wavelets"})
