"""Every run knows what made it (provenance.json), `outputs/latest` is the newest run, `mimicry runs`
lists runs from their summaries, and `mimicry diff` shows what differs between two runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_LM, read_events, run_dirs, run_mimicry
from mimicry import provenance
from mimicry.cli import main
from mimicry.run_diff import git_between

SWEEP = ["train", "-m", *TINY_LM, "trainer.max_epochs=1", "task.sample_every_n_steps=0", "model.n_embd=16,32"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real 2-job sweep (n_embd 16 and 32): two run folders written by `mimicry train`."""
    cwd = tmp_path_factory.mktemp("records")
    run_mimicry(cwd, *SWEEP)
    return cwd


def jobs(cwd: Path) -> list[Path]:
    return sorted(run_dirs(cwd), key=lambda d: int(d.name.split("_")[0]))


def test_each_sweep_job_records_its_code_versions_machine_and_command(sweep):
    for job in jobs(sweep):
        record = json.loads((job / "provenance.json").read_text())
        assert record["command"] == "mimicry " + " ".join(SWEEP)  # as typed, once per job
        assert record["versions"]["torch"] == torch.__version__
        assert record["machine"]["cpu_count"] == os.cpu_count()
        git_state = record["code"]["git"]
        if (REPO / ".git").exists():
            assert git_state["commit"] == git(REPO, "rev-parse", "HEAD").strip()
            assert git_state["dirty"] == bool(git(REPO, "status", "--porcelain").strip())
            assert (job / "code.patch").is_file() == git_state["dirty"]
        else:  # an unpacked archive: said so, not guessed
            assert git_state is None and "not a git checkout" in record["code"]["note"]
        text = read_events(job)["text"]["run/provenance/text_summary"][0][1]  # TensorBoard's Text tab
        assert record["command"] in text and record["versions"]["torch"] in text


