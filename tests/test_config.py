"""Every option of every config group composes, and each task's `accepts` names real options."""
from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import OmegaConf

from mimicry.catalog import options
from mimicry.cli import _register_resolvers, prepare_train_args

_register_resolvers()
TASKS = sorted(options("task"))


def composed(*overrides: str):
    with initialize_config_module("mimicry.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_conf_ships_inside_the_package():
    assert (files("mimicry.conf") / "train.yaml").is_file()


def test_default_task_composes():
    cfg = composed()
    assert cfg.seed == 0 and cfg.hydra.runtime.choices.task in TASKS


@pytest.mark.parametrize("task", TASKS)
def test_task_alone_picks_a_model_loss_and_data_it_accepts(task):
    cfg = composed(f"task={task}")
    choices = cfg.hydra.runtime.choices
    for group, allowed in cfg.accepts.items():
        assert choices[group] in allowed, f"task={task} picks {group}={choices[group]} but accepts {list(allowed)}"
    get_class(cfg.task._target_)


@pytest.mark.parametrize("task,group,option", [
    (task, group, option) for task in TASKS
    for group, allowed in (OmegaConf.create(options("task")[task]).get("accepts") or {}).items()
    for option in allowed])
def test_every_accepted_option_composes(task, group, option):
    assert option in options(group), f"task={task} accepts {group}={option}, which does not exist"
    cfg = composed(f"task={task}", f"{group}={option}")
    node = cfg[group]
    if "_target_" in node:
        get_class(node._target_)
    OmegaConf.to_container(node, resolve=False)


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_runner_groups_compose(group):
    for option in options(group):
        cfg = composed(f"{group}={option}")
        OmegaConf.to_container(cfg[group])


def test_command_line_choice_beats_the_task_default():
    assert composed("task=lm", "data=tinyshakespeare").hydra.runtime.choices.data == "tinyshakespeare"


def test_paths_in_resume_and_init_from_are_quoted_for_hydra():
    assert prepare_train_args(["init_from=outputs/lm/a=1,b=2"]) == ["init_from='outputs/lm/a=1,b=2'"]
