"""Damaged files and bad values get one line that names the file or the key, never a traceback, and
nothing else is touched: summary.json, overrides, the feature-net cache, episode datasets, pickles,
sample and eval options, the numbers RL and diffusion take, Lightning's own Trainer checks."""
from __future__ import annotations

import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from conftest import TINY_LM, run_mimicry
from mimicry.cli import main, prepare_train_args
from mimicry.config_checks import check_settings
from mimicry.data.episodes import load_episodes
from mimicry.data.safe_pickle import load_arrays_pickle
from mimicry.errors import MimicryError
from mimicry.metrics.feature_net import _read_feature_net
from mimicry.recipe import compose_installed
from mimicry.run_reading import read_summary_file
from mimicry.run_record import RunRecord


def one_line(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("content", ["[1, 2]", '{"status": "completed", "error": "   ", "metrics": [1]}', "{", "null"])
def test_compare_and_resume_read_a_damaged_summary(trained_lm, tmp_path, capsys, content):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_lm, run_dir)
    (run_dir / "summary.json").write_text(content)
    summary, note = read_summary_file(run_dir / "summary.json")
    assert isinstance(summary, dict) and note and "summary.json" in note
    assert main(["compare", str(run_dir)]) == 0  # the run is listed, with a note
    assert "summary.json" in capsys.readouterr().out
    # resume reads it too (the run's task, its wall time so far): damage costs only that history
    assert f"hydra.run.dir='{run_dir}'" in prepare_train_args([f"resume={run_dir}", "task=lm"])
    assert RunRecord(run_dir, "lm", []).data["resumed_from_status"] in (None, "completed")


def test_compare_survives_damaged_overrides_and_config(trained_lm, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_lm, run_dir)
    (run_dir / ".hydra" / "overrides.yaml").write_text("3")
    (run_dir / ".hydra" / "config.yaml").write_text("[unclosed")
    assert main(["compare", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "overrides damaged" in out and "config.yaml unreadable" in out


def test_a_damaged_feature_net_cache_is_named(tmp_path):
    path = tmp_path / "digits_cnn32.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MimicryError, match=f"cached feature net {path} is damaged.*delete it"):
        _read_feature_net(path)
    torch.save({"spec": {"channels": 1}, "state_dict": {}}, path)  # a torch file with the wrong fields
    with pytest.raises(MimicryError, match="is damaged"):
        _read_feature_net(path)
    assert path.exists()  # left as it was


def test_damaged_episode_datasets_are_named(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, env=np.asarray("cartpole"), observations=np.zeros((3, 4), np.float32),
             actions=np.zeros(3, np.int64), rewards=np.ones(3, np.float32), terminations=np.array([0, 0, 1], bool),
             truncations=np.zeros(3, bool), episode_lengths=np.array([3]))
    assert len(load_episodes(good).actions) == 3
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    lone_array = tmp_path / "array.npz"
    with open(lone_array, "wb") as f:
        np.save(f, np.zeros(3))
    wrong_shape = tmp_path / "wrong.npz"
    with zipfile.ZipFile(good) as z:
        members = {name[:-4]: np.load(z.open(name)) for name in z.namelist()}
    np.savez(wrong_shape, **{**members, "observations": np.zeros(3, np.float32)})
    for path, message in [(truncated, "damaged or not a .npz"), (lone_array, "a single NumPy array"),
                          (wrong_shape, "observations have the wrong shape")]:
        with pytest.raises(MimicryError, match=message):
            load_episodes(path)


def test_a_pickle_that_declares_an_enormous_array_is_refused(tmp_path):
    class Enormous:
        def __reduce__(self):
            return np._core.multiarray._reconstruct, (np.ndarray, (10**12,), b"b")
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Enormous()}, protocol=2))
    with pytest.raises(MimicryError, match=r"declares an array of shape \(1000000000000,\)"):
        load_arrays_pickle(path)
    path.write_bytes(pickle.dumps({"data": np.zeros(4, np.uint8)}, protocol=2)[:20])
    with pytest.raises(MimicryError, match="damaged"):
        load_arrays_pickle(path)


# ---- values and options ------------------------------------------------------------------------------
@pytest.mark.parametrize("choices, override, named", [
    (["task=rl"], "algo.gamma=1.5", "algo.gamma=1.5 must be a number in [0, 1]"),
    (["task=rl"], "algo.gae_lambda=-0.1", "algo.gae_lambda=-0.1 must be a number in [0, 1]"),
    (["task=rl"], "algo.num_envs=0", "algo.num_envs=0 must be a whole number ≥ 1"),
    (["task=rl", "algo=dqn"], "algo.exploration_final_eps=2", "algo.exploration_final_eps=2"),
    (["task=rl", "algo=filtered_bc"], "algo.keep_fraction=0", "algo.keep_fraction=0"),
    (["task=rl"], "task.total_env_steps=0", "task.total_env_steps=0"),
    (["task=diffusion"], "task.timesteps=1", "task.timesteps=1 must be a whole number ≥ 2"),
    (["task=diffusion"], "task.eta=1.5", "task.eta=1.5"),
    (["task=diffusion"], "task.label_dropout=1", "task.label_dropout=1"),
])
def test_rl_and_diffusion_numbers_are_checked(choices, override, named):
    def job_config(overrides):  # what check_settings sees in a run, less the parts that name the run folder
        cfg, _ = compose_installed(overrides, "the command line")
        with open_dict(cfg):
            del cfg["callbacks"], cfg["logger"]
        return cfg
    with pytest.raises(MimicryError) as error:
        check_settings(job_config([*choices, override]))
    assert named in str(error.value)
    check_settings(job_config(choices))  # the defaults pass


def test_a_bad_rl_number_fails_before_work_through_the_cli(tmp_path):
    result = run_mimicry(tmp_path, "train", "task=rl", "algo.gamma=1.5", check=False)
    assert result.returncode != 0 and "algo.gamma=1.5 must be a number in [0, 1]" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option, named", [("n=0", "n=0"), ("n=2.5", "n=2.5"), ("n=lots", "n='lots'"),
                                           ("seed=-1", "seed=-1"), ("length=0", "length=0"), ("top_k=0", "top_k=0")])
def test_sample_counts_are_whole_numbers(trained_lm, capsys, option, named):
    assert named in one_line(capsys, "sample", str(trained_lm), option)


def test_lightning_setting_errors_are_one_line(tmp_path):
    result = run_mimicry(tmp_path, "train", *TINY_LM, "trainer.val_check_interval=100", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Lightning cannot use these settings: `val_check_interval` (100)" in output
    assert "Traceback" not in output


def test_a_damaged_optuna_study_is_named_before_the_search_starts(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "optuna.db").write_text("not a database")
    message = one_line(capsys, "train", "task=lm", "hparams_search=lm_optuna", f"hydra.sweep.dir={sweep}")
    assert f"{sweep / 'optuna.db'} is damaged" in message
    (sweep / "optuna.db").unlink()
    import sqlite3

    with sqlite3.connect(sweep / "optuna.db") as db:
        db.execute("CREATE TABLE other (x)")
    assert "is not an Optuna study" in one_line(capsys, "train", "task=lm", "hparams_search=lm_optuna",
                                                f"hydra.sweep.dir={sweep}")
