"""A run's recipe: how to rebuild it, in plain values only, and the one way from it back to a config.

Checkpoints and run folders travel between people, so what they say is data, never code. A run
records its config group choices (``task=gan``, ``model=dcgan``, ...) and the literal values of its
keys (``model.generator.width=32``, ``optim.lr=0.0002``, ...). Reading one back composes the
*installed* ``conf/`` with those choices, then sets those values, so every ``_target_`` that gets
built comes from our own YAML. A choice or key the installed configs do not know, a value that is
not plain (numbers, strings, booleans, None, lists of them), an interpolation, and a key that names
what to build (``_target_``, ``_partial_``, ``_args_``) or a place on disk are refused with one line
that names them.
"""
from __future__ import annotations

import re
from importlib.resources import files
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from mimicry.errors import MimicryError

#: top-level sections a recipe never carries: where a run writes and what drives it, not what it is
UNRECORDED = frozenset({"hydra", "callbacks", "logger", "trainer", "resume", "resume_sweep", "accepts"})
#: key names that point at a place on disk; a shared file's paths are the sender's and are never followed
PATH_NAMES = frozenset({"root", "path", "dir", "subdir", "dirpath", "save_dir", "output_subdir", "filename",
                        "dataset", "run", "from_run", "init_from", "resume", "resume_sweep", "out",
                        "default_root_dir", "log_dir"})
PATH_SUFFIXES = ("_dir", "_path", "_file", "_root")

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
_GROUP = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")
_OPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


# ---- what may be said ------------------------------------------------------------------------
def refused_key(key: Any) -> str | None:
    """Why a shared file may not set ``key`` (None when it may)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return "it is not a config key"
    parts = key.split(".")
    if any(part.startswith("_") for part in parts):
        return "it names what to build, which only the installed configs choose"
    if parts[0] == "hydra":
        return "it is Hydra's own setting (where runs write, how they are launched)"
    if parts[0] in ("callbacks", "logger"):
        return "it changes what a run writes and where (callbacks and loggers are the user's to set)"
    if is_path_key(key):
        return "it is a path, and paths in a shared file are the sender's"
    return None


def is_path_key(key: str) -> bool:
    name = key.rsplit(".", 1)[-1]
    return name in PATH_NAMES or name.endswith(PATH_SUFFIXES)


def is_plain(value: Any) -> bool:
    """A number, string, boolean or None, or a list of them; no string that OmegaConf would interpolate."""
    if isinstance(value, str):
        return "${" not in value
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return False


def plain_tree(tree: Any, source: str, where: str = "") -> Any:
    """Nested dicts (string keys), lists and plain values, else one line naming the first that is not:
    what a checkpoint may carry besides its weights (the data spec, a tokenizer's vocabulary)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise MimicryError(f"{source}: refusing the key {key!r} at {where or 'the top'}: a checkpoint's "
                                   f"settings are plain data with plain names")
            plain_tree(value, source, f"{where}.{key}" if where else key)
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            plain_tree(value, source, f"{where}[{index}]")
    elif not is_plain(tree):
        raise MimicryError(f"{source}: refusing {where} = {_short(tree)}: a checkpoint's settings must be plain "
                           f"values (numbers, strings, booleans, lists)")
    return tree


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- the installed config tree -------------------------------------------------------------------
def group_options(group: str) -> list[str]:
    """The options of an installed config group (``model`` → dcgan, gpt, ...); [] for no such group."""
    folder = files("mimicry.conf")
    for part in group.split("/"):
        folder = folder / part
    if not folder.is_dir():
        return []
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def is_group(name: str) -> bool:
    return bool(_GROUP.fullmatch(name)) and bool(group_options(name))


def check_choice(group: Any, option: Any, source: str) -> str | None:
    """One group choice read from a file: an installed group (not Hydra's own) and one of its options."""
    if not isinstance(group, str) or not _GROUP.fullmatch(group) or group.split("/")[0] == "hydra":
        raise MimicryError(f"{source}: refusing the choice {group}={option}: only mimicry's own config groups "
                           f"may be chosen by a shared file (launchers and sweepers are yours to type)")
    options = group_options(group)
    if not options:
        raise MimicryError(f"{source}: unknown config group {group!r} (see `mimicry list`)")
    if option is None or option == "null":
        return None
    if not isinstance(option, str) or not _OPTION.fullmatch(option) or option not in options:
        raise MimicryError(f"{source}: {group}={option} is not an installed option; choose one of: "
                           f"{', '.join(options)}")
    return option


