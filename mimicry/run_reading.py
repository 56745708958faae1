"""Find run directories and read what they recorded: summary.json, the Hydra config and overrides,
and TensorBoard scalars. Used by `mimicry compare`; reads only, never writes.

Event files are read record by record here rather than through TensorBoard's EventAccumulator:
that one parses every event of every tag (images, text, histograms), which is most of the
time on a folder of 100 runs, and it silently drops a half-written last record, where we want
to say that a run's events were cut short.
"""
from __future__ import annotations

import json
import os
import re
import struct
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mimicry.errors import MimicryError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: several times faster
MISSING = "-"  # shown for a key a run's config does not have
RUN_SUBFOLDERS = {"tb", "checkpoints", "samples", ".hydra"}  # nothing below these is a run


@dataclass
class Curve:
    """One scalar tag of one run, sorted by step (one point per step, the last one written)."""
    steps: np.ndarray
    values: np.ndarray
    wall: np.ndarray  # seconds since the epoch


@dataclass
class Run:
    path: Path
    summary: dict[str, Any]
    overrides: list[str]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # e.g. "events truncated"
    curves: dict[str, Curve] = field(default_factory=dict)
    first_event_wall: float | None = None  # wall time of the run's first event (x=0 for --x wall)
    _choices: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def monitor(self) -> tuple[str | None, str]:
        return self.config.get("monitor"), str(self.config.get("monitor_mode", "min"))

    def choices(self) -> dict[str, Any]:
        """Hydra's runtime.choices (which option of each config group); read only when asked."""
        if self._choices is None:
            hydra_file = self.path / ".hydra" / "hydra.yaml"
            self._choices = _read_choices(hydra_file.read_text()) if hydra_file.is_file() else {}
        return self._choices

    def value(self, key: str) -> str:
        """The run's value of an override key: the chosen option for a config group (`model=dcgan`),
        else the composed config's value, so a run that left a key at its default shows the default."""
        found = _select(self.config, key)
        if found is not _NOT_FOUND and not isinstance(found, dict):
            return format_value(found)
        # A config group (`model`, `hydra/launcher`, `experiment`): its node is a dict or absent.
        if key == "task" and "task" in self.summary:
            return str(self.summary["task"])
        choices = self.choices() if "." not in key or "/" in key else {}
        if key in choices:
            return str(choices[key])
        return MISSING if found is _NOT_FOUND else format_value(found)


def find_runs(paths: list[str]) -> list[Path]:
    """Every run directory under the paths (a run holds summary.json or .hydra/overrides.yaml):
    single runs, sweep folders, whole output trees."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise MimicryError(f"no such file or directory: {path}")
        for folder, subfolders, files in os.walk(path):
            is_run = "summary.json" in files or os.path.isfile(os.path.join(folder, ".hydra", "overrides.yaml"))
            if is_run:
                runs.append(Path(folder))
                subfolders.clear()  # a run's tb/, checkpoints/ and samples/ hold no runs
            else:
                subfolders[:] = sorted(s for s in subfolders if s not in RUN_SUBFOLDERS)
    if not runs:
        raise MimicryError(f"no runs under {', '.join(paths)} (a run directory holds summary.json; "
                           "train one with `mimicry train`)")
    return sorted(dict.fromkeys(runs), key=_natural_order)


def _natural_order(path: Path) -> list:
    """Sweep job 2 before job 10: numbers in the path compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def read_run(path: Path) -> Run:
    """summary.json, overrides and composed config of one run; events are read separately."""
    notes: list[str] = []
    summary: dict[str, Any] = {}
    if (path / "summary.json").is_file():
        summary, note = read_summary_file(path / "summary.json")
        notes += [note] if note else []
    else:
        notes.append("no summary.json")
    if summary.get("error"):  # a failed run says why: its last line, e.g. AssertionError('...')
        notes.append(textwrap.shorten(str(summary["error"]).strip().splitlines()[-1], 80, placeholder=" …"))
    hydra_dir = path / ".hydra"
    overrides = _read_or_note(hydra_dir / "overrides.yaml", notes)
    if overrides is None:
        overrides = summary.get("overrides", [])
    if not isinstance(overrides, list):
        notes.append("overrides damaged (not a list)")
        overrides = []
    config = _read_or_note(hydra_dir / "config.yaml", notes)
    if config is not None and not isinstance(config, dict):
        notes.append("config.yaml damaged (not a mapping)")
        config = None
    return Run(path=path, summary=summary, overrides=[str(o) for o in overrides], config=config or {}, notes=notes)


