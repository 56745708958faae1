"""``mimicry runs [PATH]``: every run below PATH, one line each: when it started, its task and
overrides, how it ended, its monitored metric, steps and wall time. Newest first.

Reads each run's ``summary.json`` only (no event files, no YAML), so a tree of thousands of runs
lists in about a second; `mimicry compare` reads the curves of the runs you pick from here.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mimicry.errors import MimicryError
from mimicry.run_reading import find_runs, override_key, read_summary_file
from mimicry.run_rows import NOT_HYPERPARAMETERS
from mimicry.tables import render_markdown, render_table, write_output

COLUMNS = ("time", "task", "status", "metric", "final", "best", "steps", "wall_s", "overrides", "run")
NOT_SHOWN = (*NOT_HYPERPARAMETERS, "task")  # the task has its own column

EPILOG = """examples:
  mimicry runs                                 every run under outputs/, newest first
  mimicry runs outputs/gan --status failed     the GAN runs that failed, and why (mimicry compare shows the error)
  mimicry runs --since 2d --sort best          the last two days' runs, best monitored value first
  mimicry runs --task lm --format csv --out lm_runs.csv
--since: an ISO date or time (2026-12-01, 2026-12-01T14:00), today, or an age: 30m, 6h, 2d, 1w."""


@dataclass
class RunLine:
    time: str            # when the run started (local time, ISO)
    task: str
    status: str
    metric: str          # the run's monitored metric
    final: float | None  # its last value
    best: float | None   # its best value (what picked the best checkpoint)
    steps: int | None
    wall_s: float | None
    overrides: str
    run: str             # the run folder
    error: str | None = None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mimicry runs", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="List the runs below PATHs (default: outputs), newest first, "
                                     "from their summary.json files alone.")
    parser.add_argument("paths", nargs="*", metavar="PATH", default=["outputs"], help="folders holding runs, or runs")
    parser.add_argument("--task", action="append", metavar="T", help="only runs of this task (repeatable)")
    parser.add_argument("--status", action="append", metavar="S",
                        help="only runs with this status: completed, running, failed, diverged (repeatable)")
    parser.add_argument("--since", metavar="WHEN", help="only runs started since WHEN (see below)")
    parser.add_argument("--sort", choices=COLUMNS, default="time",
                        help="column to sort by (default: time, newest first; best: by each run's monitor_mode)")
    parser.add_argument("--reverse", action="store_true", help="reverse the order")
    parser.add_argument("--limit", type=int, metavar="N", help="show the first N runs only")
    parser.add_argument("--format", choices=("table", "md", "csv", "json"), default=None,
                        help="table (default), markdown, csv or json")
    parser.add_argument("--out", metavar="FILE", help="write to FILE (format from its suffix) instead of printing")
    args = parser.parse_args(argv)
    if args.format is None:
        args.format = {".csv": "csv", ".md": "md", ".json": "json"}.get(Path(args.out).suffix.lower() if args.out else "", "table")
    return args


def parse_since(text: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", text.strip())
    if age:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[age.group(2)]
        return now - timedelta(**{unit: float(age.group(1))})
    if text.strip() == "today":
        return now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MimicryError(f"--since {text}: not a date, time or age; write e.g. 2026-12-01, "
                           f"2026-12-01T14:00, today, 6h or 2d") from None
    return when if when.tzinfo else when.astimezone()  # a date without a zone is local time


def started_at(summary: dict, folder: Path) -> datetime:
    """summary.json's start time; for runs from before it was recorded, the last update less the wall
    time, else the folder's modification time."""
    for key, back in (("started", 0.0), ("updated", summary.get("wall_time_s") or 0.0)):
        try:
            when = datetime.fromisoformat(str(summary[key])) - timedelta(seconds=float(back))
            return when if when.tzinfo else when.replace(tzinfo=timezone.utc)  # mimicry writes UTC
        except (KeyError, ValueError, TypeError, OverflowError):
            continue
    return datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc)


