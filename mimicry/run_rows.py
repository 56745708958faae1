"""The rows of a comparison: which runs, which of their hyperparameters differ, each metric's final
and best value, one row per run or per group of runs. Shared by `mimicry compare` (table, plot,
sample grids), `mimicry diff` and the Python API; reads run folders through mimicry/run_reading.py.
"""
from __future__ import annotations

import math
import textwrap
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mimicry.errors import MimicryError
from mimicry.run_reading import MISSING, Run, find_runs, override_key, read_run, read_scalars

# Override keys that say how a run was started, not what it was (resume, resume_sweep, hydra.run.dir).
NOT_HYPERPARAMETERS = ("hydra.", "resume")
# Metrics where bigger is better (a name fragment), when the metric is not the run's monitored one.
LABEL_MAX = 150  # characters of a run's label (its differing hyperparameters) at most
HIGHER_IS_BETTER = ("return", "reward", "acc", "precision", "recall", "coverage", "score", "per_sec", "success")


# lm runs with different tokens: nats per token do not compare, bits per byte of the same text do
TOKEN_KEYS, PER_BYTE = ("data.tokenizer", "data.vocab_size"), "val/bits_per_byte"


def default_metrics(runs: list[Run]) -> list[str]:
    """The runs' monitored metrics (one per task, usually); else the val/* metrics they report.
    Text runs whose tokenizers differ get val/bits_per_byte first: the one axis they share."""
    monitored = [run.monitor[0] for run in runs if run.monitor[0]]
    if monitored:
        shared_axis = (all(PER_BYTE in run.summary.get("metrics", {}) for run in runs)
                       and any(len({run.value(key) for run in runs}) > 1 for key in TOKEN_KEYS))
        return list(dict.fromkeys([PER_BYTE] * shared_axis + monitored))
    reported = sorted({name for run in runs for name in run.summary.get("metrics", {}) if name.startswith("val/")})
    if not reported:
        raise MimicryError("the runs name no monitored metric and report no val/* metric; choose one with --metric")
    return reported


def check_metrics(runs: list[Run], metrics: list[str]) -> None:
    """A metric no run has is an error that lists the metrics they do have."""
    missing = [m for m in metrics if not any(m in run.curves or m in run.summary.get("metrics", {}) for run in runs)]
    if not missing:
        return
    available: set[str] = set()
    for run in runs:
        available |= set(run.summary.get("metrics", {}))
        everything = Run(run.path, run.summary, run.overrides, run.config)  # a copy: keep run's notes as they are
        read_scalars(everything, tags=None)
        available |= set(everything.curves)
    # TensorBoard's HParams tab gets copies named final/<metric>: list the originals only.
    available = {name for name in available if not (name.startswith("final/") and name[6:] in available)}
    raise MimicryError(f"no run has metric {', '.join(missing)}; the runs have: {', '.join(sorted(available)) or 'none'}")


def differing_keys(runs: list[Run]) -> list[str]:
    """Override keys (in the order first used) whose value is not the same in every run."""
    keys = [override_key(o) for run in runs for o in run.overrides]
    keys = [k for k in dict.fromkeys(keys) if not k.startswith(NOT_HYPERPARAMETERS)]
    return [k for k in keys if len({run.value(k) for run in runs}) > 1]


def higher_is_better(run: Run, metric: str) -> bool:
    monitor, mode = run.monitor
    if metric == monitor:
        return mode == "max"
    return any(fragment in metric for fragment in HIGHER_IS_BETTER)


def final_and_best(run: Run, metric: str) -> tuple[float | None, float | None]:
    """From the logged curve; from summary.json where the events lack the metric."""
    curve = run.curves.get(metric)
    if curve is not None and len(curve.values):
        finite = curve.values[np.isfinite(curve.values)]
        best = (finite.max() if higher_is_better(run, metric) else finite.min()) if len(finite) else math.nan
        return float(curve.values[-1]), float(best)
    final = _number(run.summary.get("metrics", {}).get(metric))
    best = _number(run.summary.get("best", {}).get(metric))
    return final, (final if best is None else best)


