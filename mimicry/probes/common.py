"""What every probe shares: the run (task from its checkpoint, safely), its data, batches of it,
and where results go (``RUN_DIR/probes/``, the run's TensorBoard)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from mimicry.checkpoints import find_checkpoint, load_task_and_config
from mimicry.errors import MimicryError
from mimicry.output_paths import ensure_writable_dir
from mimicry.tasks.base import ImitationTask


@dataclass
class ProbedRun:
    run_dir: Path
    checkpoint: Path
    task: ImitationTask
    config: DictConfig  # the installed configs composed with the run's recipe (mimicry/recipe.py)

    @property
    def out_dir(self) -> Path:
        out = self.run_dir / "probes"
        ensure_writable_dir(out, "", fix="probes write into the run directory: copy the run somewhere writable")
        return out

    def writer(self) -> SummaryWriter:
        """A writer into the run's TensorBoard folder: the probe's figures appear beside its curves."""
        return SummaryWriter(str(self.run_dir / "tb"))

    def datamodule(self) -> Any:
        """The run's training data, built from its recipe (text keeps the checkpoint's tokenizer)."""
        config = self.config.get("data")
        if config is None:
            raise MimicryError(f"{self.run_dir} trained without a dataset (an rl run makes its own data)")
        spec = self.task.data_spec
        data = instantiate(config, tokenizer_state=spec["tokenizer"]) if spec.get("kind") == "text" else instantiate(config)
        data.setup("fit")
        return data


def open_run(path: str | Path, prefer: str = "best", typed: dict[str, Any] | None = None) -> ProbedRun:
    """The run's task from its best checkpoint (``prefer="last"``: the final weights); ``typed``: data
    settings given on the command line (``data.root=``)."""
    if prefer not in ("best", "last"):
        raise MimicryError(f"checkpoint={prefer}: choose best (by the run's monitored metric) or last")
    checkpoint = find_checkpoint(path, prefer)
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    task, config = load_task_and_config(checkpoint, typed=typed)  # mimicry/checkpoints.py: data, never code
    torch.set_grad_enabled(True)
    return ProbedRun(run_dir, checkpoint, task, config)


def parse_options(args: list[str], defaults: dict[str, Any], probe: str) -> tuple[str, dict[str, Any]]:
    """RUN_DIR first, then key=value (values read as YAML: eps=[0.001,0.01])."""
    if not args or "=" in args[0] and not Path(args[0]).exists():
        raise MimicryError(f"give a run directory first: mimicry probe {probe} RUN_DIR [key=value ...]")
    options = dict(defaults)
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep:
            raise MimicryError(f"probe options are key=value; got {arg!r}")
        if key not in defaults:
            raise MimicryError(f"unknown option {key!r} for probe {probe}; valid: {', '.join(defaults)}")
        options[key] = yaml.safe_load(value)
    return args[0], options


def batches_of(loader: Any, count: int) -> list[Any]:
    """The first ``count`` batches of a loader (the text loaders draw seeded windows: the same every time)."""
    found = []
    for batch in loader:
        found.append(batch)
        if len(found) == count:
            break
    if not found:
        raise MimicryError("the run's data gave no batches to probe")
    return found


def held_out(datamodule: Any) -> Any:
    """The validation loader (the first one, where a run also scores training windows at validation)."""
    loaders = datamodule.val_dataloader()
    return loaders[0] if isinstance(loaders, (list, tuple)) else loaders


def save_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def whole(options: dict[str, Any], key: str, low: int = 1) -> int:
    value = options[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise MimicryError(f"{key}={value!r}: must be a whole number ≥ {low}")
    return value