def _read_choices(text: str) -> dict[str, Any]:
    """hydra.yaml's `hydra.runtime.choices`. Only that block is parsed: the whole file is mostly
    help text and logging config, and parsing it is most of the time `compare` spends on YAML."""
    match = re.search(r"^( +)choices:\n((?:\1 +.*\n?)*)", text, re.MULTILINE)
    if match:
        block = yaml.load(textwrap.dedent(match.group(2)), Loader=_Loader)
        if isinstance(block, dict):
            return block
    loaded = yaml.load(text, Loader=_Loader) or {}  # laid out differently: read it all
    return (loaded.get("hydra", {}).get("runtime", {}).get("choices") or {}) if isinstance(loaded, dict) else {}


def _read_or_note(path: Path, notes: list[str]) -> Any:
    """A run's YAML file, or None (with a note) when it is missing or unreadable: one damaged run
    must not stop a table of many."""
    if not path.is_file():
        return None
    try:
        return read_yaml(path)
    except MimicryError:
        notes.append(f"{path.name} unreadable")
        return None


def read_yaml(path: Path) -> Any:
    """A YAML file of a run folder, as data (safe loader), or one line naming the file."""
    try:
        return yaml.load(path.read_text(), Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MimicryError(f"{path}: not readable YAML ({reason})") from None


def override_key(override: str) -> str:
    """`+model.width=3` -> `model.width`; `~foo` -> `foo`."""
    return override.lstrip("+~").split("=", 1)[0]


# ------------------------------------------------------------------------------------------------
# Config values

_NOT_FOUND = object()
_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


def _select(config: dict, key: str, depth: int = 0) -> Any:
    node: Any = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _NOT_FOUND
    match = _INTERPOLATION.match(node) if isinstance(node, str) else None
    if match and depth < 10:  # `${model.block_size}`: follow it, as Hydra would have
        return _select(config, match.group(1), depth + 1)
    return node


def flatten_config(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"n_layer": 4}} → {"model.n_layer": 4}; lists and None become strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def format_value(value: Any) -> str:
    if isinstance(value, dict) and "_target_" in value:
        return str(value["_target_"]).rsplit(".", 1)[-1]
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "null"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


# ------------------------------------------------------------------------------------------------
# TensorBoard events

_HEADER = struct.Struct("<QI")  # record length, its masked CRC; then the data and the data's CRC
_FLOAT_DTYPES = {1: np.float32, 2: np.float64}  # TensorBoard DataType codes: DT_FLOAT, DT_DOUBLE


def event_files(run_dir: Path) -> list[Path]:
    """A run's event files in the order they were written (a resumed run adds one)."""
    def order(path: Path) -> tuple:
        parts = path.name.split(".")  # events.out.tfevents.<time>.<host>.<pid>.<n>
        numbers = [int(p) if p.isdigit() else 0 for p in (parts[3], parts[-1])] if len(parts) > 4 else [0, 0]
        return (*numbers, path.name)
    return sorted((run_dir / "tb").glob("events.out.tfevents.*"), key=order)


