"""`mimicry train task=image_ar` end to end, sampling, eval, the classifier/feature net, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.data.images import DigitsDataModule, ImageFolderDataModule
from mimicry.errors import MimicryError
from mimicry.metrics.feature_net import load_feature_net
from mimicry.tasks.image_ar import ImageAutoregressive
from resume_checks import assert_same_curve, assert_same_weights

TINY_IMAGE_AR = [
    "task=image_ar", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "tokenizer.levels=4",
    "data.limit=64", "data.batch_size=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
    "task.sample_every_n_steps=4", "task.num_samples=8", "task.completions=2",
    "task.metrics_every_n_epochs=2", "task.metrics_samples=24", "task.feature_net.steps=20", "optim.warmup_steps=0",
]
PATCHES = ["tokenizer=patches", "tokenizer.patch_size=4", "tokenizer.codebook_size=16"]
TINY_GPT = {"_target_": "mimicry.models.gpt.GPT", "n_layer": 1, "n_head": 2, "n_embd": 32}
NEXT_TOKEN = {"_target_": "mimicry.losses.sequence.NextTokenCrossEntropy"}
OPTIM = {"lr": 1e-3}
DIGITS_SPEC = {"kind": "image", "dataset": "digits", "channels": 1, "image_size": 16, "num_classes": 10,
               "value_range": "unit"}


@pytest.fixture(scope="module")
def feature_net_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature_nets")


@pytest.fixture(scope="module")
def trained_image_ar(tmp_path_factory, feature_net_cache) -> Path:
    cwd = tmp_path_factory.mktemp("image_ar_run")
    run_mimicry(cwd, "train", *TINY_IMAGE_AR, env={"MIMICRY_FEATURE_NETS": str(feature_net_cache)})
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_image_ar_run_writes_grids_and_bits_per_dim(trained_image_ar: Path) -> None:
    record = summary(trained_image_ar)
    assert record["status"] == "completed" and record["steps"] == 8
    metrics = record["metrics"]
    # 4 levels: an untrained model (near-uniform softmax) scores log2(4) = 2 bits/dim; 8 steps learn
    # at least that most pixels are background.
    assert metrics["val/bits_per_dim"] < 1.6
    assert metrics["val/bits_per_dim"] == pytest.approx(metrics["val/nll_per_image"] / (256 * math.log(2)), rel=1e-5)
    # The floor: as many real (quantized) training images as draws, against the same validation images.
    assert metrics["val/fid_floor"] < metrics["val/fid"]
    events = read_events(trained_image_ar)
    for tag in ["val/bits_per_dim", "val/nll_per_image", "val/loss", "train/loss", "train/tokens_per_sec",
                "val/fid", "val/kid", "val/precision", "val/recall", "val/classes_covered", "val/copy_rate",
                "val/fid_floor", "val/within_class_diversity", "val/class_recall"]:
        assert tag in events["scalars"], f"{tag} missing; have {sorted(events['scalars'])}"
    assert {"samples/images", "samples/completions", "samples/memorization"} <= set(events["images"])
    steps = {step for step, _, _ in events["images"]["samples/images"]}
    assert {0, 4, 8} <= steps  # before training, every 4 steps, at the end
    grids = sorted((trained_image_ar / "samples").glob("step_*.png"))
    # 8 samples, 3 per row, 16 px + 1 px lines, zoomed 3x so digits are visible at 100%
    assert grids and Image.open(grids[-1]).size == (3 * (3 * 17 + 1), 3 * (3 * 17 + 1))
    completion = Image.open(sorted((trained_image_ar / "samples").glob("completion_step_*.png"))[-1])
    assert completion.size == (3 * (5 * 17 + 1), 3 * (2 * 17 + 1))  # image | prompt | 3 tries, for 2 images


def test_sample_and_eval_from_a_run(trained_image_ar: Path, tmp_path: Path, feature_net_cache: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "drawn"
    run_mimicry(tmp_path, "sample", str(trained_image_ar), "n=6", "seed=2", f"out={out}",
                env={"MIMICRY_DATA": str(tmp_path / "nowhere")})  # sampling needs no data
    (png,) = out.glob("*.png")
    assert Image.open(png).size[0] > 16

    from mimicry.evaluate import eval_command, evaluate

    monkeypatch.setenv("MIMICRY_FEATURE_NETS", str(feature_net_cache))
    result = evaluate(trained_image_ar, n=24)
    # The floor scores as many real images as samples, against the same held-out test images.
    assert result["samples"] == result["real_vs_real"]["count"] == 24
    assert result["reference"] == {"split": "test", "count": 180}
    assert result["real_vs_real"]["fid"] < result["metrics"]["fid"]  # an 8-step model is worse than real data
    assert 0.5 < result["real_vs_real"]["within_class_diversity"] < 2  # real images: about as varied as real
    assert (trained_image_ar / "eval" / "metrics.json").is_file()
    eval_command([str(trained_image_ar), "n=24"])
    printed = capsys.readouterr().out
    assert "24 images vs 180 held-out test images" in printed and "the same n as the samples" in printed


def test_sample_writes_raw_arrays(trained_image_ar: Path, tmp_path: Path) -> None:
    run_mimicry(tmp_path, "sample", str(trained_image_ar), "n=30", "format=npz", f"out={tmp_path}")
    (npz,) = tmp_path.glob("*.npz")
    assert not list(tmp_path.glob("*.png"))  # npz only
    arrays = np.load(npz)
    images = arrays["images"]
    assert images.shape == (30, 16, 16, 1) and images.dtype == np.uint8 and "labels" not in arrays
    assert set(np.unique(images).tolist()) <= {0, 85, 170, 255}  # 4 levels, as 8-bit pixels
    result = run_mimicry(tmp_path, "sample", str(trained_image_ar), "format=jpeg", check=False)
    assert result.returncode != 0 and "format=jpeg: choose one of png, npz, both" in result.stdout + result.stderr


def test_conditional_npz_keeps_the_labels(tmp_path: Path) -> None:
    task = _task(conditional=True, tokenizer={"_target_": "mimicry.data.image_tokenizers.PixelTokenizer", "levels": 2})
    png, npz = task.generate_samples(tmp_path, n=12, seed=0, format="both")
    arrays = np.load(npz)
    assert arrays["labels"].tolist() == [i % 10 for i in range(12)] and arrays["images"].shape == (12, 16, 16, 1)
    assert png.suffix == ".png"
    _, npz = task.generate_samples(tmp_path, n=5, seed=0, format="both", label=7)
    assert np.load(npz)["labels"].tolist() == [7] * 5
    with pytest.raises(MimicryError, match="conditional on classes 0..9"):
        task.generate_samples(tmp_path, n=1, seed=0, label=10)


def test_patch_tokenizer_bits_per_dim_and_resume(tmp_path: Path) -> None:
    """Bits/dim with patch codes counts the codes' bits over the image's dimensions; a resumed run
    ends where an uninterrupted one does, in the same directory, with one curve."""
    settings = [*(o for o in TINY_IMAGE_AR if not o.startswith("tokenizer.")), *PATCHES,
                "task.metrics_every_n_epochs=0", "optim.decay_steps=16"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    run_mimicry(straight, "train", *settings, "trainer.max_epochs=4")
    run_mimicry(interrupted, "train", *settings, "trainer.max_epochs=2")  # "killed" after epoch 2
    (run_dir,) = run_dirs(interrupted)
    run_mimicry(interrupted, "train", f"resume={run_dir}", "trainer.max_epochs=4")
    assert run_dirs(interrupted) == [run_dir]
    resumed, reference = summary(run_dir), summary(run_dirs(straight)[0])
    assert resumed["status"] == "completed" and resumed["steps"] == reference["steps"] == 16
    assert resumed["metrics"]["val/bits_per_dim"] == pytest.approx(reference["metrics"]["val/bits_per_dim"], rel=1e-5)
    assert_same_curve(run_dir, run_dirs(straight)[0], "train/loss")
    assert_same_weights(run_dir, run_dirs(straight)[0])  # the GPT and the fitted codebook

    metrics = reference["metrics"]
    # 16 codes per 16x16 image; an untrained (uniform) model: 16·log2(16) bits / 256 dims = 0.25 bits/dim.
    assert metrics["val/bits_per_dim"] == pytest.approx(metrics["val/nll_per_image"] / (256 * math.log(2)), rel=1e-5)
    assert metrics["val/bits_per_dim"] < 0.88 * 0.25 and 0 < metrics["val/codebook_mse"] < 0.1
    steps = [step for step, _ in read_events(run_dir)["scalars"]["val/bits_per_dim"]]
    # one curve across both sessions: a point per epoch, the last two after the resume
    assert len(set(steps)) == 4 and max(steps) >= 15 and sorted(steps)[1] < 8 < sorted(steps)[2]


def _task(**options) -> ImageAutoregressive:
    torch.manual_seed(0)
    return ImageAutoregressive(model=TINY_GPT, loss=NEXT_TOKEN, optim=OPTIM, data_spec=DIGITS_SPEC, **options)


def test_conditional_grid_has_one_row_per_class_and_is_seeded() -> None:
    task = _task(conditional=True, tokenizer={"_target_": "mimicry.data.image_tokenizers.PixelTokenizer", "levels": 2})
    assert task.model.vocab_size == 2 + 10 and task.model.block_size == 256  # levels + one start token per class
    images, labels, columns = task.sample_grid(20, seed=1)
    assert images.shape == (20, 1, 16, 16) and columns == 10  # one column per class
    assert labels.tolist() == [i % 10 for i in range(20)]
    assert set(images.unique().tolist()) <= {0.0, 1.0}
    again, _, _ = task.sample_grid(20, seed=1)
    assert torch.equal(images, again)


def test_completion_keeps_the_top_half() -> None:
    task = _task()
    real = DigitsDataModule(value_range="unit").val_images()[:2]
    grid = task.completion_grid(real, seed=0, tries=2)
    assert grid.shape[1:] == (3 * (2 * 17 + 1), 3 * (4 * 17 + 1))  # zoomed 3x
    prefix = task.tokenizer.encode(real)[:, : 8 * 16]
    completed = task.draw(2, seed=0, prefix=prefix)
    assert torch.equal(task.tokenizer.encode(completed)[:, : 8 * 16], prefix)


def test_patch_tokenizer_and_bad_input_fail_before_training() -> None:
    patches = {"_target_": "mimicry.data.image_tokenizers.PatchTokenizer", "patch_size": 4, "codebook_size": 32}
    task = _task(tokenizer=patches)
    assert task.length == 16 and task.model.vocab_size == 33
    with pytest.raises(MimicryError, match="not divisible"):
        _task(tokenizer={**patches, "patch_size": 3})
    with pytest.raises(MimicryError, match="value_range=unit"):
        ImageAutoregressive(model=TINY_GPT, loss=NEXT_TOKEN, optim=OPTIM,
                            data_spec={**DIGITS_SPEC, "value_range": "signed"})
    with pytest.raises(MimicryError, match="at least 2 classes"):
        ImageAutoregressive(model=TINY_GPT, loss=NEXT_TOKEN, optim=OPTIM,
                            data_spec={**DIGITS_SPEC, "num_classes": 1}, conditional=True)


def test_wrong_tokenizer_choice_lists_the_options(tmp_path: Path) -> None:
    result = run_mimicry(tmp_path, "train", "task=image_ar", "tokenizer=wavelets", check=False)
    assert result.returncode != 0 and "patches" in result.stderr and "pixels" in result.stderr


def test_feature_net_is_built_once_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMICRY_FEATURE_NETS", str(tmp_path / "nets"))
    data = DigitsDataModule(value_range="unit", limit=50)
    net = load_feature_net(data, steps=40, width=8)
    assert net.test_accuracy > 0.5 and len(list((tmp_path / "nets").glob("digits_*.pt"))) == 1
    cached = load_feature_net(DigitsDataModule(), steps=40, width=8)  # another value range: same net
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), cached.state_dict().values()))

    for i in range(3):
        Image.new("L", (8, 8), color=i * 40).save(tmp_path / f"{i}.png")
    assert load_feature_net(ImageFolderDataModule(path=str(tmp_path))) is None  # no labels, no feature net


def test_eval_builds_nothing_a_run_folder_names(trained_image_ar: Path, tmp_path: Path) -> None:
    """eval builds the data from the installed configs and the checkpoint's recipe: a class written into
    the folder's config.yaml is never read, and the run is scored as it was trained."""
    import shutil

    shared = tmp_path / "shared_run"
    shutil.copytree(trained_image_ar, shared)
    victim = tmp_path / "created.txt"
    config = shared / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("_target_: mimicry.data.images.DigitsDataModule",
                                                 f"_target_: builtins.open\n  file: {victim}\n  mode: w", 1))
    result = run_mimicry(tmp_path, "eval", str(shared), "n=16")
    assert "fid" in result.stdout and (shared / "eval" / "metrics.json").is_file()
    assert not victim.exists()


def test_eval_passes_the_tasks_sample_options_and_refuses_unknown_ones(trained_image_ar: Path, tmp_path: Path,
                                                                       feature_net_cache: Path) -> None:
    env = {"MIMICRY_FEATURE_NETS": str(feature_net_cache)}
    result = run_mimicry(tmp_path, "eval", str(trained_image_ar), "n=16", "temprature=0.5", check=False, env=env)
    assert result.returncode != 0 and "eval option(s) temprature unknown" in result.stderr and "temperature" in result.stderr
    run_mimicry(tmp_path, "eval", str(trained_image_ar), "n=16", "temperature=0.5", env=env)
    assert json.loads((trained_image_ar / "eval" / "metrics.json").read_text())["draw_options"] == {"temperature": 0.5}
