"""A shared run is data: nothing in a checkpoint, run folder or sweep folder can run code, import a
module or write elsewhere. Each test is an attack through the real CLI (``mimicry.cli.main``, and
a subprocess where the process matters): a harmless side effect (a file under tmp_path) that must
not appear, and one line that names the refused key."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import run_mimicry
from mimicry.checkpoints import load_task
from mimicry.cli import main
from mimicry.errors import MimicryError


def craft(trained_lm: Path, tmp_path: Path, change) -> Path:
    """A copy of a real checkpoint, changed by ``change(checkpoint)``."""
    checkpoint = torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)
    change(checkpoint)
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


def refused(capsys, *argv: str) -> str:
    """Run the CLI in this process; it must fail with one line (no traceback). Returns that line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def opener(victim: Path) -> dict:
    """A config node that, if anything built it, would create ``victim``."""
    return {"_target_": "builtins.open", "file": str(victim), "mode": "w"}


# ---- 1. checkpoints: what the file names is never built ----------------------------------------------
def test_class_names_saved_beside_the_recipe_are_never_read(trained_lm, tmp_path, capsys):
    """Lightning's saved hyper-parameters, even a chain of mimicry's own helpers, build nothing."""
    victim = tmp_path / "created_by_the_checkpoint.txt"
    crafted = craft(trained_lm, tmp_path, lambda c: c.update(hyper_parameters={
        "loss": {"_target_": "mimicry.tasks.base.instantiate", "config": opener(victim)},
        "model": {"_target_": "mimicry.cli.os.system", "_args_": [f"touch {victim}"]}}))
    assert main(["sample", str(crafted), "n=1", "length=5", f"out={tmp_path / 'samples'}"]) == 0
    assert not victim.exists()
    assert "_target_" not in str(torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)["mimicry"])


RECIPE_ATTACKS = {
    "a chain of our own functions": (lambda v: {"values": {"loss._target_": "mimicry.tasks.base.instantiate"}},
                                     "loss._target_"),
    "positional arguments": (lambda v: {"values": {"model._args_": [f"touch {v}"]}}, "model._args_"),
    "a partial": (lambda v: {"values": {"model._partial_": True}}, "model._partial_"),
    "oc.create interpolation": (lambda v: {"values": {"model.n_embd": "${oc.create:{_target_: builtins.open, file: "
                                                      f"{v}, mode: w}}"}}, "model.n_embd"),
    "a root-level node": (lambda v: {"values": {"task.prompt": "${evil}", "evil": opener(v)}}, "task.prompt"),
    "an interpolation inside a list": (lambda v: {"values": {"optim.betas": [0.9, "${oc.env:HOME}"]}}, "optim.betas"),
    "a mapping value": (lambda v: {"values": {"loss": opener(v)}}, "loss"),
    "a key the configs do not know": (lambda v: {"values": {"model.evil": 1}}, "model.evil"),
    "a choice outside conf/": (lambda v: {"choices": {"model": "../../../tmp/evil"}}, "model=../../../tmp/evil"),
    "Hydra's launcher": (lambda v: {"choices": {"hydra/launcher": "joblib"}}, "hydra/launcher"),
    "a reward by dotted path": (lambda v: {"values": {"reward._target_": "os.system"}}, "reward._target_"),
    "a data root to write into": (lambda v: {"values": {"data.root": str(v.parent)}}, "data.root"),
    "a path to read": (lambda v: {"values": {"init_from": str(v)}}, "init_from"),
}


@pytest.mark.parametrize("attack", RECIPE_ATTACKS)
def test_a_crafted_recipe_is_refused_on_every_reader(trained_lm, tmp_path, capsys, attack):
    victim = tmp_path / "created.txt"
    change, named = RECIPE_ATTACKS[attack]

    def alter(checkpoint):
        recipe = checkpoint["mimicry"]["recipe"]
        for part, entries in change(victim).items():
            recipe[part].update(entries)
    crafted = craft(trained_lm, tmp_path, alter)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(crafted, run / "checkpoints" / "best.ckpt")
    for argv in (["sample", str(crafted)], ["eval", str(run)], ["probe", "sharpness", str(run)]):
        assert named in refused(capsys, *argv), argv
    assert not victim.exists()