def read_scalars(run: Run, tags: set[str] | None) -> None:
    """Fill run.curves with the scalar tags asked for (all scalars when tags is None) and
    run.first_event_wall. A file that ends inside a record (a crash, or a writer caught mid-write)
    is read up to there and the run gets the note "events truncated"."""
    from tensorboard.compat.proto.event_pb2 import Event  # here: `mimicry --help` need not load protobuf

    # One regular expression finds any wanted tag in a record's bytes, in C.
    wanted = None if tags is None else re.compile(b"|".join(re.escape(t.encode()) for t in sorted(tags)))
    points: dict[str, tuple[list, list, list]] = {}
    for path in event_files(run.path):
        data = path.read_bytes()
        offset, end, first = 0, len(data), True
        while offset < end:
            if offset + _HEADER.size > end:
                run.notes.append("events truncated")
                break
            length, _ = _HEADER.unpack_from(data, offset)
            start, stop = offset + _HEADER.size, offset + _HEADER.size + length
            if stop + 4 > end:
                run.notes.append("events truncated")
                break
            offset = stop + 4
            record = data[start:stop]
            # Skip records that cannot hold a wanted tag without parsing them; the first record
            # (file_version) is always parsed for its wall time.
            if not first and wanted is not None and not wanted.search(record):
                continue
            try:
                event = Event.FromString(record)
            except Exception:  # protobuf's DecodeError: a corrupt record; keep what came before
                run.notes.append("events corrupt")
                break
            if first:
                first = False
                if run.first_event_wall is None or event.wall_time < run.first_event_wall:
                    run.first_event_wall = event.wall_time
            for value in event.summary.value:
                if tags is not None and value.tag not in tags:
                    continue
                number = _scalar(value)
                if number is None:
                    continue
                steps, values, walls = points.setdefault(value.tag, ([], [], []))
                steps.append(event.step)
                values.append(number)
                walls.append(event.wall_time)
    run.notes = list(dict.fromkeys(run.notes))
    for tag, (steps, values, walls) in points.items():
        run.curves[tag] = _one_point_per_step(np.array(steps), np.array(values, dtype=float), np.array(walls))


def scalar_curves(run_dir: Path, tags: set[str] | None = None) -> dict[str, Curve]:
    """The scalar curves of one run directory (all tags, or those asked for), one point per step:
    what benchmark scripts read back from the runs they launched."""
    run = Run(path=Path(run_dir), summary={}, overrides=[], config={})
    read_scalars(run, tags)
    return run.curves


def _scalar(value: Any) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":  # what torch's SummaryWriter (and so Lightning) writes
        return float(value.simple_value)
    if kind == "tensor":  # TF2-style scalars: a one-element float tensor
        tensor = value.tensor
        if tensor.dtype not in _FLOAT_DTYPES:
            return None
        if tensor.float_val:
            return float(tensor.float_val[0]) if len(tensor.float_val) == 1 else None
        if tensor.double_val:
            return float(tensor.double_val[0]) if len(tensor.double_val) == 1 else None
        array = np.frombuffer(tensor.tensor_content, dtype=_FLOAT_DTYPES[tensor.dtype])
        return float(array[0]) if array.size == 1 else None
    return None


def _one_point_per_step(steps: np.ndarray, values: np.ndarray, walls: np.ndarray) -> Curve:
    """Sort by step; where a step was logged twice (a resumed run re-does the steps after its last
    checkpoint) keep the point written last, as TensorBoard shows the newer curve."""
    order = np.argsort(steps, kind="stable")
    steps, values, walls = steps[order], values[order], walls[order]
    last_of_step = np.r_[steps[1:] != steps[:-1], True]
    return Curve(steps[last_of_step], values[last_of_step], walls[last_of_step])


def read_summary_file(path: Path) -> tuple[dict[str, Any], str | None]:
    """A summary.json as data: (its fields, a note when it is damaged). Shared run folders may hold
    anything, so each field keeps its type or is dropped: a reader never crashes on one."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}, "summary.json unreadable"
    if not isinstance(found, dict):
        return {}, "summary.json damaged (not a JSON object)"
    kinds = {"status": str, "error": str, "task": str, "metrics": dict, "best": dict, "overrides": list,
             "steps": (int, float), "epochs": (int, float), "wall_time_s": (int, float)}
    damaged = [key for key, kind in kinds.items() if key in found and not isinstance(found[key], kind)
               or (kind == (int, float) and isinstance(found.get(key), bool))]
    summary = {key: value for key, value in found.items() if key not in damaged}
    if isinstance(summary.get("error"), str) and not summary["error"].strip():
        summary.pop("error")
    return summary, f"summary.json damaged ({', '.join(damaged)})" if damaged else None
