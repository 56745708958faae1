"""Nothing lost when a run dies: resume continues the same run; init_from fine-tunes a trained one."""
from __future__ import annotations

import pytest
import torch

from conftest import SHARED_DATA, TINY_LM, read_events, run_dirs, run_mimicry, summary
from mimicry.cli import main
from resume_checks import assert_same_curve, assert_same_weights

# The schedule's length is fixed, so stopping after 2 epochs is the same run as 4, cut short.
SCHEDULE = ["optim.decay_steps=20", "model.dropout=0.1"]  # dropout: the RNG state must resume too


def test_resume_continues_in_the_same_directory_with_the_same_numbers(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    run_mimicry(straight, "train", *TINY_LM, *SCHEDULE, "trainer.max_epochs=4")
    run_mimicry(interrupted, "train", *TINY_LM, *SCHEDULE, "trainer.max_epochs=2")  # "killed" after epoch 2
    (run_dir,) = run_dirs(interrupted)
    assert summary(run_dir)["steps"] == 10

    run_mimicry(interrupted, "train", f"resume={run_dir}", "trainer.max_epochs=4")
    assert run_dirs(interrupted) == [run_dir]  # same directory, no new run
    resumed, reference = summary(run_dir), summary(run_dirs(straight)[0])
    assert resumed["status"] == "completed" and resumed["steps"] == reference["steps"] == 20
    for name in ("val/loss", "train/loss"):  # the same numbers, up to float noise
        assert resumed["metrics"][name] == pytest.approx(reference["metrics"][name], rel=1e-5)

    steps = [step for step, _ in read_events(run_dir)["scalars"]["train/loss"]]
    assert min(steps) <= 1 and max(steps) >= 19  # one curve across both sessions
    # ...the same curves as the run never stopped, point by point, and the same weights at the end
    for tag in ("train/loss", "val/loss"):
        assert_same_curve(run_dir, run_dirs(straight)[0], tag)
    assert_same_weights(run_dir, run_dirs(straight)[0])


@pytest.mark.xfail(strict=True, reason="a run stopped in the middle of an epoch resumes at the start of the "
                   "epoch's batch order: the random-window sampler has no state in the checkpoint (steps 0-6 "
                   "match, step 7 on differ); see the issue-24 report")
def test_a_stop_in_the_middle_of_an_epoch_resumes_the_same_run(tmp_path, monkeypatch):
    # in-process (a CLI start costs seconds of CPU); the data root is the offline one, as run_mimicry sets it
    monkeypatch.setenv("MIMICRY_DATA", str(SHARED_DATA))
    endless = [*TINY_LM, *SCHEDULE, "trainer.max_epochs=-1"]  # 5 batches per epoch: step 7 is mid-epoch 2
    for folder, steps in (("straight", 14), ("interrupted", 7)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        assert main(["train", *endless, f"trainer.max_steps={steps}"]) == 0
    (straight,), (run_dir,) = run_dirs(tmp_path / "straight"), run_dirs(tmp_path / "interrupted")
    assert main(["train", f"resume={run_dir}", "trainer.max_steps=14"]) == 0
    curve = dict(read_events(run_dir)["scalars"]["train/loss"])
    straight_curve = dict(read_events(straight)["scalars"]["train/loss"])
    assert [curve[s] for s in range(7)] == pytest.approx([straight_curve[s] for s in range(7)], rel=1e-5)
    assert [curve[s] for s in range(14)] == pytest.approx([straight_curve[s] for s in range(14)], rel=1e-5)
    assert_same_weights(run_dir, straight)
