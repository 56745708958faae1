"""`mimicry train task=gan` as a user runs it: scalars, fakes beside forgery maps, sampling; bad input."""
from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.data.images import DigitsDataModule
from mimicry.tasks.gan import GenerativeAdversarial
from resume_checks import assert_same_curve, assert_same_weights

# Small enough that a 2-epoch run takes seconds on 2 CPU cores.
TINY_GAN = [
    "task=gan", "model.generator.latent_dim=8", "model.generator.width=8", "model.discriminator.width=8",
    "data.limit=64", "data.batch_size=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
    "task.sample_every_n_steps=4", "task.num_samples=10",
    # a tiny feature net, so class coverage and FID run too (cached in the test's own folder)
    "task.metrics_every_n_epochs=2", "task.metrics_samples=64", "task.feature_net.width=8", "task.feature_net.steps=10",
]


@pytest.fixture(scope="module")
def trained_gan(tmp_path_factory):
    """One tiny class-conditional run, shared by the tests that only read from it."""
    cwd = tmp_path_factory.mktemp("gan_run")
    run_mimicry(cwd, "train", *TINY_GAN, "task.conditional=true", env={"MIMICRY_FEATURE_NETS": str(cwd / "nets")})
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_gan_run_writes_scalars_fakes_and_forgery_maps(trained_gan):
    record = summary(trained_gan)
    assert record["status"] == "completed" and record["steps"] == 8  # 4 batches x 2 epochs: one per G step

    events = read_events(trained_gan)
    for tag in ["gan/d_real", "gan/d_fake", "gan/d_accuracy", "gan/d_grad_norm", "gan/g_grad_norm",
                "gan/forgery_map_norm", "train/d_loss", "train/g_loss", "train/loss", "val/d_real",
                "val/fid", "val/classes_covered", "val/class_entropy"]:
        assert tag in events["scalars"], f"{tag} missing from TensorBoard; have {sorted(events['scalars'])}"
    assert len(events["scalars"]["gan/d_real"]) == 8  # every step at log_every_n_steps=1
    assert all(0 <= value <= 1 for _, value in events["scalars"]["gan/d_real"])  # ns: a probability
    fakes, maps = events["images"]["samples/fakes"], events["images"]["samples/forgery_map"]
    assert {step for step, _, _ in fakes} == {step for step, _, _ in maps} == {0, 4, 8}
    assert fakes[0][1:] == maps[0][1:]  # the heatmap grid lines up with the fakes grid

    pngs = sorted((trained_gan / "samples").glob("step_*.png"))
    assert [p.name for p in pngs] == ["step_0000000.png", "step_0000004.png", "step_0000008.png"]
    width, height = Image.open(pngs[-1]).size
    assert width > 2 * height * 0.9  # fakes | forgery map, side by side (10 columns: one per class)


def test_sample_writes_a_grid_and_an_interpolation_strip(trained_gan, tmp_path):
    out = tmp_path / "samples"
    run_mimicry(tmp_path, "sample", str(trained_gan), "n=20", "truncation=0.7", "seed=3", "label=4",
                "interpolation_steps=6", f"out={out}", env={"MIMICRY_DATA": str(tmp_path / "nowhere")})
    grid, strip = out / "samples_seed3_label4_trunc0.7.png", out / "interpolation_seed3_label4_trunc0.7.png"
    assert grid.is_file() and strip.is_file()
    # 20 images, 10 per row (one per class), 16px + 1px lines, zoomed 3x so digits are visible at 100%
    assert Image.open(grid).size == (3 * (10 * 17 + 1), 3 * (2 * 17 + 1))
    assert Image.open(strip).size == (3 * (6 * 17 + 1), 3 * (4 * 17 + 1))  # 4 walks of 6 steps
    first = Image.open(grid).tobytes()
    run_mimicry(tmp_path, "sample", str(trained_gan), "n=20", "truncation=0.7", "seed=3", "label=4",
                "interpolation_steps=6", f"out={out}")
    assert Image.open(grid).tobytes() == first  # same seed, same images


