"""task=autoencoder: the image imitates itself through a bottleneck (vqvae codes, kl_autoencoder latents)."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.checkpoints import find_checkpoint, load_task_and_config
from mimicry.errors import MimicryError
from mimicry.models.kl_autoencoder import KLAutoencoder
from mimicry.models.vqvae import VQVAE
from mimicry.probes.codebook import mean_patches
from mimicry.tasks.autoencoder import code_statistics

# Small enough that a run takes seconds on one core: 60 steps of an 8-wide coder on 480 shapes.
TINY_AE = [
    "task=autoencoder", "data=shapes", "data.count=600", "data.batch_size=32", "model.width=8",
    "trainer.max_epochs=4", "trainer.log_every_n_steps=5", "optim.warmup_steps=5", "optim.lr=3e-3",
    "task.sample_every_n_steps=30", "task.num_samples=8",
    "task.metrics_every_n_epochs=4", "task.metrics_samples=64", "task.feature_net.width=8", "task.feature_net.steps=10",
]


@pytest.fixture(scope="module")
def trained_vqvae(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("vqvae_run")
    run_mimicry(cwd, "train", *TINY_AE, env={"MIMICRY_FEATURE_NETS": str(cwd / "nets")})
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_vqvae_reconstructs_far_better_than_the_mean_image_and_uses_its_codebook(trained_vqvae):
    record = summary(trained_vqvae)
    metrics = record["metrics"]
    assert record["status"] == "completed" and record["steps"] == 60
    # learning nothing (predicting the mean training image) scores val/mean_image_mse
    assert metrics["val/reconstruction"] < 0.7 * metrics["val/mean_image_mse"], metrics
    assert metrics["val/codebook_usage"] >= 0.5 and metrics["val/codebook_perplexity"] >= 20, metrics
    assert 0 < metrics["val/commitment"] < metrics["val/reconstruction"], metrics  # computed in validation too
    assert 0 <= metrics["val/shapes_read"] <= 1 and "val/fid" in metrics  # reconstructions scored (rFID)

    events = read_events(trained_vqvae)
    for tag in ("train/reconstruction", "train/commitment", "train/codebook_usage", "train/codebook_perplexity"):
        assert tag in events["scalars"], sorted(events["scalars"])
    assert {step for step, _, _ in events["images"]["samples/reconstructions"]} == {0, 30, 60}
    assert "samples/random_codes" in events["images"]
    assert "codebook" in events["layout"]["autoencoder"]


def test_the_checkpoint_loads_as_data_and_encodes_to_codes(trained_vqvae):
    task, _ = load_task_and_config(find_checkpoint(trained_vqvae, "best"))
    assert isinstance(task.model, VQVAE) and bool(task.model.quantizer._codebook.initted)
    images = task.shown_images[:4]
    codes = task.encode(images)
    assert codes.shape == (4, 4, 4) and codes.dtype == torch.long and codes.max() < 128
    rebuilt = task.decode(codes)
    assert rebuilt.shape == images.shape and rebuilt.abs().max() <= 1
    assert task.latent_spec() == {"kind": "vq", "latent_shape": [4, 4], "codebook_size": 128}
    with pytest.raises(MimicryError, match="codes must lie in"):
        task.decode(codes + 128)


def test_sample_shows_reconstructions_and_decoded_random_codes(trained_vqvae, tmp_path):
    out = tmp_path / "samples"
    run_mimicry(tmp_path, "sample", str(trained_vqvae), "n=8", "seed=2", f"out={out}",
                env={"MIMICRY_DATA": str(tmp_path / "nowhere")})  # the run stores the images it reconstructs
    names = sorted(p.name for p in out.glob("*.png"))
    assert "reconstructions.png" in names and len(names) == 2, names
    width, height = Image.open(out / "reconstructions.png").size
    assert height > width / 8 * 2.5  # originals, reconstructions and code images: three rows of 8
    run_mimicry(tmp_path, "sample", str(trained_vqvae), "n=4", "source=reconstruction", f"out={tmp_path / 'rebuilt'}")
    assert len(list((tmp_path / "rebuilt").glob("*.png"))) == 2
    result = run_mimicry(tmp_path, "sample", str(trained_vqvae), "source=everything", f"out={out}", check=False)
    assert result.returncode != 0 and "source=everything: choose codes" in result.stdout + result.stderr


def test_eval_scores_reconstructions_and_reads_their_shapes(trained_vqvae, tmp_path):
    run_mimicry(tmp_path, "eval", str(trained_vqvae), "n=64", env={"MIMICRY_FEATURE_NETS": str(tmp_path / "nets")})
    scores = json.loads((trained_vqvae / "eval" / "metrics.json").read_text())
    assert scores["samples"] == 64 and 0 <= scores["metrics"]["shapes_read"] <= 1
    assert scores["real_vs_real"]["shapes_read"] == 1.0
    assert scores["metrics"]["fid"] >= 0 and "fid" in scores["real_vs_real"]


def test_probe_codebook_shows_each_codes_mean_patch_and_use(trained_vqvae, tmp_path):
    result = run_mimicry(tmp_path, "probe", "codebook", str(trained_vqvae), "images=200")
    report = json.loads((trained_vqvae / "probes" / "codebook.json").read_text())
    assert report["positions"] == 200 * 16 == sum(report["counts"])
    assert report["counts"] == sorted(report["counts"], reverse=True) and sorted(report["order"]) == list(range(128))
    assert report["dead"] == report["counts"].count(0) and "perplexity" in result.stdout
    assert (trained_vqvae / "probes" / "codebook.png").is_file()


def test_probe_codebook_refuses_a_run_without_codes(trained_vqvae, tmp_path):
    gan = tmp_path / "gan"
    gan.mkdir()
    run_mimicry(gan, "train", "task=gan", "data.limit=32", "data.batch_size=16", "trainer.max_epochs=1",
                "model.generator.width=8", "model.discriminator.width=8", "task.metrics_every_n_epochs=0")
    (run_dir,) = run_dirs(gan)
    result = run_mimicry(tmp_path, "probe", "codebook", str(run_dir), check=False)
    assert result.returncode != 0 and "reads a VQ-VAE" in result.stdout + result.stderr


def test_mean_patches_and_code_statistics_by_hand():
    images = torch.zeros(1, 1, 4, 4)
    images[0, 0, :2, :2] = 1.0                      # top-left patch white, the rest black
    codes = torch.tensor([[[2, 0], [0, 0]]])         # 2×2 codes of 2×2 patches
    counts, patches = mean_patches(codes, images, codebook_size=3)
    assert counts.tolist() == [3, 0, 1]
    assert torch.equal(patches[2], torch.ones(1, 2, 2)) and torch.equal(patches[0], torch.zeros(1, 2, 2))
    assert torch.equal(patches[1], torch.full((1, 2, 2), 0.5))  # dead: grey
    usage, perplexity = code_statistics(torch.tensor([5, 5, 0, 0]))
    assert usage == 0.5 and perplexity == pytest.approx(2.0)


def test_kl_autoencoder_reconstructs_with_latents_near_unit_scale(tmp_path):
    run_mimicry(tmp_path, "train", *TINY_AE, "model=kl_autoencoder", "model.width=16", "task.metrics_every_n_epochs=0")
    (run_dir,) = run_dirs(tmp_path)
    metrics = summary(run_dir)["metrics"]
    assert metrics["val/reconstruction"] < 0.5 * metrics["val/mean_image_mse"], metrics
    assert 0 < metrics["val/kl"] < 0.01 and 0.1 < metrics["val/latent_std"] < 10, metrics
    task, _ = load_task_and_config(find_checkpoint(run_dir, "last"))
    assert isinstance(task.model, KLAutoencoder)
    assert task.encode(task.shown_images[:2]).shape == (2, 4, 4, 4)  # 4 channels on a 4×4 grid
    assert task.latent_spec() == {"kind": "kl", "latent_shape": [4, 4, 4]}


def test_models_and_losses_that_do_not_fit_are_refused_in_one_line(tmp_path):
    for args, expected in ((["task=gan", "model=vqvae"], "model=vqvae does not go with task=gan"),
                           (["task=autoencoder", "loss=hinge"], "loss=hinge does not go with task=autoencoder"),
                           (["task=autoencoder", "model=vqvae", "model.downsamples=5"], "model.downsamples=5")):
        result = run_mimicry(tmp_path, "train", *args, "trainer.max_epochs=1", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and expected in output and "Traceback" not in output, output[-2000:]
