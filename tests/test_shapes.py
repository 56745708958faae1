"""data=shapes: coloured shapes drawn from a seed, and the reader that reads their factors back."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.data.shapes import COLOURS, SHAPES, ShapesDataModule, draw_shapes, sizes_for
from mimicry.errors import MimicryError
from mimicry.metrics.shape_reader import describe, read_shapes, share_read


def test_the_same_seed_draws_the_same_distinct_images_with_every_factor():
    images, factors = draw_shapes(600, seed=3)
    again, same = draw_shapes(600, seed=3)
    other, _ = draw_shapes(600, seed=4)
    assert images.shape == (600, 3, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(images, again) and all(torch.equal(factors[k], same[k]) for k in factors)
    assert not torch.equal(images, other)
    assert len(torch.unique(images.flatten(1), dim=0)) == 600  # no image repeats, so no split holds a copy
    assert set(factors["shape"].tolist()) == set(range(len(SHAPES)))
    assert set(factors["colour"].tolist()) == set(range(len(COLOURS)))
    assert torch.bincount(factors["size"])[sizes_for(16)].tolist() == [200, 200, 200]  # sizes in equal shares
    assert torch.equal(factors["label"], factors["shape"] * 6 + factors["colour"])


def test_the_datamodule_gives_colour_images_and_18_classes():
    data = ShapesDataModule(count=300, value_range="unit", batch_size=32)
    spec = data.spec()
    assert spec["channels"] == 3 and spec["num_classes"] == 18 and spec["dataset"] == "shapes"
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (32, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(read_shapes(images).label, labels)  # the labels are the drawn factors
    with pytest.raises(MimicryError, match="at least 8"):
        draw_shapes(10, 0, image_size=6)
    with pytest.raises(MimicryError, match="distinct shape images fit"):
        draw_shapes(10**6, 0)


def test_the_reader_reads_real_shapes_exactly():
    images, factors = draw_shapes(300, seed=1)
    reading = read_shapes(images.float() / 255)
    assert reading.confident.float().mean() >= 0.9
    for name in ("shape", "colour", "size", "x", "y"):
        assert torch.equal(getattr(reading, name).to(factors[name].dtype), factors[name]), name
    assert describe(reading, 0).split(",")[0] == f"{list(COLOURS)[factors['colour'][0]]} {SHAPES[factors['shape'][0]]}"


def test_the_reader_is_not_confident_about_noise_smears_or_the_mean_image():
    images = draw_shapes(300, seed=1)[0].float() / 255
    generator = torch.Generator().manual_seed(0)
    assert share_read(torch.rand(200, 3, 16, 16, generator=generator)) == 0
    assert share_read(images.mean(0, keepdim=True).expand(20, -1, -1, -1)) == 0
    assert share_read(torch.zeros(5, 3, 16, 16)) == 0
    blends = (images[:100] + images[100:200]) / 2  # two shapes in one image: not one drawing
    assert share_read(blends) < 0.2
    lightly_noised = (images[:100] + 0.03 * torch.randn(100, 3, 16, 16, generator=generator)).clamp(0, 1)
    assert share_read(lightly_noised) >= 0.9
    assert share_read(F.avg_pool2d(images[:100], 5, 1, 2)) < 0.5  # heavily blurred: the shape is gone
    with pytest.raises(MimicryError, match="square RGB"):
        read_shapes(torch.zeros(2, 1, 16, 16))


def test_a_gan_trains_on_shapes_and_its_samples_are_read(tmp_path):
    """Any image task takes data=shapes; the metrics then report the share of draws read with confidence."""
    run_mimicry(tmp_path, "train", "task=gan", "data=shapes", "data.count=300", "data.limit=64", "data.batch_size=16",
                "model.generator.latent_dim=8", "model.generator.width=8", "model.discriminator.width=8",
                "trainer.max_epochs=1", "task.sample_every_n_steps=4", "task.num_samples=8",
                "task.metrics_every_n_epochs=1", "task.metrics_samples=32", "task.feature_net.width=8",
                "task.feature_net.steps=10", env={"MIMICRY_FEATURE_NETS": str(tmp_path / "nets")})
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "completed"
    shapes_read = read_events(run_dir)["scalars"]["val/shapes_read"]
    assert shapes_read[-1][1] < 0.5  # four steps of a tiny GAN draw smudges, not shapes
    assert read_events(run_dir)["scalars"]["val/shapes_read_floor"][-1][1] == 1.0  # real training images
