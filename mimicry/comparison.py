"""``mimicry compare PATH...``: runs side by side, showing only the hyperparameters that differ.

For each chosen metric a run gets its final value (the last point logged) and its best value.
Best is the minimum or maximum over the logged curve: by the run's `monitor_mode` when the metric
is the run's monitored metric, else by the metric's name (`higher_is_better`). `--group-by seed`
folds runs that differ only in that key into one row: mean ± sample standard deviation, and n.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimicry.errors import MimicryError
from mimicry.run_reading import MISSING, Run, find_runs, override_key, read_run, read_scalars

# Override keys that say how a run was started, not what it was (resume, resume_sweep, hydra.run.dir).
NOT_HYPERPARAMETERS = ("hydra.", "resume")
# Metrics where bigger is better (a name fragment), when the metric is not the run's monitored one.
HIGHER_IS_BETTER = ("return", "reward", "acc", "precision", "recall", "coverage", "score", "per_sec", "success")

DESCRIPTION = """Compare runs: the hyperparameters that differ between them, the final and best value of
each metric, status and wall time. PATHs are run directories, sweep directories or whole output
trees (every run below them is found). Works on runs that are still going."""

EPILOG = """best: min or max of the logged curve, by the run's monitor_mode for its monitored metric;
for other metrics max when the name contains one of {hib}, else min.
--group-by: mean ± sample standard deviation (n-1) over the runs of a group, and n.
examples:
  mimicry compare outputs/gan/multirun/2026-01-02/10-00-00_ab12 --group-by seed --plot gan.png
  mimicry compare outputs/rl --metric rollout/return_mean --x rollout/env_steps --plot rl.png
  mimicry compare outputs --format csv --out runs.csv
  mimicry compare outputs/gan/multirun/2026-01-02/10-00-00_ab12 --samples fakes.png
""".format(hib=", ".join(HIGHER_IS_BETTER))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mimicry compare", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH", default=["outputs"],
                        help="run or sweep directories, or folders holding them (default: outputs)")
    parser.add_argument("--metric", "-m", action="append", metavar="M",
                        help="a logged scalar, e.g. val/loss (repeatable; default: the runs' monitored metrics)")
    parser.add_argument("--group-by", metavar="KEY", help="fold runs that differ only in KEY (e.g. seed)")
    parser.add_argument("--format", choices=("table", "md", "csv"), default=None,
                        help="table (default), markdown, or csv (raw numbers)")
    parser.add_argument("--out", metavar="FILE", help="write the table to FILE (format from its suffix "
                        "when --format is not given) instead of printing it")
    parser.add_argument("--plot", metavar="FILE", help="draw the metrics' curves to FILE (png, pdf, svg)")
    parser.add_argument("--x", default="step", metavar="step|wall|TAG",
                        help="plot x-axis: training step (default), wall-clock seconds since the run's "
                        "first event, or another logged scalar such as rollout/env_steps")
    parser.add_argument("--samples", metavar="FILE", help="draw each run's last sample grid (samples/step_*.png "
                        "of gan, image_ar, diffusion runs) side by side to FILE, titled with its differing hyperparameters")
    args = parser.parse_args(argv)
    if args.format is None:
        suffix = Path(args.out).suffix.lower() if args.out else ""
        args.format = {".csv": "csv", ".md": "md"}.get(suffix, "table")
    return args


# ------------------------------------------------------------------------------------------------
# What to compare


def default_metrics(runs: list[Run]) -> list[str]:
    """The runs' monitored metrics (one per task, usually); else the val/* metrics they report."""
    monitored = [run.monitor[0] for run in runs if run.monitor[0]]
    if monitored:
        return list(dict.fromkeys(monitored))
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


# ------------------------------------------------------------------------------------------------
# Output