def _number(value: object) -> float | None:
    """A summary.json value as a float ("nan" and "inf" are how it stores non-finite ones)."""
    try:
        return None if value is None or isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def steps_and_wall(run: Run) -> tuple[int | None, float | None]:
    """summary.json's numbers; a running run's events are newer than its last summary refresh."""
    steps, wall = run.summary.get("steps"), run.summary.get("wall_time_s")
    if run.status == "running" and run.curves:
        last_step = max(int(c.steps[-1]) for c in run.curves.values() if len(c.steps))
        last_wall = max(float(c.wall[-1]) for c in run.curves.values() if len(c.wall))
        steps = max(steps or 0, last_step)
        if run.first_event_wall is not None:
            wall = max(wall or 0.0, last_wall - run.first_event_wall)
    return steps, wall


def run_label(run: Run) -> str:
    """Short name: `<time>_<id>` of a single run, `<sweep time_id>/<job number>` of a sweep job."""
    def short(name: str) -> str:
        parts = name.split("_")
        return "_".join(parts[:2]) if len(parts) >= 2 and parts[0].count("-") == 2 else name[:40]
    if (run.path.parent / "multirun.yaml").is_file():
        return f"{short(run.path.parent.name)}/{run.path.name.split('_')[0]}"
    return short(run.path.name)


# ------------------------------------------------------------------------------------------------
# Rows: one per run, or one per group


@dataclass
class Row:
    label: str
    hparams: dict[str, str]
    runs: list[Run]
    status: str
    steps: float | None
    wall: float | None
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # metric -> final/best -> values


def make_rows(runs: list[Run], keys: list[str], metrics: list[str], group_by: str | None) -> list[Row]:
    """One row per run; with group_by, one per set of runs that differ only in that key."""
    shown = [k for k in keys if k != group_by]
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        identity = tuple(run.value(k) for k in shown) if group_by else (run.path,)
        groups.setdefault(identity, []).append(run)
    rows = []
    for members in groups.values():
        statuses = Counter(run.status for run in members)
        status = ", ".join(f"{n} {s}" if group_by else s for s, n in statuses.items())
        notes = list(dict.fromkeys(note for run in members for note in run.notes))
        steps, walls = zip(*(steps_and_wall(run) for run in members))
        row = Row(label=run_label(members[0]) if not group_by else f"{len(members)} runs",
                  hparams={k: members[0].value(k) for k in shown},
                  runs=members, status="; ".join([status, *notes]),
                  steps=_mean([s for s in steps if s is not None]), wall=_mean([w for w in walls if w is not None]))
        for metric in metrics:
            finals, bests = zip(*(final_and_best(run, metric) for run in members))
            row.metrics[metric] = {"final": [v for v in finals if v is not None],
                                   "best": [v for v in bests if v is not None]}
        rows.append(row)
    return rows


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n-1); no std for a single value."""
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def compare_runs(paths: list[str], metrics: list[str] | None = None, group_by: str | None = None,
                 x_tag: str | None = None) -> tuple[list[Run], list[str], list[str], list[Row]]:
    """Every run below ``paths``, the keys that differ between them, the metrics compared (the
    runs' monitored ones by default) and the rows (one per run, or per group)."""
    runs = [read_run(path) for path in find_runs(paths)]
    metrics = metrics or default_metrics(runs)
    for run in runs:
        read_scalars(run, tags={*metrics, *([x_tag] if x_tag else [])})
    check_metrics(runs, metrics + ([x_tag] if x_tag else []))
    keys = differing_keys(runs)
    if group_by and all(run.value(group_by) == MISSING for run in runs):
        raise MimicryError(f"--group-by {group_by}: no run has that key; "
                           f"keys that differ between these runs: {', '.join(keys) or 'none'}")
    return runs, keys, metrics, make_rows(runs, keys, metrics, group_by)


def hparam_labels(rows: list[Row]) -> list[str]:
    """`lr=0.01, n_embd=64`: the hyperparameters that differ between these rows, by their last name
    where that is unique; a row's own label where nothing differs. One line each (also names runs
    in `mimicry tb` and panels in `compare --samples`)."""
    keys = [k for k in rows[0].hparams if len({row.hparams[k] for row in rows}) > 1] if rows else []
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    names = short if len(set(short.values())) == len(short) else {k: k for k in keys}
    labels = []
    for row in rows:
        label = ", ".join(f"{names[k]}={row.hparams[k]}" for k in keys if row.hparams[k] != MISSING)
        labels.append(textwrap.shorten(label, LABEL_MAX, placeholder=" …") if label else row.label)
    return labels
