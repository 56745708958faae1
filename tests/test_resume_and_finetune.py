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


def test_resume_without_a_checkpoint_says_so(tmp_path):
    run_mimicry(tmp_path, "train", *TINY_LM, "trainer.max_epochs=1")
    (run_dir,) = run_dirs(tmp_path)
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    result = run_mimicry(tmp_path, "train", f"resume={run_dir}", check=False)
    assert result.returncode != 0
    assert "nothing to resume" in result.stdout + result.stderr
    assert summary(run_dir)["status"] == "failed"


def test_init_from_fine_tunes_on_instruction_pairs(trained_lm, tmp_path):
    pairs = "".join(f"### Instruction:\nSay the number {i}.\n### Response:\nThe number is {i}.\n\n" for i in range(200))
    data = tmp_path / "pairs.txt"
    data.write_text(pairs)
    pretrained = trained_lm / "checkpoints" / "last.ckpt"
    run_mimicry(tmp_path, "train", *TINY_LM, f"init_from={pretrained}", "data=text", f"data.path={data}",
                "trainer.max_epochs=3", "optim.lr=1e-2")
    (run_dir,) = run_dirs(tmp_path)
    record = summary(run_dir)
    assert record["status"] == "completed"
    assert "initialised weights from" in (run_dir / "train.log").read_text()
    # Before its first step, the fine-tuned model writes exactly what the pretrained one wrote last
    # (same tokenizer, prompt and seed): the weights and the vocabulary came across.
    last_pretrained = (trained_lm / "samples" / "step_0000010.txt").read_text()
    assert (run_dir / "samples" / "step_0000000.txt").read_text() == last_pretrained
    # ...and then it learns the new format: the repetitive pairs are far easier than pydoc.
    assert record["metrics"]["val/loss"] < summary(trained_lm)["metrics"]["val/loss"] - 0.5


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path):
    # lr=0: the validation loss never improves, so best.ckpt stays at epoch 1; last.ckpt must not.
    run_mimicry(tmp_path, "train", *TINY_LM, "optim.lr=0.0", "optim.min_lr=0.0", "trainer.max_epochs=3")
    (run_dir,) = run_dirs(tmp_path)

    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["global_step"] == 15 and best["global_step"] == 5
