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
import sys
from pathlib import Path

from mimicry.run_rows import HIGHER_IS_BETTER, Row, compare_runs, mean_std
from mimicry.tables import render_markdown, render_table, write_output

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
    write_output(text, args.out)

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