def test_the_data_spec_is_plain_data(trained_lm, tmp_path, capsys):
    victim = tmp_path / "created.txt"
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"]["derived"]["data_spec"]["tokenizer"].update(
        {"_target_": "builtins.open", "file": str(victim)}))
    assert "_target_" in refused(capsys, "sample", str(crafted))
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"]["derived"].update(lm=torch.zeros(1)))
    assert "lm" in refused(capsys, "sample", str(crafted))
    assert not victim.exists()


def test_init_from_a_crafted_checkpoint_is_refused(trained_lm, tmp_path):
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"]["derived"]["data_spec"].update(
        tokenizer={"kind": "char", "vocab": {"_target_": "builtins.open"}}))
    result = run_mimicry(tmp_path, "train", "task=lm", f"init_from={crafted}", "trainer.max_epochs=1", check=False)
    assert result.returncode != 0 and "refusing the key '_target_'" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_an_honest_recipe_value_is_applied(trained_lm, tmp_path):
    """The recipe is what rebuilds the task: a value in it reaches the model (here, a wrong size)."""
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"]["recipe"]["values"].update({"model.n_embd": 48}))
    with pytest.raises(MimicryError, match="weights don't fit the model its recipe builds"):
        load_task(crafted)


def test_a_checkpoint_without_a_recipe_says_how_to_rerun_it(trained_lm, tmp_path, capsys):
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"].pop("recipe"))
    assert "older than run recipes" in refused(capsys, "sample", str(crafted))
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"].update(task="mimicry.tasks.gan.GenerativeAdversarial"))
    assert "its recipe builds a mimicry.tasks.lm.LanguageModeling" in refused(capsys, "sample", str(crafted))


@pytest.mark.parametrize("damage", ["truncated", "not torch", "weights not tensors", "no mimicry section"])
def test_a_damaged_checkpoint_gets_one_line(trained_lm, tmp_path, capsys, damage):
    path = tmp_path / "damaged.ckpt"
    data = (trained_lm / "checkpoints" / "last.ckpt").read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not torch":
        path.write_text("hello")
    else:
        checkpoint = torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)
        if damage == "weights not tensors":
            checkpoint["state_dict"] = {"model.x": [1, 2]}
        else:
            checkpoint.pop("mimicry")
        torch.save(checkpoint, path)
    assert str(path) in refused(capsys, "sample", str(path))


# ---- 2. resume=: saved overrides are checked as data ------------------------------------------------
def shared_run(trained_lm: Path, tmp_path: Path, extra: list | None = None, replace=None) -> Path:
    run_dir = tmp_path / "shared_run"
    shutil.copytree(trained_lm, run_dir)
    overrides = run_dir / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(overrides.read_text())
    overrides.write_text(yaml.safe_dump(replace if replace is not None else saved + (extra or [])))
    return run_dir


