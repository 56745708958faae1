"""`from mimicry import train, sample, compare`: the commands' code paths, from Python, in-process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import mimicry
from conftest import SHARED_DATA, TINY_LM
from mimicry.errors import MimicryError

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:You are trying to")]

ONE_EPOCH = [a for a in TINY_LM if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1",
                                                                              "callbacks.progress=null"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIMICRY_DATA", str(SHARED_DATA))
    return tmp_path


def test_train_sample_compare_from_python(in_tmp):
    summary = mimicry.train(*ONE_EPOCH)
    run_dir = Path(summary["run_dir"])
    assert summary["status"] == "completed" and summary["task"] == "lm"
    assert summary == json.loads((run_dir / "summary.json").read_text())  # what the run folder says
    (written,) = mimicry.sample(run_dir, n=2, seed=1, prompt="The ", length=12)
    texts = written.read_text().split("\n\n=====\n\n")
    assert len(texts) == 2 and all(t.startswith("The ") and len(t) == 16 for t in texts)

    again = mimicry.train(*ONE_EPOCH, "seed=1")  # the same second, most likely: a folder of its own
    assert again["run_dir"] != summary["run_dir"] and again["status"] == "completed"
    rows = mimicry.compare(in_tmp / "outputs")
    by_seed = {row["hyperparameters"]["seed"]: row for row in rows}
    assert set(by_seed) == {"0", "1"}
    assert by_seed["1"]["final"]["val/loss"] == pytest.approx(again["metrics"]["val/loss"], rel=1e-6)
    grouped = mimicry.compare(in_tmp / "outputs", metric="val/loss", group_by="seed")
    assert len(grouped) == 1 and len(grouped[0]["final"]["val/loss"]) == 2


def test_a_sweep_returns_its_jobs_in_order(in_tmp):
    jobs = mimicry.train("-m", *ONE_EPOCH, "model.n_embd=16,32")
    assert [Path(job["run_dir"]).name for job in jobs] == ["0_model.n_embd=16", "1_model.n_embd=32"]
    assert all(job["status"] == "completed" for job in jobs)


def test_bad_input_raises_and_a_failed_run_returns_its_error(in_tmp):
    with pytest.raises(MimicryError, match="could not be composed"):
        mimicry.train("task=lm", "trainer.max_epoch=1")  # a typo: Hydra says which key, the call raises
    failed = mimicry.train(*ONE_EPOCH, "data=text", "data.path=no_such_file.txt")
    assert failed["status"] == "failed" and "no_such_file.txt" in failed["error"]
    with pytest.raises(MimicryError, match="no such run directory or checkpoint"):
        mimicry.sample(in_tmp / "nowhere")
