"""`mimicry tb PATH...`: TensorBoard started for real on a real sweep, and the names, notes and
errors on run folders written file by file (compare_fixtures.py)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from compare_fixtures import loss_curve, write_run
from mimicry.cli import main

STARTUP_TIMEOUT_S = 90  # TensorBoard's first answer, on 2 busy CPU cores


def tb(capsys, *args: str) -> tuple[int, str, str]:
    """`mimicry tb ARGS` in this process: exit code, stdout, stderr."""
    code = main(["tb", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed(out: str, prefix: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(prefix)]
    return line[len(prefix):].strip()


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch) -> Path:
    """The link folder is made here, so a test sees exactly the folders it left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def runs_listed(url: str) -> list[str] | None:
    """TensorBoard's JSON list of runs, or None while it is not answering yet."""
    try:
        with urllib.request.urlopen(f"{url}data/runs", timeout=5) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


def test_tensorboard_serves_exactly_the_sweep_jobs_named_by_their_differing_override(gan_sweep):
    process = subprocess.Popen([sys.executable, "-m", "mimicry.cli", "tb", str(gan_sweep), "--host", "127.0.0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(5)]  # URL, "runs (2):", two runs, logdir
        url = lines[0].removeprefix("TensorBoard:").strip()
        logdir = Path(lines[4].removeprefix("logdir:").split(" (")[0].strip())
        assert url.startswith("http://127.0.0.1:") and logdir.is_dir(), lines
        assert sorted(os.listdir(logdir)) == ["loss=hinge", "loss=ns"]
        deadline, listed = time.monotonic() + STARTUP_TIMEOUT_S, None
        while time.monotonic() < deadline:
            listed = runs_listed(url)
            if listed is not None and len(listed) >= 2:  # the data server may find one run before the other
                break
            try:
                process.wait(timeout=0.5)  # between polls; returns at once if the command died
                pytest.fail(f"mimicry tb exited {process.returncode}:\n{process.stderr.read()[-3000:]}")
            except subprocess.TimeoutExpired:
                pass
        assert sorted(listed or []) == ["loss=hinge", "loss=ns"]
    finally:
        process.terminate()  # SIGTERM: stops as Ctrl-C does
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    assert "stopped TensorBoard" in err
    assert not logdir.exists()  # the links are gone; the runs' own tb/ folders are not
    assert all((job / "tb").is_dir() for job in gan_sweep.iterdir() if job.is_dir())
    assert runs_listed(url) is None  # nothing answers on that port any more


def test_print_only_names_the_runs_and_prints_the_command(gan_sweep, capsys, own_tmpdir):
    code, out, err = tb(capsys, str(gan_sweep), "--print-only")
    assert code == 0 and err == ""
    command = printed(out, "command:")
    assert f"{sys.executable} -m tensorboard.main --logdir {own_tmpdir}" in command and "--port" in command
    logdir = Path(printed(out, "logdir:").split(" (")[0])
    links = {link.name: link.resolve() for link in logdir.iterdir()}  # kept, so the command works
    assert links == {"loss=ns": (gan_sweep / "0_loss=ns" / "tb").resolve(),
                     "loss=hinge": (gan_sweep / "1_loss=hinge" / "tb").resolve()}
    assert "TensorBoard:" not in out  # nothing was started


def test_names_are_unique_and_path_safe(tmp_path, capsys, own_tmpdir):
    write_run(tmp_path / "r1", ["task=lm", "data.path=texts/a.txt"], {"val/loss": loss_curve(1.0)})
    write_run(tmp_path / "r2", ["task=lm", "data.path=texts/a.txt"], {"val/loss": loss_curve(2.0)})
    write_run(tmp_path / "r3", ["task=lm", "data.path=texts/b.txt"], {"val/loss": loss_curve(3.0)})
    code, out, _ = tb(capsys, str(tmp_path / "r1"), str(tmp_path / "r2"), str(tmp_path / "r3"), "--print-only")
    logdir = Path(printed(out, "logdir:").split(" (")[0])
    assert code == 0
    assert sorted(os.listdir(logdir)) == ["path=texts-a.txt (r1)", "path=texts-a.txt (r2)", "path=texts-b.txt"]


def test_one_run_alone_is_named_by_its_run_label(tmp_path, capsys, own_tmpdir):
    run = write_run(tmp_path / "10-00-00_ab12_optim.lr=0.01", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    code, out, _ = tb(capsys, str(run), "--print-only")
    assert code == 0 and os.listdir(Path(printed(out, "logdir:").split(" (")[0])) == ["10-00-00_ab12"]


def test_damaged_summary_is_a_note_and_the_events_are_still_shown(tmp_path, capsys, own_tmpdir):
    write_run(tmp_path / "a", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    damaged = write_run(tmp_path / "b", ["optim.lr=0.001"], {"val/loss": loss_curve(2.0)})
    (damaged / "summary.json").write_text('{"status": "compl')  # cut short, as by a full disk
    code, out, err = tb(capsys, str(tmp_path), "--print-only")
    assert code == 0 and err == f"note: {damaged}: summary.json unreadable\n"
    assert sorted(os.listdir(Path(printed(out, "logdir:").split(" (")[0]))) == ["lr=0.001", "lr=0.01"]


def test_runs_without_events_or_with_links_out_of_their_folder_are_left_out(tmp_path, capsys, own_tmpdir):
    write_run(tmp_path / "a", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    no_events = write_run(tmp_path / "b", ["optim.lr=0.001"], {"val/loss": loss_curve(2.0)})
    shutil.rmtree(no_events / "tb")
    elsewhere = write_run(tmp_path / "elsewhere" / "c", ["optim.lr=0.1"], {"val/loss": loss_curve(3.0)})
    linked = write_run(tmp_path / "d", ["optim.lr=0.2"], {"val/loss": loss_curve(3.0)})
    shutil.rmtree(linked / "tb")
    (linked / "tb").symlink_to(elsewhere / "tb")  # a shared run folder must not show what lies outside it
    code, out, err = tb(capsys, str(tmp_path / "a"), str(no_events), str(linked), "--print-only")
    assert code == 0
    assert err.splitlines() == [f"note: {no_events}: no TensorBoard event files in tb/; left out",
                                f"note: {linked}: tb/ links outside the run folder; left out"]
    assert os.listdir(Path(printed(out, "logdir:").split(" (")[0])) == ["lr=0.01"]


def test_no_runs_or_no_events_is_one_line(tmp_path, capsys, own_tmpdir):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "not_there"):
        code, out, err = tb(capsys, str(path))
        assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1 and str(path) in err
    run = write_run(tmp_path / "a", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    shutil.rmtree(run / "tb")
    code, out, err = tb(capsys, str(run))
    assert code == 2 and err.endswith("has TensorBoard event files in its tb/ folder (a run writes them as it trains); "
                                      "nothing to show\n") and "none of the 1 runs" in err
    assert os.listdir(own_tmpdir) == []


def test_a_port_in_use_is_one_line_and_leaves_nothing_behind(tmp_path, capsys, own_tmpdir):
    run = write_run(tmp_path / "a", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = tb(capsys, str(run), "--port", str(port), "--host", "127.0.0.1")
    assert code == 2 and out == ""
    assert err == (f"error: port {port} on 127.0.0.1 is in use (another TensorBoard?); choose another with --port, "
                   "or leave --port out for a free one\n")
    assert os.listdir(own_tmpdir) == []


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tb", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and all(option in out for option in ("--port", "--host", "--print-only"))
    assert main(["--help"]) == 0 and "tb PATH..." in capsys.readouterr().out
