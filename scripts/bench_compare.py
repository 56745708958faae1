"""How long `mimicry compare` takes on 100 runs (the target: under 5 seconds).

Writes a 100-job sweep of fixture runs into a temp folder (summary.json, .hydra files, and
TensorBoard events through torch's SummaryWriter: a few hundred points per tag), then times the
whole command, as a user runs it (a new process each time: interpreter start and imports count),
for the table and for the table plus a plot. For reference it also times reading the same event
files with TensorBoard's EventAccumulator. Prints the numbers and writes scripts/results/bench_compare.json.

    python scripts/bench_compare.py [--runs 100] [--steps 300] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fixture writer the compare tests use
from compare_fixtures import write_run  # noqa: E402


def composed_lm_config() -> tuple[dict, dict]:
    """mimicry's real `task=lm` config and Hydra node, so the fixtures' YAML files are full size."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("mimicry.conf", version_base="1.3"):
        composed = OmegaConf.to_container(compose("train", overrides=["task=lm"], return_hydra_config=True))
    return {k: v for k, v in composed.items() if k != "hydra"}, composed["hydra"]


def make_sweep(root: Path, runs: int, steps: int) -> Path:
    """`runs` jobs of lr x width x seed, each logging train/* every step and val/loss every 10."""
    import math
    import random

    config, hydra = composed_lm_config()
    sweep = root / "outputs" / "lm" / "multirun" / "2026-01-02" / "10-00-00_ab12"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    grid = [(lr, width, seed) for lr in ("3e-4", "1e-3", "3e-3", "1e-2", "3e-2")
            for width in (32, 64, 128, 256) for seed in range(5)]
    for job in range(runs):
        lr, width, seed = grid[job % len(grid)]
        rng = random.Random(job)
        floor = 1.0 + abs(math.log10(float(lr)) + 2.5) * 0.4 + 32 / width * 0.3
        loss = [floor + 3.0 * math.exp(-s / (steps / 5)) + rng.gauss(0, 0.05) for s in range(steps)]
        curves = {
            "train/loss": list(enumerate(loss)),
            "train/grad_norm": [(s, 1.0 + rng.random()) for s in range(steps)],
            "lr-AdamW/pg1": [(s, float(lr) * min(1.0, s / 20)) for s in range(steps)],
            "train/tokens_per_sec": [(s, 5e4 + rng.gauss(0, 1e3)) for s in range(steps)],
            "val/loss": [(s, loss[s] + 0.1) for s in range(9, steps, 10)],
        }
        overrides = ["task=lm", f"optim.lr={lr}", f"model.n_embd={width}", f"seed={seed}"]
        write_run(sweep / f"{job}_optim.lr={lr},model.n_embd={width},seed={seed}", overrides, curves,
                  config=config, hydra=hydra)
    return sweep


def time_command(args: list[str], repeats: int, cwd: Path) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mimicry.cli", "compare", *args], cwd=cwd,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"mimicry compare {' '.join(args)} failed:\n{done.stderr}")
    return times


def time_event_accumulator(sweep: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    start = time.perf_counter()
    for events in sweep.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        acc.Scalars("val/loss")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        start = time.perf_counter()
        sweep = make_sweep(Path(tmp), args.runs, args.steps)
        made_s = time.perf_counter() - start
        event_bytes = sum(f.stat().st_size for f in sweep.rglob("events.out.tfevents.*"))
        print(f"{args.runs} fixture runs ({event_bytes / 1e6:.1f} MB of events) written in {made_s:.1f} s")

        plot = str(Path(tmp) / "curves.png")
        cases = {
            "table": [str(sweep)],
            "table_group_by_seed_and_plot": [str(sweep), "--group-by", "seed", "--plot", plot],
            "table_and_plot_train_loss_every_step": [str(sweep), "--metric", "train/loss", "--plot", plot],
            "csv_two_metrics_wall_x_plot": [str(sweep), "-m", "val/loss", "-m", "train/loss", "--format", "csv",
                                            "--x", "wall", "--plot", plot],
        }
        timings = {}
        for name, command in cases.items():
            times = time_command(command, args.repeats, Path(tmp))
            timings[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                             "command": "mimicry compare " + " ".join(a.replace(tmp, "$TMP") for a in command)}
            print(f"{name:40s} median {timings[name]['median_s']:.2f} s  (min {timings[name]['min_s']:.2f} s)")
        startup = time_command(["--help"], args.repeats, Path(tmp))
        accumulator_s = time_event_accumulator(sweep)
        print(f"{'interpreter + imports (compare --help)':40s} median {statistics.median(startup):.2f} s")
        print(f"{'EventAccumulator, val/loss of all runs':40s} {accumulator_s:.2f} s (in process, for reference)")

    result = {
        "runs": args.runs, "steps_per_run": args.steps,
        "tags_per_run": 5, "points_per_run": args.steps * 4 + len(range(9, args.steps, 10)),
        "event_megabytes": round(event_bytes / 1e6, 2),
        "compare": timings,
        "compare_help_median_s": round(statistics.median(startup), 3),
        "event_accumulator_read_val_loss_s": round(accumulator_s, 3),
        "target_s": 5.0,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "note": "2 CPU cores shared with other work; whole command, new process each time"},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = REPO / "scripts" / "results" / "bench_compare.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
