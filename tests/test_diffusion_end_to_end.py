"""`mimicry train task=diffusion` as a user runs it: scalars, grids, the denoising trajectory,
sampling from a checkpoint with other samplers, guidance, resume, and bad input."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.checkpoints import load_task
from mimicry.errors import MimicryError
from mimicry.tasks.diffusion import Diffusion
from resume_checks import assert_same_curve, assert_same_weights

# A UNet of a few thousand weights and T=50: a 2-epoch run takes seconds on 2 CPU cores.
TINY_DIFFUSION = [
    "task=diffusion", "model.width=8", "model.channel_mult=[1,2]", "task.timesteps=50", "task.steps=4",
    "data.limit=64", "data.batch_size=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
    "task.sample_every_n_steps=4", "task.num_samples=10", "task.trajectory_rows=3", "task.trajectory_snapshots=3",
    "optim.warmup_steps=2", "optim.decay_steps=16",
    # a tiny feature net, so the shared metrics (val/fid, ...) run too (cached in the test's own folder)
    "task.metrics_every_n_epochs=2", "task.metrics_samples=32", "task.feature_net.width=8", "task.feature_net.steps=10",
]


@pytest.fixture(scope="module")
def trained_diffusion(tmp_path_factory):
    """One tiny class-conditional run, shared by the tests that only read from it."""
    cwd = tmp_path_factory.mktemp("diffusion_run")
    run_mimicry(cwd, "train", *TINY_DIFFUSION, "task.conditional=true",
                env={"MIMICRY_FEATURE_NETS": str(cwd / "nets")})
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_run_writes_losses_per_noise_level_grids_and_a_trajectory(trained_diffusion):
    record = summary(trained_diffusion)
    assert record["status"] == "completed" and record["steps"] == 8  # 4 batches x 2 epochs

    events = read_events(trained_diffusion)
    scalars = events["scalars"]
    buckets = ["val/loss_t0-10", "val/loss_t10-20", "val/loss_t20-30", "val/loss_t30-40", "val/loss_t40-50"]
    for tag in ["train/loss", "val/loss", *buckets, "val/fid", "val/classes_covered", "val/fid_floor"]:
        assert tag in scalars, f"{tag} missing from TensorBoard; have {sorted(scalars)}"
    last = {tag: values[-1][1] for tag, values in scalars.items()}
    # val/loss is the mean over equal-sized level buckets (stratified t), up to rounding of the strata
    assert last["val/loss"] == pytest.approx(sum(last[b] for b in buckets) / 5, rel=0.1)

    grids, trajectories = events["images"]["samples/images"], events["images"]["samples/trajectory"]
    assert {s for s, _, _ in grids} == {s for s, _, _ in trajectories} == {0, 4, 8}
    assert grids[0][1] > grids[0][2]  # conditional: 10 columns (one per class), 1 row
    width, height = Image.open(trained_diffusion / "samples" / "trajectory_step_0000008.png").size
    assert width > 2 * height  # 3 rows of x_t | gap | x0̂: 7 cells wide, 3 high


def test_sampling_from_a_checkpoint_with_other_samplers_and_guidance(trained_diffusion, tmp_path):
    out = tmp_path / "samples"
    run_mimicry(tmp_path, "sample", str(trained_diffusion), "n=6", "sampler=ddim", "steps=5", "guidance=2",
                "label=3", "seed=1", f"out={out}", env={"MIMICRY_DATA": str(tmp_path / "nowhere")})
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["samples_seed1_label3_samplerddim_steps5_guidance2.png",
                    "trajectory_samples_seed1_label3_samplerddim_steps5_guidance2.png"]

    task = load_task(trained_diffusion)
    first = task.draw(4, seed=0, sampler="ddpm", steps=10)
    assert first.shape == (4, 1, 16, 16) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, task.draw(4, seed=0, sampler="ddpm", steps=10))  # same seed, same images
    assert not torch.equal(first, task.draw(4, seed=1, sampler="ddpm", steps=10))
    unclipped = task.draw(4, seed=0, sampler="dpm_solver", steps=4, spacing="trailing", clip=False)
    assert unclipped.shape == (4, 1, 16, 16) and 0 <= unclipped.min() and unclipped.max() <= 1
    guided = task.draw(4, seed=0, labels=torch.full((4,), 3), guidance=3.0)
    assert not torch.allclose(guided, task.draw(4, seed=0, labels=torch.full((4,), 3)))


def test_bad_sample_options_fail_before_any_work(trained_diffusion, tmp_path):
    task = load_task(trained_diffusion)
    with pytest.raises(MimicryError, match="steps=500: the model was trained with T=50"):
        task.generate_samples(tmp_path, 2, 0, steps=500)
    assert not list(tmp_path.iterdir())  # refused before anything was drawn or written
    with pytest.raises(MimicryError, match="sampler='heun'"):
        task.draw(2, seed=0, sampler="heun")
    with pytest.raises(MimicryError, match="clip='yes'"):
        task.draw(2, seed=0, clip="yes")
    with pytest.raises(MimicryError, match="label=12"):
        task.generate_samples(tmp_path, 2, 0, label=12)


SPEC = {"kind": "image", "dataset": "digits", "channels": 1, "image_size": 16, "num_classes": 10,
        "value_range": "signed"}
MODEL = {"_target_": "mimicry.models.unet.UNet", "width": 8, "channel_mult": [1, 2]}
LOSS = {"_target_": "mimicry.losses.diffusion.EpsObjective"}


def test_guidance_on_an_unconditional_model_is_refused():
    task = Diffusion(MODEL, LOSS, {"lr": 1e-3}, SPEC, timesteps=20, steps=5)
    with pytest.raises(MimicryError, match="guidance=2.0.*class-conditional"):
        task.draw(2, seed=0, guidance=2.0)
    with pytest.raises(MimicryError, match="guidance=2.*task.conditional=true"):
        Diffusion(MODEL, LOSS, {"lr": 1e-3}, SPEC, timesteps=20, steps=5, guidance=2)
    with pytest.raises(MimicryError, match="steps=30.*T=20"):
        Diffusion(MODEL, LOSS, {"lr": 1e-3}, SPEC, timesteps=20, steps=30)
    with pytest.raises(MimicryError, match="value_range=signed"):
        Diffusion(MODEL, LOSS, {"lr": 1e-3}, {**SPEC, "value_range": "unit"}, timesteps=20, steps=5)


def test_bad_config_fails_before_training(tmp_path):
    result = run_mimicry(tmp_path, "train", *TINY_DIFFUSION, "data.image_size=18", "model.channel_mult=[1,2,2]",
                         "task.metrics_every_n_epochs=0", check=False)
    assert result.returncode != 0
    assert "18×18 does not halve evenly" in result.stdout + result.stderr
    assert summary(run_dirs(tmp_path)[0])["status"] == "failed"


def test_resume_continues_with_the_same_numbers_and_the_same_average(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    tiny = [*TINY_DIFFUSION, "task.metrics_every_n_epochs=0", "task.sample_every_n_steps=0", "task.trajectory_rows=0"]
    run_mimicry(straight, "train", *tiny, "trainer.max_epochs=2")
    run_mimicry(interrupted, "train", *tiny, "trainer.max_epochs=1")  # "killed" after epoch 1
    (run_dir,) = run_dirs(interrupted)
    run_mimicry(interrupted, "train", f"resume={run_dir}", "trainer.max_epochs=2")
    assert run_dirs(interrupted) == [run_dir]
    resumed, reference = summary(run_dir), summary(run_dirs(straight)[0])
    assert resumed["status"] == "completed" and resumed["steps"] == reference["steps"] == 8
    # val/loss scores the EMA: equal only if the average (and its update count) came back too
    assert resumed["metrics"]["val/loss"] == pytest.approx(reference["metrics"]["val/loss"], rel=1e-5)
    assert resumed["metrics"]["train/loss"] == pytest.approx(reference["metrics"]["train/loss"], rel=1e-5)
    assert_same_curve(run_dir, run_dirs(straight)[0], "train/loss")
    assert_same_weights(run_dir, run_dirs(straight)[0])  # the UNet and its EMA copy


def test_only_an_eps_model_clips_unless_asked():
    task = Diffusion(MODEL, LOSS, {"lr": 1e-3}, SPEC, timesteps=20, steps=5)  # eps, task.clip_denoised=null
    assert task.sampling(sampler="ddpm")["clip"] is True and task.sampling()["clip"] is True
    assert task.sampling(sampler="ddim", clip=False)["clip"] is False
    for objective in ("VObjective", "X0Objective"):  # their x0 is sound at every level: no clipping
        other = Diffusion(MODEL, {"_target_": f"mimicry.losses.diffusion.{objective}"}, {"lr": 1e-3}, SPEC,
                          timesteps=20, steps=5)
        assert other.sampling()["clip"] is False and other.sampling(clip=True)["clip"] is True
    forced = Diffusion(MODEL, LOSS, {"lr": 1e-3}, SPEC, timesteps=20, steps=5, clip_denoised=False)
    assert forced.sampling(sampler="dpm_solver")["clip"] is False
    with pytest.raises(MimicryError, match="clip='yes'"):
        Diffusion(MODEL, LOSS, {"lr": 1e-3}, SPEC, timesteps=20, steps=5, clip_denoised="yes")
