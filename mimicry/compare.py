"""``mimicry compare RUN_DIR...``: one row per run (found through summary.json), side by side."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mimicry.errors import MimicryError


def find_runs(paths: list[str]) -> list[Path]:
    runs: list[Path] = []
    for path in map(Path, paths or ["outputs"]):
        if (path / "summary.json").is_file():
            runs.append(path)
        elif path.is_dir():
            runs.extend(sorted(p.parent for p in path.rglob("summary.json")))
        else:
            raise MimicryError(f"no such run directory: {path}")
    if not runs:
        raise MimicryError(f"no runs (summary.json) under {', '.join(paths or ['outputs'])}")
    return runs


def compare_command(paths: list[str]) -> int:
    runs = find_runs(paths)
    summaries = [json.loads((run / "summary.json").read_text()) for run in runs]
    metric_names = sorted({name for s in summaries for name in s.get("metrics", {})
                           if name.startswith("val/") or name == "train/loss"})
    table = Table(title=f"{len(runs)} run(s)", caption="run directories: " + ", ".join(sorted({str(r.parent) for r in runs})))
    for column in ["run", "task", "status", "steps", "wall s", *metric_names]:
        table.add_column(column, overflow="fold")
    for run, s in zip(runs, summaries):
        metrics = s.get("metrics", {})
        table.add_row(run.name, s.get("task", "?"), s.get("status", "?"), str(s.get("steps", "")),
                      f"{s.get('wall_time_s', 0):.0f}", *(f"{metrics[m]:.4g}" if m in metrics else "" for m in metric_names))
    Console(width=None if sys.stdout.isatty() else 240).print(table)  # pipes: no wrapping
    return 0
