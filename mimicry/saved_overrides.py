"""Overrides read back from a run or sweep folder (``resume=``, ``resume_sweep=``), checked as data.

A run folder's ``.hydra/overrides.yaml`` (a sweep's ``multirun.yaml``) is a list of Hydra overrides.
Each is parsed with Hydra's own override parser and kept only if it is a choice of an installed
option (``loss=hinge``, or a sweep over several) or a plain value for a key the installed configs
have (``optim.lr=0.001``). Refused with one line, which says how to type it if it was meant: Hydra's
own settings, launcher and sweeper choices, interpolations, keys that name what to build
(``_target_``), added or deleted keys, and paths. What the user types now stays theirs to choose.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, QuotedString, ValueType

from mimicry.errors import MimicryError
from mimicry.recipe import check_choice, compose_installed, is_group, is_plain, parent_of, refused_key

SWEEPS_OF_VALUES = (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP, ValueType.RANGE_SWEEP)
#: paths to the runs a run started from, whose content its checkpoint carries (an lm run's settings and
#: tokenizer, a first stage's recipe and weights): a resumed run needs them no more, so they are dropped
#: (not init_from=hf:DIR, a Hugging Face folder whose settings shape the model: typed again, as paths are)
CARRIED_BY_CHECKPOINT = frozenset({"init_from", "tokenizer.from_run", "latent.from_run"})


def candidate_values(override: Override) -> list[Any]:
    """Every value an override can take (one, or each of a sweep's), as plain Python."""
    if override.value_type == ValueType.ELEMENT:
        values = [override.value()]
    elif override.value_type in SWEEPS_OF_VALUES:
        values = list(override.sweep_iterator())
    elif override.value_type == ValueType.INTERVAL_SWEEP:
        values = [override.value().start, override.value().end]
    else:  # a glob over options
        raise MimicryError("a glob() sweep")
    return [v.text if isinstance(v, QuotedString) else v for v in values]


def vet_overrides(lines: Any, source: Path, retype: str, typed: list[str] = (), drop: set[str] = frozenset(),
                  carried: frozenset[str] = frozenset()) -> list[str]:
    """The saved overrides that may be reused, in their order, as saved. ``typed``: the new command
    line's overrides (its group choices count when checking which keys exist); ``drop``: keys it sets
    again (the user's value wins, unchecked); ``carried``: keys whose content the run's checkpoint
    carries (dropped, never followed). ``retype``: the command the hint tells the user to give."""
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise MimicryError(f"{source} is damaged: it must hold a list of overrides (key=value text), "
                           f"not {type(lines).__name__} {str(lines)[:60]!r}")
    parser = OverridesParser.create()
    groups, keys, kept = [], [], []
    for line in lines:
        def refuse(reason: str) -> MimicryError:
            return MimicryError(f"{source}: refusing the saved override {line!r}: {reason}; if you meant it, "
                                f"type it yourself: {retype} {line!r}")
        try:
            override = parser.parse_override(line)
        except Exception as error:  # Hydra's message names the bad character
            raise MimicryError(f"{source}: cannot read the saved override {line!r} "
                               f"({str(error).splitlines()[0]})") from None
        name = override.key_or_group
        if name.lstrip("+~") in drop:
            continue
        if name.lstrip("+~") in carried and not str(override.value()).startswith("hf:"):
            continue  # a run folder the checkpoint carries (hf:DIR weights also set the model's shape: kept)
        if override.package is not None:
            raise refuse("it moves a config to another package")
        if override.type == OverrideType.DEL:
            raise refuse("it deletes a key")
        try:
            values = candidate_values(override)
        except MimicryError as error:
            raise refuse(str(error)) from None
        if name.split("/")[0].split(".")[0] == "hydra":
            raise refuse("it is Hydra's own setting (where runs write, which launcher or sweeper runs them)")
        if is_group(name):  # one option, or a list of them (logger=[tensorboard,mlflow])
            for value in values:
                for option in value if isinstance(value, list) else [value]:
                    check_choice(name, option, str(source))
            first = values[0]
            groups.append(f"{name}=[{','.join(first)}]" if isinstance(first, list) else f"{name}={first}")
            kept.append(line)
            continue
        reason = refused_key(name)
        if reason is None and override.type == OverrideType.ADD:
            reason = "it adds a key that the installed configs do not have"
        if reason is None and not all(is_plain(value) for value in values):
            reason = "its value is not plain (an interpolation ${...}, or a mapping that could name a class)"
        if reason:
            raise refuse(reason)
        keys.append(name)
        kept.append(line)
    # One composition with the group choices says which keys exist (a sweep's first option).
    typed_groups = [arg for arg in typed if "=" in arg and is_group(arg.split("=", 1)[0].lstrip("+"))]
    cfg, _ = compose_installed(groups + typed_groups, str(source))
    for key in keys:
        parent_of(cfg, key, str(source))
    return kept
