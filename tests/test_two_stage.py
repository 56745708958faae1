"""Two stages: image_ar on a VQ-VAE run's codes (tokenizer=vq) and diffusion on a KL autoencoder
run's latents (latent.from_run). The autoencoder run is read as data, frozen, and carried in the
second run's checkpoint: once the second runs are trained, the fixture moves the autoencoder runs
away, so everything below (sample, eval, loading) works without them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import run_mimicry, summary
from resume_checks import assert_same_curve, assert_same_weights
from mimicry.checkpoints import find_checkpoint, load_task
from mimicry.data.images import DigitsDataModule
from mimicry.errors import MimicryError

# seconds on one core: 256 digits, 8-wide coders, a one-layer GPT, a 16-wide latent UNet
TINY_DATA = ["data.limit=256", "data.batch_size=32", "trainer.max_epochs=2", "task.sample_every_n_steps=8",
             "task.num_samples=8", "task.metrics_every_n_epochs=2", "task.metrics_samples=32",
             "task.feature_net.width=8", "task.feature_net.steps=10", "optim.warmup_steps=2",
             "optim.decay_steps=24"]  # the schedule of 3 epochs: the resume test continues the 2-epoch runs to 3
TINY_AE = ["task=autoencoder", "model.width=8", "task.metrics_every_n_epochs=0", "task.sample_every_n_steps=0",
           "data.limit=256", "data.batch_size=32", "trainer.max_epochs=2", "task.num_samples=8"]


def train(cwd: Path, *args: str) -> Path:
    cwd.mkdir(parents=True)
    run_mimicry(cwd, "train", *args, f"hydra.run.dir={cwd / 'run'}")  # a path without '=' to give as from_run
    return cwd / "run"


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("two_stage")
    vq = train(root / "ae" / "vq", *TINY_AE, "model=vqvae")
    kl = train(root / "ae" / "kl", *TINY_AE, "model=kl_autoencoder")
    codes = train(root / "codes", "task=image_ar", "tokenizer=vq", f"tokenizer.from_run={vq}", "model.n_layer=1",
                  "model.n_embd=32", "task.completions=2", *TINY_DATA)
    latent = train(root / "latent", "task=diffusion", f"latent.from_run={kl}", "model=unet_latent", "model.width=16",
                   "task.trajectory_rows=2", *TINY_DATA)
    moved = root / "ae_moved"
    (root / "ae").rename(moved)  # the second stages must not need the first-stage runs any more
    return {"codes": codes, "latent": latent, "vq": moved / vq.relative_to(root / "ae"),
            "kl": moved / kl.relative_to(root / "ae")}


def digits(n: int) -> torch.Tensor:
    data = DigitsDataModule(value_range="unit")
    data.setup()
    return data.val_images()[:n]


def test_codes_round_trip_through_the_vq_tokenizer_with_the_autoencoders_own_weights(two_stages):
    task = load_task(two_stages["codes"])  # the AE run is gone: its weights came with this checkpoint
    autoencoder = load_task(two_stages["vq"])
    images = digits(6)
    tokens = task.tokenizer.encode(images)
    assert tokens.shape == (6, 16) and tokens.dtype == torch.long and 0 <= tokens.min() and tokens.max() < 128
    assert torch.equal(tokens, autoencoder.encode(images * 2 - 1).flatten(1))  # the same codes as the AE run gives
    decoded = task.tokenizer.decode(tokens, 16)
    assert decoded.shape == (6, 1, 16, 16) and 0 <= decoded.min() and decoded.max() <= 1
    assert torch.allclose(decoded, (autoencoder.decode(tokens.view(6, 4, 4)) + 1) / 2, atol=1e-5)
    assert task.length == 16 and task.image_vocab == 128  # the GPT writes 16 codes of 128, not 256 pixels
    assert not any(p.requires_grad for p in task.tokenizer.parameters())  # frozen: no optimizer sees it


def test_image_ar_on_codes_writes_decoded_grids_and_scores_them(two_stages):
    run = two_stages["codes"]
    record = summary(run)
    metrics = record["metrics"]
    assert record["status"] == "completed", record
    assert 0 < metrics["val/codebook_mse"] < 0.2 and metrics["val/bits_per_dim"] > 0, metrics
    assert "val/fid" in metrics and 1 <= metrics["val/classes_covered"] <= 10, metrics
    grid = Image.open(sorted((run / "samples").glob("step_*.png"))[-1])
    assert grid.size[0] > 3 * 16 and grid.size[0] == grid.size[1]  # 8 decoded 16×16 digits, zoomed
    assert list((run / "samples").glob("completion_step_*.png"))


def test_latent_diffusion_samples_decode_to_the_image_shape_and_range(two_stages):
    task = load_task(two_stages["latent"])
    assert task.shape == (4, 4, 4) and task.model.conv_in.in_channels == 4  # the UNet sees 4×4×4 latents
    latents = task.autoencoder.encode(digits(64) * 2 - 1)
    assert float(task.latent_scale) == pytest.approx(float(latents.std()), rel=0.5)  # measured on training images
    images = task.draw(3, seed=5, steps=4)
    assert images.shape == (3, 1, 16, 16) and 0 <= images.min() and images.max() <= 1
    assert torch.allclose(images, task.draw(3, seed=5, steps=4))
    assert not torch.allclose(images, task.draw(3, seed=6, steps=4))
    record = summary(two_stages["latent"])
    assert record["status"] == "completed" and "val/fid" in record["metrics"], record
    assert list((two_stages["latent"] / "samples").glob("trajectory_step_*.png"))
    with pytest.raises(MimicryError, match="denoises latents"):
        task.draw(2, seed=0, clip=True)


def test_sample_and_eval_of_both_need_neither_the_autoencoder_run_nor_the_data(two_stages, tmp_path):
    for name in ("codes", "latent"):
        copy = tmp_path / name
        shutil.copytree(two_stages[name], copy)
        out = tmp_path / f"{name}_samples"
        run_mimicry(tmp_path, "sample", str(copy), "n=4", f"out={out}", env={"MIMICRY_DATA": str(tmp_path / "nowhere")})
        assert list(out.glob("samples_seed0*.png")), list(out.iterdir())
        run_mimicry(tmp_path, "eval", str(copy), "n=16")
        scores = json.loads((copy / "eval" / "metrics.json").read_text())
        assert scores["samples"] == 16 and scores["metrics"]["fid"] >= 0 and "fid" in scores["real_vs_real"]


@pytest.mark.parametrize("name, first_stage", [("codes", ["task=image_ar", "tokenizer=vq", "model.n_layer=1",
                                                         "model.n_embd=32", "task.completions=2"]),
                                              ("latent", ["task=diffusion", "model=unet_latent", "model.width=16",
                                                          "task.trajectory_rows=2"])])
def test_a_second_stage_resumes_without_its_first_stage_run(two_stages, tmp_path, name, first_stage):
    """Stopped after 2 epochs and resumed to 3 once the autoencoder run is gone (the checkpoint carries
    it), it ends where a run of 3 epochs straight does: the same steps, curve and weights."""
    from_run = f"tokenizer.from_run={two_stages['vq']}" if name == "codes" else f"latent.from_run={two_stages['kl']}"
    settings = [o for o in TINY_DATA if not o.startswith("trainer.max_epochs")]
    straight = train(tmp_path / "straight", *first_stage, from_run, *settings, "trainer.max_epochs=3")
    resumed = tmp_path / "resumed"
    shutil.copytree(two_stages[name], resumed)  # the fixture's 2-epoch run, its autoencoder moved away
    run_mimicry(tmp_path, "train", f"resume={resumed}", "trainer.max_epochs=3")
    record = summary(resumed)
    assert record["status"] == "completed" and record["steps"] == summary(straight)["steps"] == 24
    assert_same_curve(resumed, straight, "train/loss")
    assert_same_weights(resumed, straight)  # the second stage and the frozen first stage it carries


def test_mismatched_or_missing_first_stages_are_refused_in_one_line(two_stages, tmp_path):
    vq, kl, codes = two_stages["vq"], two_stages["kl"], two_stages["codes"]
    for args, expected in (
        (["task=image_ar", "tokenizer=vq", f"tokenizer.from_run={vq}", "data=shapes"],
         "the autoencoder was trained on 1-channel 16×16 images (digits) but this run's data are 3-channel"),
        (["task=image_ar", "tokenizer=vq", f"tokenizer.from_run={kl}"],
         "trained with model=kl_autoencoder, but this needs model=vqvae"),
        (["task=diffusion", f"latent.from_run={vq}"], "trained with model=vqvae, but this needs model=kl_autoencoder"),
        (["task=diffusion", f"latent.from_run={codes}"], "is not an autoencoder run (it holds ImageAutoregressive)"),
        (["task=image_ar", "tokenizer=vq"], "tokenizer.from_run=AE_RUN is missing"),
        (["task=diffusion", f"latent.from_run={tmp_path / 'gone'}"], "no such run directory"),
    ):
        result = run_mimicry(tmp_path, "train", *args, "trainer.max_epochs=1", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and expected in output and "Traceback" not in output, output[-2000:]


class _Payload:
    """Unpickling it would call ``open(victim, "w")``."""

    def __init__(self, victim: Path):
        self.victim = victim

    def __reduce__(self):
        return open, (str(self.victim), "w")


def test_a_crafted_first_stage_runs_nothing(two_stages, tmp_path):
    victim = tmp_path / "created.txt"
    # an autoencoder run whose checkpoint is a pickle that asks for code
    evil_ae = tmp_path / "evil_ae"
    shutil.copytree(two_stages["kl"], evil_ae)
    checkpoint = torch.load(evil_ae / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["loops"] = _Payload(victim)
    torch.save(checkpoint, evil_ae / "checkpoints" / "best.ckpt")
    result = run_mimicry(tmp_path, "train", "task=diffusion", f"latent.from_run={evil_ae}", check=False)
    assert result.returncode != 0 and "cannot read checkpoint" in result.stdout + result.stderr
    # a second stage whose recorded first stage names a class to build
    path = find_checkpoint(two_stages["latent"])
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["mimicry"]["derived"]["first_stage"]["recipe"]["values"]["model._target_"] = "builtins.open"
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    with pytest.raises(MimicryError, match="refusing model._target_"):
        load_task(crafted)
    assert not victim.exists()


def test_run_folders_given_as_from_run_are_quoted_for_hydra():
    from mimicry.cli import prepare_train_args

    assert prepare_train_args(["tokenizer.from_run=outputs/a=1,b=2", "latent.from_run=x=y"]) == [
        "tokenizer.from_run='outputs/a=1,b=2'", "latent.from_run='x=y'"]


def test_list_names_the_two_stage_options(tmp_path):
    listing = run_mimicry(tmp_path, "list").stdout
    assert "tokenizer=vq" in listing and "latent.from_run=AE_RUN" in listing and "unet_latent" in listing
    assert "tokenizer: pixels, patches, vq" in listing and "unet_latent" in listing.split("diffusion", 1)[1]
