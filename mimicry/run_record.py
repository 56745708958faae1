"""``summary.json``: the one file that says how a run went (status, metrics, steps, wall time).

It is written when the run starts (``running``) and rewritten when it ends, so a run that dies
without a word still shows ``running`` with its start time, never ``completed``.
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from mimicry.run_reading import read_summary_file

STATUSES = ("running", "completed", "failed", "diverged")


class RunRecord:
    def __init__(self, run_dir: Path, task: str, overrides: list[str]):
        self.path = Path(run_dir) / "summary.json"
        # milliseconds: the jobs of a sweep of tiny models start within one second of each other
        started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.data: dict[str, Any] = {"task": task, "overrides": list(overrides), "started": started}
        self._start = time.perf_counter()
        if self.path.exists():  # a resumed run keeps its history
            previous, _ = read_summary_file(self.path)
            self.data["resumed_from_status"] = previous.get("status")
            if isinstance(previous.get("started"), str):
                self.data["started"] = previous["started"]
            self._previous_wall = float(previous.get("wall_time_s", 0.0))
        else:
            self._previous_wall = 0.0

    def update(self, status: str, **fields: Any) -> None:
        assert status in STATUSES, status
        self.data.update(fields, status=status,
                         wall_time_s=round(self._previous_wall + time.perf_counter() - self._start, 2),
                         updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if rank_zero_only.rank != 0:  # under DDP every process runs this; one writes
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_plain(self.data), indent=2, sort_keys=True))
        tmp.replace(self.path)  # atomic: a reader never sees half a file


def _plain(value: Any) -> Any:
    """JSON-safe copy: tensors to floats, non-finite floats to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_summary(run_dir: Path) -> dict:
    return read_summary_file(Path(run_dir) / "summary.json")[0]