def table_columns(rows: list[Row], keys: list[str], metrics: list[str], group_by: str | None) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells, shared by the terminal table and markdown."""
    shown_keys = [k for k in keys if k != group_by]
    header = ["run" if not group_by else "n", *shown_keys, "status", "steps", "wall s"]
    header += [f"{m} {kind}" for m in metrics for kind in ("final", "best")]
    cells = []
    for row in rows:
        line = [row.label if not group_by else str(len(row.runs)), *(row.hparams[k] for k in shown_keys), row.status,
                _fmt(row.steps, ".0f"), _fmt(row.wall, ".1f")]
        for metric in metrics:
            for kind in ("final", "best"):
                mean, std = mean_std(row.metrics[metric][kind])
                line.append(_fmt(mean, ".4g") + (f" ± {std:.2g}" if std is not None else ""))
        cells.append(line)
    return header, cells


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render_table(header: list[str], cells: list[list[str]], title: str, wrap: bool) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in header:
        numeric = column in ("n", "steps", "wall s") or column.endswith((" final", " best"))
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for line in cells:
        table.add_row(*line)
    console = Console(file=io.StringIO(), width=None if wrap else 10_000)
    console.print(table)
    return console.file.getvalue()


def render_markdown(header: list[str], cells: list[list[str]]) -> str:
    def line(items: list[str]) -> str:
        return "| " + " | ".join(item.replace("|", "\\|") for item in items) + " |"
    return "\n".join([line(header), line(["---"] * len(header)), *map(line, cells)]) + "\n"


def render_csv(rows: list[Row], keys: list[str], metrics: list[str], group_by: str | None) -> str:
    """Raw numbers, one column each (mean and std apart), for spreadsheets and pandas."""
    shown_keys = [k for k in keys if k != group_by]
    header = ["run" if not group_by else "n", *shown_keys, "status", "steps", "wall_s"]
    for metric in metrics:
        for kind in ("final", "best"):
            header += [f"{metric} {kind}"] if not group_by else [f"{metric} {kind} mean", f"{metric} {kind} std"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        line: list = [str(row.runs[0].path) if not group_by else len(row.runs), *(row.hparams[k] for k in shown_keys),
                      row.status, "" if row.steps is None else _int_if_whole(row.steps), "" if row.wall is None else round(row.wall, 2)]
        for metric in metrics:
            for kind in ("final", "best"):
                mean, std = mean_std(row.metrics[metric][kind])
                line += [_raw(mean)] if not group_by else [_raw(mean), _raw(std)]
        writer.writerow(line)
    return out.getvalue()


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 1)


def _raw(value: float | None) -> str:
    return "" if value is None else repr(value)


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


def compare_command(argv: list[str]) -> int:
    args = parse_args(argv)
    x_tag = None if args.x in ("step", "wall") else args.x
    runs, keys, metrics, rows = compare_runs(args.paths, args.metric, args.group_by, x_tag)

    if args.format == "csv":
        text = render_csv(rows, keys, metrics, args.group_by)
    else:
        header, cells = table_columns(rows, keys, metrics, args.group_by)
        title = f"{len(runs)} run{'s' * (len(runs) != 1)}"
        title += f" in {len(rows)} groups by {args.group_by}" if args.group_by else ""
        if args.format == "md":
            text = render_markdown(header, cells)
        else:  # fit a terminal; never wrap in a pipe or a file
            text = render_table(header, cells, title, wrap=sys.stdout.isatty() and not args.out)
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as error:
            raise MimicryError(f"--out {args.out}: cannot write there ({error.strerror})") from error
        print(f"wrote {args.out}", file=sys.stderr)  # stderr: stdout stays the table alone
    else:
        sys.stdout.write(text)

    if args.plot:
        from mimicry.compare_plot import plot_rows
        skipped = plot_rows(rows, metrics, args.x, args.plot, grouped=bool(args.group_by))
        for label in skipped:
            print(f"note: {label} has no {args.x} to plot against; left out of the plot", file=sys.stderr)
        print(f"wrote {args.plot}", file=sys.stderr)

    if args.samples:
        from mimicry.compare_samples import write_sample_sheet
        for note in write_sample_sheet(runs, keys, args.samples):
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {args.samples}", file=sys.stderr)
    return 0