def monitored(summary: dict) -> tuple[str, float | None, float | None]:
    """(monitored metric, its final value, its best value) from summary.json."""
    best = summary.get("best") or {}
    metric = summary.get("monitor")
    if not isinstance(metric, str):  # older summaries: the best checkpoint names it
        metric = next((k for k in best if k != "checkpoint"), "")
    return metric, _number((summary.get("metrics") or {}).get(metric)), _number(best.get(metric))


def _number(value: object) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def read_lines(paths: list[str]) -> list[tuple[RunLine, datetime, str]]:
    """(line, start time, monitor_mode) of every run below the paths."""
    found = []
    for folder in find_runs(paths):
        summary, note = read_summary_file(folder / "summary.json")
        metric, final, best = monitored(summary)
        overrides = [str(o) for o in summary.get("overrides", []) if not override_key(str(o)).startswith(NOT_SHOWN)]
        when = started_at(summary, folder)
        steps = summary.get("steps")
        line = RunLine(time=when.astimezone().isoformat(timespec="seconds"), task=str(summary.get("task", "?")),
                       status=str(summary.get("status", "unknown")) + (f" ({note})" if note else ""),
                       metric=metric, final=final, best=best, steps=int(steps) if steps is not None else None,
                       wall_s=summary.get("wall_time_s"), overrides=" ".join(overrides), run=str(folder),
                       error=summary.get("error"))
        found.append((line, when, str(summary.get("monitor_mode", "min"))))
    return found


def select(found: list[tuple[RunLine, datetime, str]], args: argparse.Namespace) -> list[RunLine]:
    if args.task:
        found = [f for f in found if f[0].task in args.task]
    if args.status:
        found = [f for f in found if f[0].status.split(" ", 1)[0] in args.status]
    if args.since:
        found = [f for f in found if f[1] >= args.since]

    def key(item: tuple[RunLine, datetime, str]) -> tuple:
        line, when, mode = item
        if args.sort == "time":
            return (0, -when.timestamp())  # newest first
        value = getattr(line, args.sort)
        if args.sort == "best" and value is not None:
            return (0, -value if mode == "max" else value)  # best first, whichever way each run counts
        return (value is None, value if value is not None else 0)  # runs without the value last
    ordered = [line for line, _, _ in sorted(found, key=key)]
    ordered = ordered[::-1] if args.reverse else ordered
    return ordered[: args.limit] if args.limit else ordered


def render(lines: list[RunLine], fmt: str, root: Path | None, wrap: bool) -> str:
    if fmt == "json":
        return json.dumps([asdict(line) for line in lines], indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "error"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(line) for line in lines)
        return out.getvalue()
    header = ["time", "task", "status", "metric", "final", "best", "steps", "wall s", "overrides", "run"]
    cells = [[line.time[:16].replace("T", " "), line.task, line.status, line.metric, _fmt(line.final), _fmt(line.best),
              "" if line.steps is None else str(line.steps), "" if line.wall_s is None else f"{line.wall_s:.0f}",
              line.overrides, _relative(line.run, root)] for line in lines]
    if fmt == "md":
        return render_markdown(header, cells)
    return render_table(header, cells, f"{len(lines)} run{'s' * (len(lines) != 1)}", wrap=wrap)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _relative(run: str, root: Path | None) -> str:
    """A run's folder below the one searched (short), else as it is."""
    try:
        return str(Path(run).relative_to(root)) if root is not None else run
    except ValueError:
        return run


def runs_command(argv: list[str]) -> int:
    args = parse_args(argv)
    args.since = parse_since(args.since) if args.since else None  # a bad date fails before any folder is read
    lines = select(read_lines(args.paths), args)
    if not lines:
        print("no runs match the filters", file=sys.stderr)
    root = Path(args.paths[0]) if len(args.paths) == 1 else None
    write_output(render(lines, args.format, root, wrap=sys.stdout.isatty() and not args.out), args.out)
    return 0