RESUME_ATTACKS = {
    "an added callable": ("+callbacks.evil._target_=builtins.open", "callbacks.evil._target_"),
    "an interpolated target": ("model.n_embd='${oc.create:{_target_:builtins.open,file:VICTIM,mode:w}}'",
                               "model.n_embd"),
    "an interpolation": ("model.n_embd=${oc.env:HOME}", "model.n_embd"),
    "a logging handler class": ("hydra.job_logging.handlers.file.class=logging.FileHandler", "hydra.job_logging"),
    "a checkpoint folder": ("callbacks.checkpoint.dirpath=VICTIM", "callbacks.checkpoint.dirpath"),
    "a checkpoint file name": ("callbacks.last.filename=../../VICTIM", "callbacks.last.filename"),
    "the TensorBoard folder": ("logger.tensorboard.save_dir=VICTIM", "logger.tensorboard.save_dir"),
    "the TensorBoard name": ("logger.tensorboard.name=../../VICTIM", "logger.tensorboard.name"),
    "an MLflow store": ("logger.mlflow.tracking_uri=sqlite:///VICTIM", "logger.mlflow.tracking_uri"),
    "Hydra's output folder": ("hydra.output_subdir=VICTIM", "hydra.output_subdir"),
    "a launcher": ("hydra/launcher=joblib", "hydra/launcher"),
    "a data root": ("data.root=VICTIM", "data.root"),
    "a reward by dotted path": ("reward._target_=os.system", "reward._target_"),
    "a deleted key": ("~model.n_embd", "~model.n_embd"),
    "a package move": ("model@callbacks.evil=gpt", "model@callbacks.evil"),
    "a key the configs do not know": ("model.evil=1", "model.evil"),
    "an option outside conf/": ("model=../../evil", "model"),
}


@pytest.mark.parametrize("attack", RESUME_ATTACKS)
def test_resume_refuses_what_a_run_folder_may_not_say(trained_lm, tmp_path, capsys, attack):
    victim = tmp_path / "victim"
    override, named = RESUME_ATTACKS[attack]
    run_dir = shared_run(trained_lm, tmp_path, [override.replace("VICTIM", str(victim))])
    message = refused(capsys, "train", f"resume={run_dir}")
    assert named in message and str(run_dir / ".hydra" / "overrides.yaml") in message
    assert not victim.exists() and not list(tmp_path.glob("**/victim*"))


def test_resume_says_how_to_type_a_refused_override(trained_lm, tmp_path, capsys):
    run_dir = shared_run(trained_lm, tmp_path, ["data.root=/somewhere/else"])
    message = refused(capsys, "train", f"resume={run_dir}")
    assert "a path" in message and f"mimicry train resume={run_dir} 'data.root=/somewhere/else'" in message


def test_resume_drops_the_runs_a_run_started_from_and_follows_none_of_them(tmp_path):
    """init_from / tokenizer.from_run / latent.from_run in a shared run's overrides: the checkpoint carries
    what they pointed at, so resume drops them (the paths are never opened); hf:DIR is typed again."""
    from mimicry.saved_overrides import CARRIED_BY_CHECKPOINT, vet_overrides

    victim = tmp_path / "victim"
    saved = ["task=image_ar", "tokenizer=vq", f"tokenizer.from_run={victim}", f"init_from={victim}", "optim.lr=0.002"]
    kept = vet_overrides(saved, tmp_path / "overrides.yaml", "mimicry train resume=RUN", carried=CARRIED_BY_CHECKPOINT)
    assert kept == ["task=image_ar", "tokenizer=vq", "optim.lr=0.002"] and not victim.exists()
    with pytest.raises(MimicryError, match="it is a path"):
        vet_overrides(["task=lm", f"init_from=hf:{victim}"], tmp_path / "overrides.yaml", "mimicry train resume=RUN",
                      carried=CARRIED_BY_CHECKPOINT)
    with pytest.raises(MimicryError, match="it is a path"):  # a path the checkpoint does not carry
        vet_overrides(["task=lm", f"data.root={victim}"], tmp_path / "overrides.yaml", "mimicry train resume=RUN",
                      carried=CARRIED_BY_CHECKPOINT)


@pytest.mark.parametrize("content", ["3", "[3]", "{a: 1}", "[unclosed", "- 'model.n_embd=[1,'"])
def test_resume_answers_damaged_overrides_in_one_line(trained_lm, tmp_path, capsys, content):
    run_dir = shared_run(trained_lm, tmp_path)
    (run_dir / ".hydra" / "overrides.yaml").write_text(content)
    assert "overrides.yaml" in refused(capsys, "train", f"resume={run_dir}")