def test_eval_scores_a_finished_gan_run(trained_gan, tmp_path):
    result = run_mimicry(tmp_path, "eval", str(trained_gan), "n=64", env={"MIMICRY_FEATURE_NETS": str(tmp_path / "nets")})
    scores = json.loads((trained_gan / "eval" / "metrics.json").read_text())
    metrics, floor = scores["metrics"], scores["real_vs_real"]
    assert "fid" in result.stdout and 1 <= metrics["classes_covered"] <= 10
    assert metrics["fid"] > 2 * floor["fid"]  # eight steps of a tiny GAN are far from real digits


def test_init_from_a_run_of_another_task_is_refused(trained_gan, tmp_path):
    result = run_mimicry(tmp_path, "train", "task=lm", "trainer.max_epochs=1", f"init_from={trained_gan}", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert "holds a mimicry.tasks.gan.GenerativeAdversarial checkpoint" in result.stdout + result.stderr


def test_wgan_gp_with_batchnorm_in_the_critic_fails_before_training(tmp_path):
    result = run_mimicry(tmp_path, "train", *TINY_GAN, "loss=wgan_gp", "model.discriminator.norm=batch", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "BatchNorm in the discriminator" in output and "model.discriminator.norm=none" in output
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "failed" and not (run_dir / "checkpoints").exists()


def test_image_size_the_networks_cannot_take(tmp_path):
    result = run_mimicry(tmp_path, "train", *TINY_GAN, "data.image_size=18", check=False)
    assert result.returncode != 0
    assert "cannot make 18x18 images; it takes image sizes 16, 20, 24, 28, 32" in result.stdout + result.stderr


def test_a_diverging_gan_is_stopped_by_the_divergence_guard(tmp_path):
    # Adam at lr 1e6 without spectral norm: LSGAN's squared scores overflow within a step or two.
    result = run_mimicry(tmp_path, "train", *TINY_GAN, "task.metrics_every_n_epochs=0", "trainer.max_epochs=20",
                         "loss=lsgan", "model.discriminator.norm=none", "optim.lr=1e6", "optim.d_lr=1e6", check=False)
    assert result.returncode != 0 and "training diverged" in result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "diverged"


def tiny_task(loss: str = "NonSaturating", optim: dict | None = None, **options) -> tuple[GenerativeAdversarial, DigitsDataModule]:
    data = DigitsDataModule(batch_size=16, limit=32, value_range="signed")
    data.setup()
    model = {"generator": {"_target_": "mimicry.models.mlp_gan.MLPGenerator", "latent_dim": 8, "width": 16},
             "discriminator": {"_target_": "mimicry.models.mlp_gan.MLPDiscriminator", "width": 16, "norm": "none"}}
    optim = {"lr": 2e-4, "d_lr": 2e-4, "betas": None, "weight_decay": 0.0, "warmup_steps": 0, **(optim or {})}
    loss_node = {"_target_": f"mimicry.losses.gan_losses.{loss}"}
    options = {"metrics_every_n_epochs": 0, **options}  # no feature net: these tests look at the networks
    return GenerativeAdversarial(model, loss_node, optim, data.spec(), **options), data


def fit(task, data, max_steps: int) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(task, datamodule=data)
    return trainer


def test_adaptive_balance_skips_discriminator_steps_and_says_so():
    torch.manual_seed(0)
    task, data = tiny_task(balance="adaptive", balance_threshold=-1.0)  # D always "winning": always skip
    before = [p.detach().clone() for p in task.discriminator.parameters()]
    trainer = fit(task, data, max_steps=3)
    assert trainer.global_step == 3
    assert trainer.callback_metrics["gan/d_skipped"] == 1.0  # one skipped D step since the last log
    assert all(torch.equal(a, b) for a, b in zip(before, task.discriminator.parameters()))


def test_d_steps_and_ema_follow_the_generator():
    torch.manual_seed(0)
    task, data = tiny_task(d_steps=3, ema_decay=0.5)
    trainer = fit(task, data, max_steps=2)
    assert trainer.global_step == 2  # generator steps: D's 3 steps per batch are not counted
    assert int(task.generator_ema.n_averaged) == 2
    assert not torch.equal(task.generator_ema.module.net[0].weight, task.generator.net[0].weight)


def test_a_drop_in_class_coverage_is_reported(caplog):
    task, _ = tiny_task()
    with caplog.at_level("WARNING", logger="mimicry"):
        task._check_coverage({"classes_covered": 10.0, "class_entropy": 2.3})
        task._check_coverage({"classes_covered": 9.0, "class_entropy": 2.2})  # within the allowed 25%
        assert not caplog.records
        task._check_coverage({"classes_covered": 3.0, "class_entropy": 0.9})
    assert "class coverage dropped" in caplog.text and "3 classes, down from 10" in caplog.text


@torch.no_grad()
def d_scores(task: GenerativeAdversarial, data: DigitsDataModule, seed: int = 0) -> tuple[float, float]:
    """Mean raw D score of the training images and of fixed-noise fakes."""
    real = data.train_images()
    z = torch.randn(len(real), task.latent_dim, generator=torch.Generator().manual_seed(seed))
    return task.discriminator(real).mean().item(), task.discriminator(task.generator(z)).mean().item()


@pytest.mark.parametrize("loss", ["NonSaturating", "Hinge", "LeastSquares"])
def test_the_task_teaches_d_real_from_fake(loss):
    # G all but frozen: D's steps alone must lift its score of real images above that of fakes.
    # With "real" and "fake" swapped anywhere on D's side (the loss, the order of its arguments
    # in the task), D would learn the opposite.
    torch.manual_seed(0)
    task, data = tiny_task(loss, optim={"lr": 1e-9, "d_lr": 1e-3}, ema_decay=0)
    real_before, fake_before = d_scores(task, data)
    fit(task, data, max_steps=20)
    real_after, fake_after = d_scores(task, data)
    assert real_after - fake_after > (real_before - fake_before) + 0.5


@pytest.mark.parametrize("loss", ["NonSaturating", "Minimax", "Hinge", "LeastSquares"])
def test_the_task_teaches_g_to_raise_d_of_its_fakes(loss):
    # D all but frozen: G's steps must raise D's score of its fakes ("imitate real through D").
    torch.manual_seed(0)
    task, data = tiny_task(loss, optim={"lr": 1e-3, "d_lr": 1e-9}, ema_decay=0)
    _, fake_before = d_scores(task, data)
    fit(task, data, max_steps=20)
    _, fake_after = d_scores(task, data)
    assert fake_after > fake_before + 0.1


def test_resume_continues_a_gan_run_in_the_same_directory(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    fast = [*TINY_GAN, "task.metrics_every_n_epochs=0"]
    run_mimicry(straight, "train", *fast, "trainer.max_epochs=4")
    run_mimicry(interrupted, "train", *fast, "trainer.max_epochs=2")  # "killed" after epoch 2
    (run_dir,) = run_dirs(interrupted)
    assert summary(run_dir)["steps"] == 8

    run_mimicry(interrupted, "train", f"resume={run_dir}", "trainer.max_epochs=4")
    assert run_dirs(interrupted) == [run_dir]  # same directory, no new run
    resumed, reference = summary(run_dir), summary(run_dirs(straight)[0])
    assert resumed["status"] == "completed" and resumed["steps"] == reference["steps"] == 16
    # Both networks, both optimizers, the EMA generator and the RNG came back: the same numbers
    # as the run that was never stopped (up to float noise).
    for name in ["train/d_loss", "train/g_loss", "val/d_real"]:
        assert resumed["metrics"][name] == pytest.approx(reference["metrics"][name], rel=1e-4, abs=1e-6), name
        assert_same_curve(run_dir, run_dirs(straight)[0], name, rel=1e-4)  # ...and every point before the end
    assert_same_weights(run_dir, run_dirs(straight)[0], atol=1e-4)

    events = read_events(run_dir)
    steps = sorted(step for step, _ in events["scalars"]["gan/d_real"])
    assert steps[0] <= 1 and steps == list(range(steps[0], steps[0] + 16))  # one curve over both sessions: no gap, no repeat
    assert {step for step, _, _ in events["images"]["samples/fakes"]} >= {0, 8, 16}


def test_a_probe_that_cannot_read_a_gan_says_so(trained_gan, capsys):
    from mimicry.cli import main

    assert main(["probe", "sharpness", str(trained_gan), "batches=1"]) == 2
    err = capsys.readouterr().err
    assert "GenerativeAdversarial does not give its loss as one comparison" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
