"""model=stylegan: the generator's parts (demodulation, truncation in W, style mixing, the tracked
mean w), lazy R1, and a tiny `mimicry train task=gan model=stylegan` run as a user makes it."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.checkpoints import load_task
from mimicry.errors import MimicryError
from mimicry.losses.gan_losses import NonSaturating, r1_penalty
from mimicry.models.dcgan import DCGANDiscriminator
from mimicry.models.stylegan import StyleGANGenerator, modulated_conv2d
from resume_checks import assert_same_weights

# Lazy R1 on a discriminator without spectral norm, as StyleGAN2 trains; 4 batches x 2 epochs.
TINY_STYLEGAN = [
    "task=gan", "model=stylegan", "model.generator.latent_dim=8", "model.generator.w_dim=8",
    "model.generator.width=4", "model.discriminator.width=8", "model.discriminator.norm=none",
    "loss.r1_gamma=1.0", "loss.r1_every=2", "data.limit=64", "data.batch_size=16", "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1", "task.sample_every_n_steps=4", "task.num_samples=10",
    "task.metrics_every_n_epochs=0",
]


@pytest.fixture(scope="module")
def trained_stylegan(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("stylegan_run")
    run_mimicry(cwd, "train", *TINY_STYLEGAN)
    (run_dir,) = run_dirs(cwd)
    return run_dir


# ---- the generator's parts ---------------------------------------------------------------------
def test_demodulation_keeps_unit_variance_whatever_the_styles():
    torch.manual_seed(0)
    x, weight = torch.randn(4, 32, 40, 40), torch.randn(16, 32, 3, 3)
    styles = torch.rand(4, 32) * 5  # large, uneven styles
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # zero padding thins the border
    demodulated = modulated_conv2d(x, weight, styles, demodulate=True)[inner]
    assert demodulated.std(dim=(0, 2, 3)).numpy() == pytest.approx(np.ones(16), abs=0.05)  # every channel
    # Without demodulation the styles' scale goes straight through: the std is far from 1.
    assert modulated_conv2d(x, weight, styles, demodulate=False)[inner].std() > 10


@pytest.mark.parametrize("size", [16, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_the_discriminator_it_pairs_with(size, channels):
    generator = StyleGANGenerator(latent_dim=8, channels=channels, image_size=size, width=4, w_dim=8)
    images = generator(torch.randn(3, 8))
    assert images.shape == (3, channels, size, size)
    assert generator.num_ws == 6 and generator.coarse_layers == 3  # 1 + 2 convs below full size, 2 at it, last toRGB
    assert DCGANDiscriminator(channels=channels, image_size=size, width=8)(images).shape == (3,)


def test_a_conditional_generator_hears_the_label_through_w():
    torch.manual_seed(0)
    generator = StyleGANGenerator(latent_dim=8, channels=1, image_size=16, width=4, w_dim=8, num_classes=10).eval()
    z = torch.randn(4, 8).repeat(2, 1)
    images = generator(z, torch.arange(8))
    assert (images[:4] - images[4:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # same z, other label, other image
    with pytest.raises(MimicryError, match="class-conditional"):
        generator(z)


def test_sizes_and_options_it_refuses():
    with pytest.raises(MimicryError, match="model=stylegan cannot make 18x18 images"):
        StyleGANGenerator(latent_dim=8, channels=1, image_size=18)
    with pytest.raises(MimicryError, match="mixing_prob=1.5"):
        StyleGANGenerator(latent_dim=8, channels=1, image_size=16, mixing_prob=1.5)
    with pytest.raises(MimicryError, match=r"psi in \[0, 1\]"):
        StyleGANGenerator(latent_dim=8, channels=1, image_size=16).eval()(torch.randn(2, 8), truncation=-0.5)
    with pytest.raises(MimicryError, match="output='relu'"):
        StyleGANGenerator(latent_dim=8, channels=1, image_size=16, output="relu")


def test_tanh_output_is_the_linear_output_squashed():
    torch.manual_seed(0)
    linear = StyleGANGenerator(latent_dim=8, channels=1, image_size=16, width=4, w_dim=8, output="linear").eval()
    squashed = StyleGANGenerator(latent_dim=8, channels=1, image_size=16, width=4, w_dim=8, output="tanh").eval()
    squashed.load_state_dict(linear.state_dict())  # same weights: the output layer is the only difference
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.allclose(squashed(z), torch.tanh(linear(z)), atol=1e-6)
        assert float(squashed(z * 50).abs().max()) <= 1.0


def test_the_mean_w_is_tracked_in_training_and_saved():
    torch.manual_seed(0)
    generator = StyleGANGenerator(latent_dim=8, channels=1, image_size=16, width=4, w_dim=8, w_avg_beta=0.5)
    z = torch.randn(64, 8)
    for _ in range(30):  # an EMA with decay 0.5 reaches the batch mean of w
        generator(z)
    with torch.no_grad():
        assert torch.allclose(generator.w_avg, generator.map(z).mean(dim=0), atol=1e-5)
    assert "w_avg" in generator.state_dict()
    frozen = generator.w_avg.clone()
    generator.eval()(z)  # drawing samples leaves it alone
    assert torch.equal(generator.w_avg, frozen)


def test_style_mixing_in_training_maps_a_second_latent():
    calls = []
    for mixing_prob, expected in [(0.0, 1), (1.0, 2)]:
        generator = StyleGANGenerator(latent_dim=8, channels=1, image_size=16, width=4, w_dim=8, mixing_prob=mixing_prob)
        handle = generator.mapping.register_forward_hook(lambda *_: calls.append(1))
        calls.clear()
        generator(torch.randn(4, 8))
        assert len(calls) == expected
        generator.eval()(torch.randn(4, 8))  # never when drawing
        assert len(calls) == expected + 1
        handle.remove()


def test_mixing_grid_cells_take_coarse_styles_from_rows_and_fine_from_columns():
    torch.manual_seed(0)
    generator = StyleGANGenerator(latent_dim=8, channels=1, image_size=16, width=4, w_dim=8).eval()
    with torch.no_grad():
        for block in generator.blocks:  # let the noise matter too: it must stay the same in every cell
            for conv in block.convs:
                conv.noise_strength.fill_(0.5)
        z = torch.randn(3, 8)
        cells = generator.mix_styles(z, z)
        plain = generator(z)
    for i in range(3):  # the same latent for coarse and fine: the plain image
        assert torch.allclose(cells[i, i], plain[i], atol=1e-5)
    assert (cells[0, 1] - cells[0, 0]).abs().max() > 1e-3 and (cells[1, 0] - cells[0, 0]).abs().max() > 1e-3


# ---- lazy R1 -------------------------------------------------------------------------------------
def test_lazy_r1_acts_on_every_nth_step_scaled_by_n():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1), torch.nn.Flatten(0))
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    full = r1_penalty(critic, real, gamma=2.0).detach()
    lazy = NonSaturating(r1_gamma=2.0, r1_every=4)
    penalties = [lazy.regularizer(critic, real, fake, d_step=step).detach() for step in range(8)]
    assert [float(p) for p in penalties] == pytest.approx([4 * float(full), 0, 0, 0] * 2, rel=1e-5)
    every_step = NonSaturating(r1_gamma=2.0).regularizer(critic, real, fake, d_step=3).detach()
    assert float(every_step) == pytest.approx(float(full))
    with pytest.raises(MimicryError, match="r1_every=0"):
        NonSaturating(r1_gamma=1.0, r1_every=0)


# ---- a run, as a user makes it ------------------------------------------------------------------
def test_stylegan_run_logs_samples_and_the_style_mixing_grid(trained_stylegan):
    assert summary(trained_stylegan)["status"] == "completed" and summary(trained_stylegan)["steps"] == 8
    events = read_events(trained_stylegan)
    mixing = events["images"]["samples/style_mixing"]
    assert {step for step, _, _ in mixing} == {0, 4, 8}
    assert {step for step, _, _ in events["images"]["samples/fakes"]} == {0, 4, 8}
    pngs = sorted((trained_stylegan / "samples").glob("style_mixing_step_*.png"))
    assert [p.name for p in pngs] == [f"style_mixing_step_{s:07d}.png" for s in (0, 4, 8)]
    # 5 rows x 6 columns of mixes, plus the source row and column: 16px cells, 1px lines, zoomed 3x
    assert Image.open(pngs[-1]).size == (3 * (7 * 17 + 1), 3 * (6 * 17 + 1))
    assert mixing[-1][1:] == Image.open(pngs[-1]).size  # the same grid in TensorBoard


def test_truncation_zero_draws_the_mean_w_image_for_every_z(trained_stylegan):
    task = load_task(trained_stylegan)  # the checkpoint, read as data
    generator = task.sample_generator()
    assert generator.w_avg.abs().sum() > 0  # tracked during training, back from the checkpoint
    images = task.draw(6, seed=1, truncation=0.0)
    mean_image = (generator.synthesize(generator.w_avg.expand(1, generator.num_ws, -1)).clamp(-1, 1) + 1) / 2
    assert torch.allclose(images, mean_image.expand_as(images), atol=1e-5)
    assert (task.draw(6, seed=1) - images).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # psi = 1: each z its own


def test_sample_draws_truncated_grids_strips_and_mixing_grid(trained_stylegan, tmp_path):
    out = tmp_path / "samples"
    run_mimicry(tmp_path, "sample", str(trained_stylegan), "n=12", "truncation=0.7", "seed=3", "format=both",
                f"out={out}", env={"MIMICRY_DATA": str(tmp_path / "nowhere")})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["interpolation_seed3_trunc0.7.png", "samples_seed3_trunc0.7.npz", "samples_seed3_trunc0.7.png",
                     "style_mixing_seed3_trunc0.7.png"]
    first = np.load(out / "samples_seed3_trunc0.7.npz")["images"]
    run_mimicry(tmp_path, "sample", str(trained_stylegan), "n=12", "seed=3", "truncation=0", "format=npz", f"out={out}")
    mean_images = np.load(out / "samples_seed3_trunc0.npz")["images"]
    assert (mean_images == mean_images[:1]).all() and not (first == first[:1]).all()

    result = run_mimicry(tmp_path, "sample", str(trained_stylegan), "truncation=1.5", f"out={out}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output and "psi in [0, 1]" in output


def test_resume_of_a_moved_stylegan_run_continues_it(trained_stylegan, tmp_path):
    straight = tmp_path / "straight"
    straight.mkdir()
    run_mimicry(straight, "train", *TINY_STYLEGAN, "trainer.max_epochs=3")
    moved = shutil.copytree(trained_stylegan, tmp_path / "moved")  # a run folder sent to someone else
    run_mimicry(tmp_path, "train", f"resume={moved}", "trainer.max_epochs=3")
    assert summary(moved)["status"] == "completed" and summary(moved)["steps"] == 12
    # Networks, EMA generator, its tracked mean w, fixed noise, optimizers and RNG came back.
    assert_same_weights(moved, run_dirs(straight)[0], atol=1e-4)