def test_resume_of_another_task_says_what_the_run_is(trained_lm, tmp_path, capsys):
    message = refused(capsys, "train", f"resume={trained_lm}", "task=gan")
    assert "is a lm run" in message and "task=gan" in message


def test_resume_sweep_refuses_what_a_sweep_folder_may_not_say(tmp_path, capsys):
    victim = tmp_path / "created.txt"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for bad, named in [("+callbacks.evil._target_=builtins.open", "callbacks.evil._target_"),
                       (f"logger.tensorboard.save_dir={victim}", "logger.tensorboard.save_dir"),
                       ("model.n_embd=${oc.env:HOME}", "model.n_embd"),
                       ("loss=ns,../../evil", "loss=../../evil")]:
        (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["task=gan", bad]}}}))
        message = refused(capsys, "train", f"resume_sweep={sweep}")
        assert named in message and "multirun.yaml" in message
    (sweep / "multirun.yaml").write_text("[1, 2]")
    assert "damaged" in refused(capsys, "train", f"resume_sweep={sweep}")
    assert not victim.exists()


def test_a_refused_run_folder_runs_nothing_in_a_real_process(trained_lm, tmp_path):
    """The same refusal through a real `mimicry` process: exit code, one line, no file."""
    victim = tmp_path / "victim.txt"
    run_dir = shared_run(trained_lm, tmp_path, ["+callbacks.evil._target_=builtins.open", f"+callbacks.evil.file={victim}",
                                                "+callbacks.evil.mode=w"])
    result = run_mimicry(tmp_path, "train", f"resume={run_dir}", check=False)
    assert result.returncode != 0 and "refusing the saved override" in result.stderr
    assert "Traceback" not in result.stderr and not victim.exists()


@pytest.mark.parametrize("damage", [{"tokenizer": "abc"}, {"tokenizer": {"kind": "char", "vocab": ""}},
                                    {"tokenizer": {"kind": "char", "vocab": 42}}])
def test_plain_values_of_the_wrong_kind_get_one_line(trained_lm, tmp_path, capsys, damage):
    crafted = craft(trained_lm, tmp_path, lambda c: c["mimicry"]["derived"]["data_spec"].update(damage))
    message = refused(capsys, "sample", str(crafted))
    assert str(crafted) in message or "tokenizer is damaged" in message


def test_paths_for_a_run_read_back_are_the_users_to_type(trained_lm, tmp_path):
    """eval and probe take data.root=/data.path= from their own command line, never from the file."""
    from mimicry.checkpoints import load_task_and_config
    from mimicry.recipe import typed_data_values

    rest, typed = typed_data_values([str(trained_lm), "n=4", f"data.path={tmp_path / 'text.txt'}"])
    assert rest == [str(trained_lm), "n=4"] and typed == {"data.path": str(tmp_path / "text.txt")}
    _, cfg = load_task_and_config(trained_lm, typed=typed)
    assert cfg.data.path == str(tmp_path / "text.txt")
    with pytest.raises(MimicryError, match="give a data setting by its name"):
        typed_data_values(["data._target_=builtins.open"])


class _Payload:
    """What a malicious pickle carries: unpickling it would call ``open(victim, "w")``."""

    def __init__(self, victim: Path):
        self.victim = victim

    def __reduce__(self):
        return open, (str(self.victim), "w")


def test_resume_reads_last_ckpt_as_weights_only(trained_lm, tmp_path):
    victim = tmp_path / "created_by_unpickling.txt"
    run_dir = shared_run(trained_lm, tmp_path)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["loops"] = _Payload(victim)
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")
    result = run_mimicry(tmp_path, "train", f"resume={run_dir}", "trainer.max_epochs=3", check=False)
    assert result.returncode != 0 and "cannot read checkpoint" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and not victim.exists()
