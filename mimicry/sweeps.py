"""Sweeps (``mimicry train -m ...``): readable job folders, one table at the end, resuming.

- Each job writes ``<sweep dir>/<job number>_<the overrides that vary>/``; overrides that are the
  same for every job are left out of the name (every job keeps them in .hydra/overrides.yaml).
- One job that fails or diverges is recorded as such in its summary.json and the others go on
  (mimicry/training.py); at the end a table of every job (status, monitored metric, wall time) is
  printed and saved as ``sweep_summary.md`` and ``sweep_summary.json`` in the sweep directory.
- ``mimicry train resume_sweep=SWEEP_DIR`` launches the sweep's own overrides again into the same
  folder: completed jobs are skipped, the others continue from their last checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from mimicry.errors import MimicryError
from mimicry.run_reading import override_key, read_summary_file, read_yaml
from mimicry.saved_overrides import vet_overrides

FIXED_OVERRIDES_ENV = "MIMICRY_FIXED_OVERRIDES"  # overrides shared by every job of this sweep (JSON list)
RUN_ID_ENV = "MIMICRY_RUN_ID"  # one id per command, inherited by launcher workers and DDP ranks
NOT_IN_NAMES = ("resume", "resume_sweep", "init_from", "data.root", "data.path", "data.cache_dir")  # paths: too long to name by


def run_id() -> str:
    """A short id that makes run folders started in the same second differ; the same in every
    process of one command (Hydra's joblib workers, Lightning's DDP ranks)."""
    if not os.environ.get(RUN_ID_ENV):
        os.environ[RUN_ID_ENV] = secrets.token_hex(2)
    return os.environ[RUN_ID_ENV]


def is_sweep(args: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in args) or any(
        a.startswith("hparams_search=") and a.split("=", 1)[1] not in ("null", "") for a in args)


def job_name(overrides: Any) -> str:
    """``_key=value,...`` of this job's overrides that vary across the sweep (path-safe, bounded)."""
    fixed = set(json.loads(os.environ.get(FIXED_OVERRIDES_ENV, "[]")))
    varying = [_short(str(o)) for o in overrides
               if str(o) not in fixed and override_key(str(o)) not in NOT_IN_NAMES]
    text = ",".join(varying).replace("/", "-")[:80]
    return f"_{text}" if text else ""


def _short(override: str) -> str:
    """``optim.lr=0.0020554062603827007`` → ``optim.lr=0.002055``: a searched float, named readably."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}={number:.4g}" if "." in value and len(value) > 8 else override


def default_task() -> str:
    """The task `mimicry train` picks when none is given (conf/train.yaml's defaults list)."""
    defaults = yaml.safe_load((files("mimicry.conf") / "train.yaml").read_text())["defaults"]
    return next(entry["task"] for entry in defaults if isinstance(entry, dict) and "task" in entry)


def overlay_task(group: str, name: str) -> str | None:
    """The task an overlay (``experiment=NAME``) chooses with ``override /task: X``, if any."""
    path = files("mimicry.conf") / group / f"{name}.yaml"
    if not path.is_file():
        return None  # Hydra names the unknown option itself
    defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    return next((entry["override /task"] for entry in defaults
                 if isinstance(entry, dict) and "override /task" in entry), None)


def prepare_sweep(args: list[str]) -> tuple[list[str], Path]:
    """Fix the sweep folder before Hydra starts (so the table at the end knows where to look) and
    note which overrides are shared by all jobs (left out of the job folders' names)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    settings = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(settings)
    except Exception as error:  # Hydra's own message names the bad override
        raise MimicryError(str(error).splitlines()[0]) from None
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    fixed = [o.input_line for o in parsed if o.key_or_group not in swept and not o.key_or_group.startswith("hydra")]
    os.environ[FIXED_OVERRIDES_ENV] = json.dumps(fixed)
    chosen = [a.split("=", 1)[1].strip("'\"") for a in settings if override_key(a) == "hydra.sweep.dir"]
    if chosen:
        check_optuna_study(Path(chosen[-1]) / "optuna.db")
        return args, Path(chosen[-1])
    tasks = [o.value() for o in parsed if o.key_or_group == "task"]
    # an overlay's task wins over the default, as in Hydra's composition (experiment=generalization_lm → lm)
    tasks += [task for o in parsed if o.key_or_group in ("experiment", "hparams_search") and isinstance(o.value(), str)
              for task in [overlay_task(o.key_or_group, o.value())] if task]
    task = tasks[-1] if tasks and isinstance(tasks[-1], str) else ("mixed" if tasks else default_task())
    now = datetime.now()
    folder = Path("outputs") / task / "multirun" / now.strftime("%Y-%m-%d") / f"{now:%H-%M-%S}_{run_id()}"
    return [*args, f"hydra.sweep.dir='{folder}'"], folder


def check_optuna_study(path: Path) -> None:
    """A stored Optuna study that a search will add trials to: an SQLite database with Optuna's
    tables, else one line (Optuna would fail deep in SQLAlchemy). Opened read-only; nothing is changed."""
    if not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as error:
        raise MimicryError(f"{path} is damaged ({error}); move it away to start a new study in that folder") from None
    if not {"studies", "trials"} <= tables:
        raise MimicryError(f"{path} is not an Optuna study (no studies/trials tables); move it away to start a new "
                           f"study in that folder")


def resume_sweep_args(sweep_dir: str, new: list[str]) -> list[str]:
    """``resume_sweep=DIR``: the sweep's own overrides (Hydra saved them in multirun.yaml, read back
    as data: mimicry/saved_overrides.py), then any new ones, into the same folder."""
    folder = Path(sweep_dir.strip("'\"")).expanduser().resolve()
    saved = folder / "multirun.yaml"
    if not saved.is_file():
        raise MimicryError(f"resume_sweep={folder}: not a sweep directory (no multirun.yaml there); give the "
                           f"folder that holds the sweep's numbered job folders")
    recorded = read_yaml(saved)
    overrides = ((recorded.get("hydra") or {}).get("overrides") or {}).get("task") if isinstance(recorded, dict) \
        else None
    if overrides is None:
        raise MimicryError(f"{saved} is damaged: it has no hydra.overrides.task list; rerun the sweep's command")
    kept = vet_overrides(overrides, saved, f"mimicry train resume_sweep={folder}", typed=new,
                         drop={override_key(a) for a in new} | {"resume_sweep"})
    return ["-m", *kept, *new, "resume_sweep=true", f"hydra.sweep.dir='{folder}'"]


def monitored_value(summary: dict, monitor: str | None) -> float | None:
    """The job's monitored metric: its best value when a checkpoint tracked it, else its last."""
    if not monitor:
        return None
    best = (summary.get("best") or {}).get(monitor)
    value = best if best is not None else (summary.get("metrics") or {}).get(monitor)
    return float(value) if isinstance(value, (int, float)) else None


