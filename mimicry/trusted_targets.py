"""Which classes a shared file may ask us to build.

Checkpoints and run directories travel between people. Their configs name classes to build
(``_target_``), and Hydra's ``instantiate`` would call *any* importable callable, so a file with
``loss: {_target_: builtins.open, ...}`` would run that call on ``mimicry sample``. Before we build
anything from such a file, every ``_target_`` in it must be one of ours or one of the few library
classes our configs really use; anything else is refused with one line naming it.
"""
from __future__ import annotations

import importlib
from typing import Any, Iterator

from mimicry.errors import MimicryError

#: library classes our shipped configs build (losses, Lightning callbacks and loggers)
LIBRARY_TARGETS = frozenset({
    "torch.nn.CrossEntropyLoss",
    "torch.nn.MSELoss",
    "pytorch_lightning.Trainer",
    "pytorch_lightning.callbacks.ModelCheckpoint",
    "pytorch_lightning.callbacks.RichProgressBar",
    "pytorch_lightning.callbacks.TQDMProgressBar",
    "pytorch_lightning.callbacks.LearningRateMonitor",
    "pytorch_lightning.callbacks.EarlyStopping",
    "pytorch_lightning.callbacks.Timer",
    "pytorch_lightning.loggers.TensorBoardLogger",
    "pytorch_lightning.loggers.CSVLogger",
})

#: where our own classes live; a module path must start with one of these
OWN_PREFIXES = ("mimicry.",)


def is_trusted(target: Any) -> bool:
    """A library class we list, or something *defined* in mimicry under exactly that name.

    The prefix alone is not enough: ``mimicry.cli.os.system`` starts with ``mimicry.`` but is
    ``os.system``, reached through our module's import. So the name is resolved (importing only
    mimicry's own modules, which runs nothing of the file's) and must be where the object lives.
    """
    if not isinstance(target, str):
        return False
    if target in LIBRARY_TARGETS:
        return True
    if not target.startswith(OWN_PREFIXES):
        return False
    found = resolve_own(target)
    return found is not None and f"{getattr(found, '__module__', '')}.{getattr(found, '__qualname__', '')}" == target


def resolve_own(target: str) -> Any:
    """The object a dotted mimicry name points to, or None (never imports outside mimicry)."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute, None)
            if found is None:
                return None
        return found
    return None


def targets(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key path, value) of a ``_target_`` key in nested dicts and lists."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield where, value
            else:
                yield from targets(value, where)
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from targets(value, f"{path}[{index}]")


def check_targets(tree: Any, source: str, hint: str = "this file was made by something else or was tampered with") -> None:
    """Refuse a config read from ``source`` (a file name) if it would build anything not ours."""
    for where, target in targets(tree):
        if not is_trusted(target):
            raise MimicryError(f"refusing to build {target!r} (at {where}) named in {source}: only mimicry's own "
                               f"classes may be built from a shared file; {hint}")