def test_latest_points_at_the_newest_run_and_is_listed_once(sweep, capsys):
    latest = sweep / "outputs" / "latest"
    assert latest.is_symlink() and not os.path.isabs(os.readlink(latest))  # relative: the folder can move
    assert latest.resolve() == jobs(sweep)[-1].resolve()
    assert main(["runs", str(sweep / "outputs"), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 2  # the link is not a third run


def test_code_state_records_a_patch_that_recreates_the_dirty_tree(tmp_path):
    repo = tmp_path / "code"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "model.py").write_text("width = 32\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    clean, patch = provenance.code_state(repo)
    assert clean["git"]["dirty"] is False and patch == ""

    (repo / "model.py").write_text("width = 64\n")
    (repo / "new_loss.py").write_text("def loss(): return 0\n")
    state, patch = provenance.code_state(repo)
    assert state["git"]["dirty"] and state["git"]["untracked_files"] == ["new_loss.py"]
    copy = tmp_path / "copy"
    subprocess.run(["git", "clone", "-q", str(repo), str(copy)], check=True)
    git(copy, "checkout", "-q", state["git"]["commit"])
    (tmp_path / "code.patch").write_text(patch)
    git(copy, "apply", str(tmp_path / "code.patch"))
    assert (copy / "model.py").read_text() == "width = 64\n"
    assert (copy / "new_loss.py").read_text() == "def loss(): return 0\n"

    inside = repo / "site-packages"  # a package installed inside someone's project is not its checkout
    inside.mkdir()
    assert provenance.code_state(inside)[0]["git"] is None


def test_git_between_two_commits(tmp_path):
    repo = tmp_path / "code"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "a.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "lower the learning rate")
    second = git(repo, "rev-parse", "HEAD").strip()
    lines = git_between(first, second, root=repo)
    assert lines[0].startswith("1 commit(s) in B")
    assert "lower the learning rate" in lines[1]
    assert any("a.py" in line for line in lines)
    assert "not in" in git_between(first, "f" * 40, root=repo)[0]


def test_runs_filters_sorts_and_formats(sweep, capsys):
    outputs = str(sweep / "outputs")
    assert main(["runs", outputs, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(line["run"]).name.split("_")[0] for line in listed] == ["1", "0"]  # newest first
    summaries = {line["run"]: json.loads((Path(line["run"]) / "summary.json").read_text()) for line in listed}
    for line in listed:
        assert line["metric"] == "val/loss" and line["status"] == "completed" and line["task"] == "lm"
        assert line["final"] == pytest.approx(summaries[line["run"]]["metrics"]["val/loss"])
        assert "model.n_embd=" in line["overrides"]

    assert main(["runs", outputs, "--sort", "best", "--format", "json"]) == 0
    bests = [line["best"] for line in json.loads(capsys.readouterr().out)]
    assert bests == sorted(bests)  # val/loss: lower first
    assert main(["runs", outputs, "--task", "gan", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", outputs, "--status", "completed", "--since", "1d", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("time,task,status,metric,final,best") and len(rows) == 3
    assert main(["runs", outputs, "--since", "2099-01-01", "--format", "md"]) == 0
    assert capsys.readouterr().out.count("\n") == 2  # header and rule only
    assert main(["runs", outputs, "--limit", "1"]) == 0
    assert "1 run" in capsys.readouterr().out


def test_runs_reads_summaries_only_and_survives_damaged_folders(tmp_path, capsys):
    """Old summaries (no start time, no monitor), garbage YAML and events, a damaged summary.json."""
    old = tmp_path / "outputs" / "lm" / "2026-01-01" / "10-00-00_ab12"
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "config.yaml").write_text("{ not yaml: [")
    (old / "tb").mkdir()
    (old / "tb" / "events.out.tfevents.1.host.1.0").write_bytes(os.urandom(4096))
    (old / "summary.json").write_text(json.dumps({
        "status": "completed", "task": "lm", "overrides": ["task=lm", "optim.lr=0.01", "hydra.run.dir=x"],
        "updated": "2026-01-01T10:05:00+00:00", "wall_time_s": 300.0, "steps": 40,
        "metrics": {"val/loss": 2.5}, "best": {"val/loss": 2.25, "checkpoint": "c"}}))
    broken = tmp_path / "outputs" / "gan" / "2026-01-02" / "11-00-00_cd34"
    broken.mkdir(parents=True)
    (broken / "summary.json").write_text("{half a fi")
    assert main(["runs", str(tmp_path / "outputs"), "--format", "json"]) == 0
    first, second = json.loads(capsys.readouterr().out)
    started = datetime.fromisoformat("2026-01-01T10:00:00+00:00")  # the last update less the wall time
    assert datetime.fromisoformat(second["time"]) == started
    assert (second["metric"], second["final"], second["best"], second["overrides"]) == ("val/loss", 2.5, 2.25, "optim.lr=0.01")
    assert first["status"] == "unknown (summary.json unreadable)"


def test_runs_and_diff_errors_are_one_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "outputs").mkdir()
    assert main(["runs", str(tmp_path / "outputs"), "--since", "last tuesday"]) == 2
    assert "--since last tuesday: not a date" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "nowhere"), str(tmp_path)]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["diff", str(tmp_path), str(tmp_path)]) == 2
    assert "not a mimicry run directory" in capsys.readouterr().err
    for command in ("runs", "diff"):
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        assert stop.value.code == 0
        assert f"mimicry {command}" in capsys.readouterr().out


def test_diff_shows_config_code_and_metrics(sweep, capsys):
    small, large = jobs(sweep)
    assert main(["diff", str(small), str(large), "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {"key": "model.n_embd", "a": "16", "b": "32"} in found["config"]
    assert not [row for row in found["config"] if row["key"] == "model.n_layer"]  # the same: not shown
    assert found["code"]["a"] == found["code"]["b"]  # one sweep, one code
    loss = next(row for row in found["metrics"] if row["metric"] == "val/loss")
    for run, key in ((small, "a_final"), (large, "b_final")):
        assert loss[key] == pytest.approx(json.loads((run / "summary.json").read_text())["metrics"]["val/loss"])
    assert main(["diff", str(small), str(large)]) == 0
    table = capsys.readouterr().out
    assert "model.n_embd" in table and "val/loss" in table


def test_diff_reads_a_shared_run_as_data(sweep, tmp_path, capsys):
    """A doctored provenance.json: a 'commit' that is a git option, a patch file outside the folder,
    a code.patch symlinked to a secret. None is passed to git or read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    a, b = (shutil.copytree(job, tmp_path / job.name) for job in jobs(sweep))
    for run, commit, patch_file in ((a, "--output=/tmp/pwned", "../secret.txt"), (b, "$(touch /tmp/pwned)", "code.patch")):
        record = json.loads((run / "provenance.json").read_text())
        record["code"] = {"git": {"commit": commit, "branch": "x", "dirty": True, "changed_files": ["f"]},
                          "patch_file": patch_file}
        (run / "provenance.json").write_text(json.dumps(record))
    (b / "code.patch").unlink(missing_ok=True)
    (b / "code.patch").symlink_to(secret)
    assert main(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "TOP SECRET" not in out and "commit ?" in out
    assert not Path("/tmp/pwned").exists()