def summarize_sweep(sweep_dir: Path) -> list[dict]:
    """One row per job folder under ``sweep_dir``; written as sweep_summary.{md,json} there."""
    rows = []
    for summary_file in (folder / "summary.json" for folder in job_folders(sweep_dir)):
        summary, _ = read_summary_file(summary_file)
        config_file = summary_file.parent / ".hydra" / "config.yaml"
        config = read_yaml(config_file) if config_file.is_file() else None
        monitor = config.get("monitor") if isinstance(config, dict) and isinstance(config.get("monitor"), str) else None
        rows.append({"job": summary_file.parent.name, "status": summary.get("status", "?"), "monitor": monitor,
                     "value": monitored_value(summary, monitor), "steps": summary.get("steps"),
                     "wall_time_s": summary.get("wall_time_s"), "error": summary.get("error")})
    if rows:
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(rows, indent=2))
        (sweep_dir / "sweep_summary.md").write_text(markdown_table(rows))
    return rows


def job_folders(sweep_dir: Path) -> list[Path]:
    """The sweep's job folders (those with a summary.json), in job order."""
    return sorted((p.parent for p in sweep_dir.glob("*/summary.json")), key=lambda folder: _job_number(folder.name))


def _job_number(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def markdown_table(rows: list[dict]) -> str:
    lines = ["| job | status | monitored metric | value | steps | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        wall = "" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f}"
        lines.append(f"| {r['job']} | {r['status']} | {r['monitor'] or '—'} | {value} | {r['steps'] or ''} | {wall} |")
    return "\n".join(lines) + "\n"


def print_sweep_table(sweep_dir: Path) -> list[dict]:
    """The table of every job in the sweep folder (jobs a launcher ran in other processes too); its rows."""
    from rich.console import Console
    from rich.table import Table

    rows = summarize_sweep(sweep_dir)
    if not rows:
        return rows
    done = sum(r["status"] == "completed" for r in rows)
    table = Table(title=f"sweep {sweep_dir}: {done} of {len(rows)} jobs completed",
                  caption=f"saved as {sweep_dir / 'sweep_summary.md'}; compare: mimicry compare {sweep_dir}")
    for column in ("job", "status", "monitored metric", "value", "steps", "wall s"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["job"], r["status"], r["monitor"] or "—", "" if r["value"] is None else f"{r['value']:.4g}",
                      str(r["steps"] or ""), "" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f}")
    Console(width=None if os.isatty(1) else 200).print(table)
    return rows
