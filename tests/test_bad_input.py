"""Bad input gets one clear message that names the problem and the fix, and nothing claims success."""
from __future__ import annotations

import pytest
import torch

from conftest import SHARED_DATA, TINY_LM, run_dirs, run_mimicry, summary
from mimicry.cli import main


@pytest.fixture
def failing(tmp_path, monkeypatch, capfd):
    """`mimicry ARGS` in tmp_path, in-process (these fail before any work: a subprocess would spend
    most of its time importing Lightning); what it printed, checked to be a failure without a traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIMICRY_DATA", str(SHARED_DATA))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")

    def run(*args: str) -> str:
        capfd.readouterr()
        try:
            code = main([*args, "callbacks.progress=null"] if args[0] == "train" else list(args))
        except SystemExit as stop:  # Hydra exits where it cannot compose the config
            code = stop.code
        captured = capfd.readouterr()
        output = captured.out + captured.err
        assert code not in (0, None), f"expected failure:\n{output[-2000:]}"
        assert "Traceback" not in output, output[-3000:]
        return output

    return run


def test_misspelled_option_lists_the_valid_ones(tmp_path, failing):
    output = failing("train", "task=lm", "data=pydocs")
    assert "Could not find 'data/pydocs'" in output and "tinyshakespeare" in output and "pydoc" in output
    assert run_dirs(tmp_path) == []


def test_misspelled_key_is_named(tmp_path, failing):
    output = failing("train", "task=lm", "trainer.max_epoch=1")
    assert "trainer.max_epoch" in output
    assert run_dirs(tmp_path) == []


def test_loss_that_does_not_fit_the_task_fails_before_training(tmp_path, failing):
    output = failing("train", *TINY_LM, "loss=hinge")
    assert "loss=hinge does not go with task=lm; choose one of: next_token" in output
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "failed" and not (run_dir / "checkpoints").exists()


def test_missing_data_file_names_the_file_and_where_it_looked(tmp_path, failing):
    output = failing("train", *TINY_LM, "data=tinyshakespeare", f"data.root={tmp_path / 'nowhere'}")
    assert f"{tmp_path / 'nowhere' / 'tinyshakespeare' / 'input.txt'}" in output and "data.root" in output
    assert summary(run_dirs(tmp_path)[0])["status"] == "failed"


def test_empty_and_unset_data_files(tmp_path, failing):
    (tmp_path / "empty.txt").write_text("  \n")
    assert "text file is empty" in failing("train", *TINY_LM, "data=text", "data.path=empty.txt")
    assert "required setting(s) not given: data.path" in failing("train", *TINY_LM, "data=text")


def test_text_too_short_for_the_context(tmp_path, failing):
    (tmp_path / "short.txt").write_text("hello world")
    assert "too little text" in failing("train", *TINY_LM, "data=text", "data.path=short.txt")


def test_corrupt_checkpoint(tmp_path, failing):
    (tmp_path / "broken.ckpt").write_bytes(b"this is not a checkpoint")
    output = failing("sample", str(tmp_path / "broken.ckpt"))
    assert "corrupt or not a mimicry checkpoint" in output
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    assert "not a mimicry checkpoint" in failing("sample", str(tmp_path / "foreign.ckpt"))
    assert "no such run directory" in failing("sample", str(tmp_path / "missing"))


def test_unknown_sample_option(trained_lm, tmp_path, failing):
    output = failing("sample", str(trained_lm), "temprature=0.5")
    assert "unknown sample option(s) temprature" in output and "temperature" in output


def test_nan_loss_stops_the_run_as_diverged_and_keeps_the_last_good_checkpoint(tmp_path, failing):
    output = failing("train", *TINY_LM, "data.steps_per_epoch=2", "trainer.max_epochs=20",
                     "optim.lr=1e5", "optim.warmup_steps=0", "trainer.gradient_clip_val=null")
    assert "training diverged: loss is nan" in output
    (run_dir,) = run_dirs(tmp_path)
    record = summary(run_dir)
    assert record["status"] == "diverged" and "lower optim.lr" in record["error"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in last["state_dict"].values())


def test_bad_numbers_are_named_with_the_fix_before_work_starts(tmp_path, failing):
    cases = {
        "data.batch_size=0": "data.batch_size=0 must be a whole number ≥ 1; e.g. data.batch_size=32",
        "optim.lr=-0.1": "optim.lr=-0.1 must be a number ≥ 0",
        "model.dropout=1.5": "model.dropout=1.5 must be a number in [0, 1)",
        "trainer.val_check_interval=-3": "trainer.val_check_interval=-3 must be a number of batches",
        "trainer.max_time=ten": "trainer.max_time='ten' must be a duration DD:HH:MM:SS",
        "optim.betas=[0.9,1.2]": "optim.betas=[0.9, 1.2] must be two numbers in [0, 1)",
    }
    for override, message in cases.items():
        output = failing("train", *TINY_LM, override)
        assert message in output, (override, output[-1500:])
    for run_dir in run_dirs(tmp_path):  # recorded as failed, nothing trained
        assert summary(run_dir)["status"] == "failed" and not (run_dir / "checkpoints").exists()


def test_a_run_directory_that_cannot_be_created(tmp_path, failing):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    output = failing("train", *TINY_LM, f"hydra.run.dir={blocker / 'run'}")
    assert f"cannot write to {blocker / 'run'}: {blocker} is a file, not a folder" in output
    assert "hydra.run.dir=DIR" in output
    output = failing("train", "-m", *TINY_LM, f"hydra.sweep.dir={blocker / 'sweep'}")
    assert "hydra.sweep.dir=DIR" in output


def test_manual_optimization_refuses_accumulation_and_clipping(tmp_path, failing):
    gan = ["task=gan", "data.limit=32", "trainer.max_epochs=1", "task.metrics_every_n_epochs=0"]
    assert "set it to 1 and raise data.batch_size" in failing("train", *gan, "trainer.accumulate_grad_batches=2")
    assert "set trainer.gradient_clip_val=null" in failing("train", *gan, "trainer.gradient_clip_val=1.0")
    # PPO and DQN step by hand too (a batch is a rollout): their clipping is algo.max_grad_norm
    output = failing("train", "task=rl", "trainer.gradient_clip_val=0.5")
    assert "set trainer.gradient_clip_val=null and clip with algo.max_grad_norm" in output
    assert "algo.max_grad_norm=-1" in failing("train", "task=rl", "algo.max_grad_norm=-1")


def test_an_algo_that_does_not_continue_text_is_refused_on_env_text(tmp_path, failing):
    output = failing("train", "task=rl", "env=text", "algo=dqn", f"init_from={tmp_path}")
    assert "algo=dqn does not go with task=rl env=text; choose one of: ppo, grpo, rloo, filtered_bc, reward_conditioned, dpo" in output


def test_trainer_arguments_people_use_are_accepted(tmp_path):
    run_mimicry(tmp_path, "train", *TINY_LM, "trainer.val_check_interval=3", "trainer.limit_val_batches=0.5",
                "trainer.accumulate_grad_batches=2", "trainer.max_time=00:00:10:00")
    (run_dir,) = run_dirs(tmp_path)
    record = summary(run_dir)
    assert record["status"] == "completed" and record["steps"] == 6  # per epoch: 5 batches = 2 full accumulations + the leftover batch


def test_a_failed_run_does_not_fail_the_next_command_in_the_same_process(tmp_path, monkeypatch):
    """The exit code is the command's own: a notebook or test that runs `train` again starts clean."""
    from mimicry.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY_LM, "data.batch_size=0", "callbacks.progress=null"]) == 1  # recorded as failed
    assert main(["train", *TINY_LM, "trainer.max_epochs=1", "callbacks.progress=null"]) == 0
    assert sorted(summary(r)["status"] for r in run_dirs(tmp_path)) == ["completed", "failed"]
