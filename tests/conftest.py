"""Shared test helpers: run `mimicry` as a user would (a subprocess), and read what it wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import forked_cli

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# Feature nets that tests build are cached per test session, never in the user's cache.
FEATURE_NET_CACHE = Path(tempfile.mkdtemp(prefix="mimicry-feature-nets-"))
os.environ["MIMICRY_FEATURE_NETS"] = str(FEATURE_NET_CACHE)
os.environ["OMP_NUM_THREADS"] = "1"  # before tests/forked_cli.py's server imports torch
torch.set_num_threads(1)

# A GPT small enough that a 2-epoch lm run takes seconds on 2 CPU cores.
TINY_LM = [
    "task=lm", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
    "data.batch_size=8", "data.steps_per_epoch=5", "data.val_batches=2", "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1", "task.sample_every_n_steps=5", "task.sample_tokens=20", "optim.warmup_steps=2",
]


def run_mimicry(cwd: Path, *args: str, check: bool = True, env: dict | None = None,
                fresh: bool = False) -> subprocess.CompletedProcess:
    """`mimicry ARGS` in ``cwd`` (runs land in cwd/outputs), offline data root, output captured.
    A new process each time, forked from one with torch and Lightning imported (tests/forked_cli.py);
    ``fresh=True`` starts a new interpreter instead, for what must see a cold start."""
    full_env = {**os.environ, "MIMICRY_DATA": str(SHARED_DATA), "HYDRA_FULL_ERROR": "0",
                # one thread per run: tests run two at a time on 2 cores (pytest -n 2)
                "OMP_NUM_THREADS": "1", "MIMICRY_FEATURE_NETS": str(FEATURE_NET_CACHE), **(env or {})}
    if fresh:
        result = subprocess.run([sys.executable, "-m", "mimicry.cli", *args], cwd=cwd, env=full_env,
                                capture_output=True, text=True, timeout=600)
    else:
        result = forked_cli.run(list(args), cwd, full_env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"mimicry {' '.join(args)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}")
    return result


def run_dirs(cwd: Path) -> list[Path]:
    """Every run directory under cwd/outputs (they hold summary.json)."""
    return sorted(p.parent for p in (cwd / "outputs").rglob("summary.json"))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_events(run_dir: Path) -> dict[str, dict]:
    """TensorBoard content of a run: {"scalars": {tag: [(step, value)]}, "text": {...}, "images": {...}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, dict] = {"scalars": {}, "text": {}, "images": {}, "layout": {}}
    for event_file in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            found["scalars"].setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in tags.get("tensors", []):  # text summaries are stored as string tensors
            if tag == "custom_scalars__config__":  # the Custom Scalars layout: a serialized proto
                from tensorboard.plugins.custom_scalar import layout_pb2

                layout = layout_pb2.Layout.FromString(acc.Tensors(tag)[0].tensor_proto.string_val[0])
                found["layout"] = {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart}
                                   for c in layout.category}
                continue
            found["text"].setdefault(tag, []).extend(
                (e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag) if e.tensor_proto.string_val)
        for tag in tags.get("images", []):
            found["images"].setdefault(tag, []).extend((e.step, e.width, e.height) for e in acc.Images(tag))
    return found


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"offline datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory) -> Path:
    """One tiny lm run, shared by the tests that only read from it."""
    cwd = tmp_path_factory.mktemp("lm_run")
    run_mimicry(cwd, "train", *TINY_LM)
    (run_dir,) = run_dirs(cwd)
    return run_dir


@pytest.fixture(scope="session")
def gan_sweep(tmp_path_factory) -> Path:
    """A real sweep of two tiny GAN jobs (loss=ns,hinge; ~30 s): events in tb/, grids in samples/
    at steps 0, 4 and 8. Shared by the tests that only read from it (`mimicry tb`, `compare --samples`)."""
    cwd = tmp_path_factory.mktemp("gan_sweep")
    run_mimicry(cwd, "train", "-m", "task=gan", "model.generator.latent_dim=8", "model.generator.width=8",
                "model.discriminator.width=8", "data.limit=64", "data.batch_size=16", "trainer.max_epochs=2",
                "task.sample_every_n_steps=4", "task.num_samples=10", "task.metrics_every_n_epochs=0", "loss=ns,hinge")
    (sweep,) = (cwd / "outputs" / "gan" / "multirun").glob("*/*")
    return sweep
