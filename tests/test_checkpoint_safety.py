"""Shared files must not run code: a crafted checkpoint or run directory is refused, and the call
it asks for never happens."""
from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from conftest import run_mimicry
from mimicry.checkpoints import load_task
from mimicry.errors import MimicryError
from mimicry.trusted_targets import is_trusted


def craft(trained_lm, tmp_path, change) -> tuple:
    """A copy of a real checkpoint with its saved task arguments changed by `change(checkpoint)`."""
    checkpoint = torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)
    change(checkpoint)
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("target", ["builtins.open", "mimicry.cli.os.system", "mimicry.tasks.base.instantiate"])
def test_a_foreign_target_in_a_checkpoint_is_refused_before_it_runs(trained_lm, tmp_path, target):
    victim = tmp_path / "created_by_the_checkpoint.txt"
    arguments = {"open": {"file": str(victim), "mode": "w"}, "system": {"_args_": [f"touch {victim}"]},
                 "instantiate": {"config": {"_target_": "builtins.open", "file": str(victim), "mode": "w"}}}
    crafted = craft(trained_lm, tmp_path, lambda c: c["hyper_parameters"].update(
        loss={"_target_": target, **arguments[target.rsplit(".", 1)[-1]]}))
    with pytest.raises(MimicryError, match=f"refusing to build '{target}'"):
        load_task(crafted)
    assert not victim.exists()
    # ...and the same one line from the command line, for sample and for init_from.
    output = run_mimicry(tmp_path, "sample", str(crafted), check=False)
    assert output.returncode != 0 and f"refusing to build '{target}'" in output.stderr
    assert "Traceback" not in output.stderr and not victim.exists()


def test_init_from_a_crafted_checkpoint_is_refused(trained_lm, tmp_path):
    victim = tmp_path / "created.txt"
    crafted = craft(trained_lm, tmp_path, lambda c: c["hyper_parameters"]["model"].update(
        _target_="builtins.open", file=str(victim), mode="w"))
    result = run_mimicry(tmp_path, "train", "task=lm", f"init_from={crafted}", "trainer.max_epochs=1", check=False)
    assert result.returncode != 0 and "refusing to build 'builtins.open'" in result.stdout + result.stderr
    assert not victim.exists()


def test_a_task_class_that_is_not_ours_is_refused(trained_lm, tmp_path):
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"].update(task="mimicry.tasks.base.pl.Trainer"))
    with pytest.raises(MimicryError, match="not a mimicry task"):
        load_task(crafted)
    crafted = craft(trained_lm, tmp_path, lambda c: c["hyper_parameters"].update(unexpected=1))
    with pytest.raises(MimicryError, match="takes no argument"):
        load_task(crafted)


def test_resume_refuses_a_run_directory_whose_overrides_build_foreign_classes(trained_lm, tmp_path):
    run_dir = tmp_path / "shared_run"
    shutil.copytree(trained_lm, run_dir)
    victim = tmp_path / "created.txt"
    overrides = run_dir / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(overrides.read_text())
    overrides.write_text(yaml.safe_dump(saved + ["+callbacks.evil._target_=builtins.open",
                                                 f"+callbacks.evil.file={victim}", "+callbacks.evil.mode=w"]))
    result = run_mimicry(tmp_path, "train", f"resume={run_dir}", check=False)
    assert result.returncode != 0 and "refusing to build 'builtins.open'" in result.stderr
    assert not victim.exists()


def test_what_counts_as_ours():
    assert is_trusted("mimicry.models.gpt.GPT") and is_trusted("torch.nn.CrossEntropyLoss")
    # reached through one of our modules' imports, or not a name at all
    for foreign in ["mimicry.cli.os.system", "mimicry.cli.sys.exit", "mimicry.models.gpt.torch.load",
                    "builtins.exec", "os.system", "mimicry.no_such_module.X", None, 3]:
        assert not is_trusted(foreign), foreign
