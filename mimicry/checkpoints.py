"""Finding, checking and loading mimicry checkpoints (for sample, eval and init_from).

A checkpoint carries everything needed to rebuild its task: the task class, its constructor
arguments as plain values (model, loss, optimizer settings, the data spec with the tokenizer),
and the weights. Loading uses ``weights_only=True``, and every class the saved arguments name is
checked before anything is built (mimicry/trusted_targets.py): a checkpoint can't run code.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from mimicry.errors import MimicryError
from mimicry.trusted_targets import check_targets, is_trusted, resolve_own


def find_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """A .ckpt file, or a run directory (its best checkpoint, else last)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise MimicryError(f"no such run directory or checkpoint: {path}")
    folder = path / "checkpoints"
    order = ["best.ckpt", "last.ckpt"] if prefer == "best" else ["last.ckpt", "best.ckpt"]
    for name in order:
        if (folder / name).is_file():
            return folder / name
    raise MimicryError(f"no checkpoint in {folder} (looked for {' or '.join(order)}); "
                       f"was the run stopped before its first validation?")


def read_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, unsafe pickle...
        raise MimicryError(f"cannot read checkpoint {path}: it is corrupt or not a mimicry checkpoint "
                           f"({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "mimicry" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise MimicryError(f"{path} is not a mimicry checkpoint (no task metadata inside)")
    if not isinstance(checkpoint["hyper_parameters"], dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise MimicryError(f"{path} is not a mimicry checkpoint (its task arguments or weights are malformed)")
    check_targets(checkpoint["hyper_parameters"], str(path))  # before anything is built from them
    return checkpoint


def task_class(target: str) -> type:
    """The task class named by a dotted path: a class defined in ``mimicry.tasks``, nothing else."""
    if not isinstance(target, str) or not target.startswith("mimicry.tasks."):
        raise MimicryError(f"refusing to load task class {target!r}: not a mimicry task")
    cls = resolve_own(target)
    if cls is None:
        raise MimicryError(f"unknown task class {target!r}; this checkpoint needs a newer mimicry")
    from mimicry.tasks.base import ImitationTask

    # Defined under that very name, and a task: not something a task module merely imported.
    if not (isinstance(cls, type) and issubclass(cls, ImitationTask) and is_trusted(target)):
        raise MimicryError(f"refusing to load task class {target!r}: not a mimicry task")
    return cls


def checkpoint_task_name(checkpoint: dict) -> str:
    return checkpoint["mimicry"]["task"]


def load_task(path: str | Path, prefer: str = "best"):
    """Rebuild the task saved in a checkpoint or run directory, in eval mode, on the CPU."""
    ckpt_path = find_checkpoint(path, prefer)
    checkpoint = read_checkpoint(ckpt_path)
    cls = task_class(checkpoint_task_name(checkpoint))
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(checkpoint["hyper_parameters"]) - accepted)
    if unknown:
        raise MimicryError(f"{ckpt_path}: {cls.__name__} takes no argument(s) {', '.join(map(str, unknown))}; "
                           f"the checkpoint was written by another version of mimicry or was altered")
    task = cls(**checkpoint["hyper_parameters"])
    task.load_state_dict(checkpoint["state_dict"])
    return task.eval()


def load_weights_into(task: torch.nn.Module, path: str | Path) -> Path:
    """``init_from``: copy a trained model's weights into a freshly built task of the same kind."""
    if hasattr(task, "init_weights_from"):  # a task that starts from another task's run (RL on text: an lm run)
        return task.init_weights_from(path)
    ckpt_path = find_checkpoint(path, prefer="best")
    checkpoint = read_checkpoint(ckpt_path)
    expected = f"{type(task).__module__}.{type(task).__qualname__}"
    if checkpoint_task_name(checkpoint) != expected:
        raise MimicryError(f"init_from={path} holds a {checkpoint_task_name(checkpoint)} checkpoint, "
                           f"but this run's task is {expected}; give a run of the same task")
    try:
        missing, unexpected = task.load_state_dict(checkpoint["state_dict"], strict=False)
    except RuntimeError as error:  # same names, different shapes
        raise MimicryError(f"init_from={path}: the weights don't fit this run's model "
                           f"({str(error).splitlines()[1].strip() if chr(10) in str(error) else error}); "
                           f"use the same model settings") from None
    if missing or unexpected:
        raise MimicryError(f"init_from={path}: the model differs from this run's "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]}); use the same model settings")
    return ckpt_path


def saved_data_spec(path: str | Path) -> dict:
    """The data spec (e.g. the tokenizer) a trained run was built with."""
    return read_checkpoint(find_checkpoint(path))["hyper_parameters"]["data_spec"]
