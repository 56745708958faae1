"""Finding, reading and rebuilding mimicry checkpoints (for sample, eval, probe and init_from).

A checkpoint is data: tensors (read with ``weights_only=True``), the run's recipe (its group
choices and plain values, mimicry/recipe.py) and what the task derived from other files when it
was first built (the data spec with its tokenizer; RL on text: the lm run's settings), also plain
values. Rebuilding composes the *installed* configs with the recipe and builds the task through
``build_task``, the same function ``mimicry train`` uses, so nothing that is built is named by the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mimicry.errors import MimicryError
from mimicry.recipe import compose_recipe, plain_tree

PRETRAINED_PREFIX = "hf:"  # init_from=hf:DIR (mimicry/models/hf_gpt2.py reads it)


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
    """The checkpoint's contents, checked for shape: tensors by name, and mimicry's plain-data section."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, a pickle that asks for code...
        raise MimicryError(f"cannot read checkpoint {path}: it is corrupt or not a mimicry checkpoint "
                           f"({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("mimicry"), dict):
        raise MimicryError(f"{path} is not a mimicry checkpoint (no mimicry section inside)")
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise MimicryError(f"{path} is not a mimicry checkpoint (its weights are not tensors by name)")
    if not isinstance(checkpoint["mimicry"].get("task"), str):
        raise MimicryError(f"{path} is not a mimicry checkpoint (it does not say which task it holds)")
    return checkpoint


def checkpoint_task_name(checkpoint: dict) -> str:
    """The task class a checkpoint says it holds (compared as a name; never imported from the file)."""
    return checkpoint["mimicry"]["task"]


def read_derived(checkpoint: dict, source: str) -> dict[str, Any]:
    """What the task derived when first built (``data_spec``, ...): plain values, checked."""
    derived = checkpoint["mimicry"].get("derived")
    if not isinstance(derived, dict) or not isinstance(derived.get("data_spec"), dict):
        raise MimicryError(f"{source} holds no data spec (it was written by a mimicry older than run recipes, or "
                           f"altered); retrain it with the overrides in its .hydra/overrides.yaml")
    return plain_tree(derived, source)


def saved_config(checkpoint: dict, source: str, typed: dict[str, Any] | None = None) -> DictConfig:
    """The installed config composed with the checkpoint's recipe (and the values the user typed)."""
    return compose_recipe(checkpoint["mimicry"].get("recipe"), source, typed)


# ---- building a task: one path for train and for every reader ------------------------------------
def task_class(target: Any) -> type:
    """The task class named by the installed config's ``task._target_``: a mimicry task, nothing else."""
    from hydra.utils import get_class

    from mimicry.tasks.base import ImitationTask

    if not isinstance(target, str) or not target.startswith("mimicry.tasks."):
        raise MimicryError(f"task._target_={target!r}: not a mimicry task")
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, ImitationTask)):
        raise MimicryError(f"task._target_={target!r}: not a mimicry task")
    return cls


def build_task(cfg: DictConfig, data_spec: dict, recipe: dict | None = None, **derived: Any):
    """The task of a composed config, given the data spec and anything else it derived before
    (``derived``, read back from a checkpoint); ``recipe`` goes into its checkpoints."""
    options = OmegaConf.to_container(cfg.task, resolve=True)
    cls = task_class(options.pop("_target_"))
    plain = lambda node: OmegaConf.to_container(node, resolve=True) if node is not None else None  # noqa: E731
    task = cls(model=plain(cfg.model), loss=plain(cfg.loss), optim=plain(cfg.optim), data_spec=data_spec,
               **options, **derived)
    task.recipe = recipe
    return task


def load_task(path: str | Path, prefer: str = "best", typed: dict[str, Any] | None = None):
    """Rebuild the task saved in a checkpoint or run directory, in eval mode, on the CPU.
    ``typed``: config values given on this command line (e.g. ``data.root``)."""
    task, _ = load_task_and_config(path, prefer, typed)
    return task


def load_task_and_config(path: str | Path, prefer: str = "best", typed: dict[str, Any] | None = None):
    """(task, its composed config): readers that also need the data (eval, probes) build it from the config."""
    ckpt_path = find_checkpoint(path, prefer)
    checkpoint = read_checkpoint(ckpt_path)
    derived = read_derived(checkpoint, str(ckpt_path))
    cfg = saved_config(checkpoint, str(ckpt_path), typed)
    try:
        task = build_task(cfg, recipe=checkpoint["mimicry"]["recipe"], **derived)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:  # plain values of the wrong kind
        raise MimicryError(f"{ckpt_path}: its settings do not build a task ({type(error).__name__}: "
                           f"{' '.join(str(error).split())[:160]}); it was altered or written by another version "
                           f"of mimicry") from None
    built = f"{type(task).__module__}.{type(task).__qualname__}"
    if built != checkpoint_task_name(checkpoint):
        raise MimicryError(f"{ckpt_path} says it holds a {checkpoint_task_name(checkpoint)} but its recipe builds a "
                           f"{built}; it was altered or written by another version of mimicry")
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:  # names or shapes that don't fit the model its recipe builds
        raise MimicryError(f"{ckpt_path}: its weights don't fit the model its recipe builds "
                           f"({_first_problem(error)}); it was altered or written by another version of mimicry"
                           ) from None
    return task.eval(), cfg


def _first_problem(error: RuntimeError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__


def load_weights_into(task: torch.nn.Module, path: str | Path) -> Path | str:
    """``init_from``: copy a trained model's weights into a freshly built task of the same kind."""
    if hasattr(task, "init_weights_from"):  # a task that starts from another task's run (RL on text: an lm run)
        return task.init_weights_from(path)
    if str(path).startswith(PRETRAINED_PREFIX):  # hf:DIR: pretrained GPT weights, which the task reads itself
        if not hasattr(task, "start_from_pretrained"):
            raise MimicryError(f"init_from={path} starts a text model from GPT-2 weights: use task=lm or "
                               f"task=rl env=text, not {type(task).__name__}")
        return task.start_from_pretrained(str(path))
    ckpt_path = find_checkpoint(path, prefer="best")
    checkpoint = read_checkpoint(ckpt_path)
    expected = f"{type(task).__module__}.{type(task).__qualname__}"
    if checkpoint_task_name(checkpoint) != expected:
        raise MimicryError(f"init_from={path} holds a {checkpoint_task_name(checkpoint)} checkpoint, "
                           f"but this run's task is {expected}; give a run of the same task")
    try:
        missing, unexpected = task.load_state_dict(checkpoint["state_dict"], strict=False)
    except RuntimeError as error:  # same names, different shapes
        raise MimicryError(f"init_from={path}: the weights don't fit this run's model ({_first_problem(error)}); "
                           f"use the same model settings") from None
    if missing or unexpected:
        raise MimicryError(f"init_from={path}: the model differs from this run's "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]}); use the same model settings")
    return ckpt_path


def saved_data_spec(path: str | Path) -> dict:
    """The data spec (e.g. the tokenizer) a trained run was built with."""
    ckpt_path = find_checkpoint(path)
    return read_derived(read_checkpoint(ckpt_path), str(ckpt_path))["data_spec"]
