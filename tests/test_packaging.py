"""The wheel, as `pip install mimicry` would install it: every module and config inside, and it works
from a folder where nothing of this repository is on the path (an editable install hides what a wheel
leaves out)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, run_dirs, summary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of this checkout, unpacked into a folder of its own (what site-packages would hold)."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(out / "dist"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "would be ignored" not in build.stderr  # setuptools' warning when a data folder is not a listed package
    (wheel,) = (out / "dist").glob("mimicry-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "mimicry").rglob("*.py")}
    configs = {f"mimicry/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    missing = sorted((modules | configs) - names)
    assert not missing, f"the wheel leaves out {missing}"
    return site


def from_wheel(site: Path, cwd: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """Python code run with the unpacked wheel first on the path, in a folder outside the repository."""
    guard = (f"import sys; sys.path.insert(0, {str(site)!r}); import mimicry; "
             f"assert mimicry.__file__.startswith({str(site)!r}), mimicry.__file__\n")
    env = {**os.environ, "MIMICRY_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", guard + code, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_imports_every_module_and_composes_every_task(unpacked_wheel, tmp_path):
    code = """
import importlib, pkgutil
from importlib.resources import files
from hydra import compose, initialize_config_module
for module in pkgutil.walk_packages(mimicry.__path__, "mimicry."):
    importlib.import_module(module.name)
tasks = sorted(p.name[:-5] for p in (files("mimicry.conf") / "task").iterdir() if p.name.endswith(".yaml"))
with initialize_config_module("mimicry.conf", version_base="1.3"):
    for task in tasks:
        assert compose("train", overrides=[f"task={task}"]).task._target_.startswith("mimicry.tasks.")
print("composed", *tasks)
"""
    result = from_wheel(unpacked_wheel, tmp_path, code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[1:] == sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))


def test_the_wheel_lists_probes_and_trains_rl_on_text(unpacked_wheel, trained_lm, tmp_path):
    cli = "from mimicry.cli import main; raise SystemExit(main(sys.argv[1:]))"
    listed = from_wheel(unpacked_wheel, tmp_path, cli, "list")
    assert listed.returncode == 0 and "task" in listed.stdout and "gan" in listed.stdout, listed.stderr[-2000:]
    probe_help = from_wheel(unpacked_wheel, tmp_path, cli, "probe", "--help")
    assert probe_help.returncode == 0 and "sharpness" in probe_help.stdout, probe_help.stderr[-2000:]
    run = from_wheel(unpacked_wheel, tmp_path, cli, "train", "task=rl", "env=text", "algo=ppo",
                     f"init_from={trained_lm}", "env.prompts=[def]", "env.max_new_tokens=8", "reward=contains_words",
                     "reward.words=[self]", "algo.num_envs=8", "algo.batch_size=32", "algo.update_epochs=1",
                     "task.total_env_steps=64", "task.eval_every_env_steps=64", "task.eval_episodes=4",
                     "callbacks.progress=null")
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "completed"
