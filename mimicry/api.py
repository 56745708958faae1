"""mimicry from Python (a notebook, a script): the same code paths as the command line, returning
what the commands print as values.

    from mimicry import train, sample, compare
    summary = train("task=gan", "trainer.max_steps=200")   # summary.json of the run: status, metrics, run_dir
    images = sample(summary["run_dir"], n=16, seed=0)       # the files written
    rows = compare("outputs/gan")                           # one dict per run

Bad input raises MimicryError with the message the command would print.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mimicry.errors import MimicryError


def train(*overrides: str) -> dict[str, Any] | list[dict[str, Any]]:
    """`mimicry train OVERRIDES`: the run's summary (what its summary.json holds: status, metrics,
    best, steps, run_dir, ...). A sweep (`"-m"`, `hparams_search=`) returns one summary per job, in
    job order. A run that fails or diverges returns its summary with that status and its error."""
    from mimicry import cli
    from mimicry.provenance import COMMAND_ENV
    from mimicry.sweeps import RUN_ID_ENV

    os.environ.pop(RUN_ID_ENV, None)  # each call names its folders afresh (two calls in one second differ)
    os.environ[COMMAND_ENV] = f"mimicry.train({', '.join(map(repr, overrides))})"  # what its runs record
    argv = sys.argv
    try:
        summaries, sweep_dir = cli.run_train(list(overrides))
    except SystemExit as stop:  # Hydra exits where it cannot compose the config; it has printed why
        if stop.code in (0, None):
            return []  # --help, --cfg: printed, nothing run
        raise MimicryError(f"mimicry train {' '.join(overrides)}: the config could not be composed "
                           f"(Hydra's message is above)") from None
    finally:
        sys.argv = argv
    if sweep_dir is None:
        return summaries[-1] if summaries else []
    # read from the folder, in job order: a launcher may have run the jobs in other processes
    from mimicry.run_reading import read_summary_file
    from mimicry.sweeps import job_folders

    return [read_summary_file(folder / "summary.json")[0] for folder in job_folders(Path(sweep_dir))]


def sample(run: str | Path, **options: Any) -> list[Path]:
    """`mimicry sample RUN k=v ...`: draws from a run directory or checkpoint (n=8, seed=0, out=None
    and the task's own options, e.g. prompt=, temperature= for lm; sampler=, steps= for diffusion);
    the files written."""
    from mimicry.sampling import draw_samples

    return draw_samples(run, options)


def compare(*paths: str | Path, metric: str | list[str] | None = None, group_by: str | None = None) -> list[dict[str, Any]]:
    """`mimicry compare PATH...`: one dict per run: the hyperparameters that differ, status, steps,
    wall seconds, and each metric's final and best value (None where the run logged none). With
    ``group_by``, one dict per group, its values lists over the group's runs."""
    from mimicry.run_rows import compare_runs

    metrics = [metric] if isinstance(metric, str) else metric
    _, _, metrics, rows = compare_runs([str(p) for p in paths], metrics, group_by)
    pick = list if group_by else (lambda values: values[0] if values else None)
    return [{"label": row.label, "run_dirs": [str(run.path) for run in row.runs], "status": row.status,
             "hyperparameters": row.hparams, "steps": row.steps, "wall_s": row.wall,
             "final": {m: pick(row.metrics[m]["final"]) for m in metrics},
             "best": {m: pick(row.metrics[m]["best"]) for m in metrics}} for row in rows]