def compose_installed(overrides: list[str], source: str) -> tuple[DictConfig, dict[str, Any]]:
    """The installed ``conf/train.yaml`` composed with ``overrides`` (checked ones only): the job's
    config and its group choices. Works inside a running ``mimicry train`` too."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        else:
            with initialize_config_module("mimicry.conf", version_base="1.3"):
                cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except Exception as error:  # Hydra's composition errors: the first line names the option
        raise MimicryError(f"{source}: the installed configs cannot be composed with its settings: "
                           f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
                           ) from None
    choices = dict(OmegaConf.to_container(cfg.hydra.runtime.choices))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


# ---- recording ------------------------------------------------------------------------------------
def recorded_choices(choices: dict[str, Any]) -> dict[str, str]:
    """The group choices worth recording: mimicry's own groups, chosen (not Hydra's, not a derived one)."""
    return {group: option for group, option in choices.items()
            if isinstance(option, str) and _GROUP.fullmatch(group) and group.split("/")[0] != "hydra"
            and group != "hparams_search"}


def literal_values(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every literal leaf of an unresolved config tree; an interpolation is left
    out (it follows from the keys it names), and so is a list that holds one."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from literal_values(value, name + ".")
        elif is_plain(value) and value != "???":
            yield name, value


def record_recipe(cfg: DictConfig, choices: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says of how to rebuild its run: group choices and literal values, each one
    that a shared file may set (no classes, no paths, nothing of Hydra's or of the trainer's)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    values = {key: value for key, value in literal_values(raw)
              if key.split(".")[0] not in UNRECORDED and refused_key(key) is None}
    return {"choices": recorded_choices(choices), "values": values}


# ---- reading back ---------------------------------------------------------------------------------
def check_recipe(recipe: Any, source: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The (choices, values) of a recipe read from a file, each checked, or one line naming the first bad one."""
    if not isinstance(recipe, dict) or not isinstance(recipe.get("choices"), dict) \
            or not isinstance(recipe.get("values"), dict):
        raise MimicryError(f"{source} holds no run recipe (it was written by a mimicry older than run recipes, or "
                           f"altered); retrain it with the overrides in its .hydra/overrides.yaml")
    choices = {group: check_choice(group, option, source) for group, option in recipe["choices"].items()}
    for key, value in recipe["values"].items():
        reason = refused_key(key) or (None if is_plain(value) else
                                      "its value is not plain (numbers, strings, booleans, lists of them)")
        if reason is None and key.split(".")[0] in UNRECORDED:
            reason = "that section comes from the installed configs and the command line"
        if reason:
            raise MimicryError(f"{source}: refusing {key}={_short(value)}: {reason}")
    return choices, dict(recipe["values"])


def parent_of(cfg: DictConfig, key: str, source: str) -> DictConfig:
    """The section that holds ``key`` in the installed config, reached without following an
    interpolation; one line when the installed configs have no such key."""
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not (isinstance(node, DictConfig) and part in node.keys()):
            raise MimicryError(f"{source}: unknown key {key} (the installed configs have no "
                               f"{'.'.join(parts[:depth + 1])}); it was written by another version of mimicry "
                               f"or altered")
        if OmegaConf.is_interpolation(node, part):
            raise MimicryError(f"{source}: refusing {key}: {'.'.join(parts[:depth + 1])} follows from another key "
                               f"in the installed configs")
        if depth < len(parts) - 1:
            node = node[part]
    return node


def set_value(cfg: DictConfig, key: str, value: Any, source: str) -> None:
    """Set one checked value on a key the installed config has."""
    parent, leaf = parent_of(cfg, key, source), key.rsplit(".", 1)[-1]
    if isinstance(parent[leaf], DictConfig) and value is not None:
        raise MimicryError(f"{source}: refusing {key}={_short(value)}: {key} is a section, not a value")
    parent[leaf] = value


def compose_recipe(recipe: Any, source: str, typed: dict[str, Any] | None = None) -> DictConfig:
    """A recipe read from ``source`` → the installed config with its choices and values, resolved
    where it matters. ``typed``: values the user gave on this command line (paths among them)."""
    choices, values = check_recipe(recipe, source)
    overrides = [f"{group}={'null' if option is None else option}" for group, option in choices.items()]
    cfg, _ = compose_installed(overrides, source)
    for key, value in values.items():
        set_value(cfg, key, value, source)
    for key, value in (typed or {}).items():  # the user's own: any existing key, paths included
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def as_plain(node: Any) -> Any:
    """A resolved config node as plain Python (dicts, lists, values)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def typed_data_values(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split ``data.KEY=VALUE`` arguments (typed by the user for a run read back, e.g. ``data.root=``
    for where its dataset is on this machine) from the others; values are read as YAML scalars."""
    import yaml

    rest, typed = [], {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not (sep and key.startswith("data.")):
            rest.append(arg)
            continue
        if not _KEY.fullmatch(key) or any(part.startswith("_") for part in key.split(".")):
            raise MimicryError(f"{key}: give a data setting by its name, e.g. data.root=DIR")
        typed[key] = yaml.safe_load(value) if value else value
    return rest, typed
