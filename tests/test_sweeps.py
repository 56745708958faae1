"""Sweeps: one readable folder per job, a failed job does not stop the others, resume_sweep
reruns only what did not complete, Optuna searches store their study, DDP works inside -m."""
from __future__ import annotations

import json

import pytest

from conftest import REPO, TINY_LM, run_dirs, run_mimicry, summary

PROBES = {"PYTHONPATH": str(REPO / "tests")}
ONE_EPOCH = [a for a in TINY_LM if not a.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1"]


def sweep_dir_of(cwd):
    (folder,) = {run.parent for run in run_dirs(cwd)}
    return folder


def test_a_2x2_sweep_names_each_job_by_what_varies_and_prints_a_table(tmp_path):
    # two jobs at a time (Hydra's joblib launcher): its workers must name folders as this process does
    result = run_mimicry(tmp_path, "train", "-m", "hydra/launcher=parallel", *ONE_EPOCH, "model.n_embd=16,32",
                         "seed=0,1")
    runs = run_dirs(tmp_path)
    assert [r.name for r in runs] == ["0_model.n_embd=16,seed=0", "1_model.n_embd=16,seed=1",
                                      "2_model.n_embd=32,seed=0", "3_model.n_embd=32,seed=1"]
    assert all(summary(r)["status"] == "completed" for r in runs)
    folder = sweep_dir_of(tmp_path)
    assert "4 of 4 jobs completed" in result.stdout
    table = json.loads((folder / "sweep_summary.json").read_text())
    assert [row["status"] for row in table] == ["completed"] * 4
    assert all(row["monitor"] == "val/loss" and row["value"] > 0 for row in table)
    assert "| 3_model.n_embd=32,seed=1 | completed | val/loss |" in (folder / "sweep_summary.md").read_text()


def test_a_failing_job_is_recorded_the_others_go_on_and_resume_sweep_reruns_only_it(tmp_path):
    marker = tmp_path / "failed_once"
    probe = ["+callbacks.boom._target_=run_probes.FailOnce", f"+callbacks.boom.marker={marker}"]
    first = run_mimicry(tmp_path, "train", "-m", *ONE_EPOCH, *probe, "+callbacks.boom.fail=false,true,false",
                        env=PROBES, check=False)
    assert first.returncode != 0  # the command says something failed...
    runs = run_dirs(tmp_path)
    assert [summary(r)["status"] for r in runs] == ["completed", "failed", "completed"]  # ...and the others ran
    assert "RuntimeError: a bug in this job" in summary(runs[1])["error"]
    assert "Traceback" in (runs[1] / "train.log").read_text()  # the bug's traceback, in the job's own log
    assert "2 of 3 jobs completed" in first.stdout
    before = {r.name: summary(r)["updated"] for r in runs}

    folder = sweep_dir_of(tmp_path)
    # Our own callback is not mimicry's: a resumed sweep builds it only when asked again explicitly.
    refused = run_mimicry(tmp_path, "train", f"resume_sweep={folder}", env=PROBES, check=False)
    assert "refusing the saved override '+callbacks.boom._target_=run_probes.FailOnce'" in refused.stderr
    assert f"type it yourself: mimicry train resume_sweep={folder}" in refused.stderr
    again = run_mimicry(tmp_path, "train", f"resume_sweep={folder}", *probe, "+callbacks.boom.fail=false,true,false",
                        env=PROBES)
    assert run_dirs(tmp_path) == runs  # the same folders, nothing new
    assert [summary(r)["status"] for r in runs] == ["completed"] * 3
    assert summary(runs[0])["updated"] == before[runs[0].name]  # completed jobs were skipped, not rerun
    assert summary(runs[2])["updated"] == before[runs[2].name]
    assert summary(runs[1])["resumed_from_status"] == "failed"
    assert "already completed, skipped" in again.stdout + again.stderr or "3 of 3 jobs completed" in again.stdout


def test_submitit_runs_the_cluster_path_locally_a_failing_job_recorded_the_others_completed(tmp_path):
    """hydra/launcher=submitit_local: the pickling, job folders and result collection of
    hydra/launcher=slurm, each job in its own process on this machine."""
    probe = ["+callbacks.boom._target_=run_probes.FailOnce", f"+callbacks.boom.marker={tmp_path / 'failed_once'}"]
    result = run_mimicry(tmp_path, "train", "-m", "hydra/launcher=submitit_local", *ONE_EPOCH, *probe,
                         "+callbacks.boom.fail=false,true,false", env=PROBES, check=False)
    assert result.returncode == 1  # a job failed in another process, and the command still says so
    runs = run_dirs(tmp_path)
    assert [summary(r)["status"] for r in runs] == ["completed", "failed", "completed"]
    assert "RuntimeError: a bug in this job" in summary(runs[1])["error"]
    assert "2 of 3 jobs completed" in result.stdout
    folder = sweep_dir_of(tmp_path)
    assert len([p for p in (folder / ".submitit").iterdir() if p.name.isdigit()]) == 3  # submitit's job folders
    assert (folder / "multirun.yaml").is_file()


def test_resume_sweep_needs_a_sweep_folder(tmp_path):
    result = run_mimicry(tmp_path, "train", f"resume_sweep={tmp_path}", check=False)
    assert result.returncode != 0 and "not a sweep directory (no multirun.yaml there)" in result.stderr


def test_a_three_trial_optuna_search_stores_its_study_in_the_sweep_folder(tmp_path):
    optuna = pytest.importorskip("optuna")
    run_mimicry(tmp_path, "train", "task=lm", "hparams_search=lm_optuna", "hydra.sweeper.n_trials=3",
                *[a for a in ONE_EPOCH if not a.startswith(("task=", "model.n_embd", "model.n_layer"))],
                "model.n_layer=1", "model.n_embd=choice(16,32)")
    runs = run_dirs(tmp_path)
    assert len(runs) == 3 and all(summary(r)["status"] == "completed" for r in runs)
    folder = sweep_dir_of(tmp_path)
    study = optuna.load_study(study_name="lm", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    # each trial's value is its run's best val/loss, and the names say what was searched
    by_value = sorted(summary(r)["best"]["val/loss"] for r in runs)
    assert sorted(t.value for t in study.trials) == pytest.approx(by_value)
    assert all("optim.lr=" in r.name and "model.dropout=" in r.name for r in runs)


def test_ddp_on_two_cpu_processes_inside_a_sweep(tmp_path):
    run_mimicry(tmp_path, "train", "-m", *ONE_EPOCH, "trainer.devices=2", "trainer.strategy=ddp",
                "model.n_embd=16,32")
    runs = run_dirs(tmp_path)
    assert [r.name for r in runs] == ["0_model.n_embd=16", "1_model.n_embd=32"]  # the ranks shared each job's folder
    for run in runs:
        record = summary(run)
        assert record["status"] == "completed" and record["steps"] == 5  # data.steps_per_epoch, on each rank


def test_a_slurm_job_shape_becomes_the_trainers_nodes_and_devices():
    from omegaconf import OmegaConf

    from mimicry.training import launcher_shape

    hydra_cfg = OmegaConf.create({
        "launcher": {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                     "nodes": 2, "gpus_per_node": 4},
        "overrides": {"task": ["task=lm"]}})
    cfg = OmegaConf.create({"trainer": {"num_nodes": 1, "devices": 1}})
    launcher_shape(cfg, hydra_cfg)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)
    chosen = OmegaConf.create({"trainer": {"num_nodes": 1, "devices": 1}})
    hydra_cfg.overrides.task.append("trainer.devices=1")  # the command line wins
    launcher_shape(chosen, hydra_cfg)
    assert (chosen.trainer.num_nodes, chosen.trainer.devices) == (2, 1)


def test_the_cluster_and_parallel_presets_compose(tmp_path):
    for launcher, needle in (("slurm", "SlurmLauncher"), ("parallel", "JoblibLauncher")):
        shown = run_mimicry(tmp_path, "train", f"hydra/launcher={launcher}", "task=lm", "--cfg", "hydra").stdout
        assert needle in shown


@pytest.mark.parametrize("args, task", [(["experiment=generalization_lm"], "lm"),
                                        (["experiment=generalization_lm", "task=lm"], "lm"),
                                        (["model.n_embd=16,32"], "gan"),
                                        (["task=diffusion", "seed=0,1"], "diffusion")])
def test_the_sweep_folder_is_named_by_the_task_an_overlay_chooses(monkeypatch, args, task):
    from mimicry.sweeps import FIXED_OVERRIDES_ENV, prepare_sweep

    monkeypatch.setenv(FIXED_OVERRIDES_ENV, "[]")  # prepare_sweep sets it; undone after the test
    _, folder = prepare_sweep(["-m", *args])
    assert folder.parts[:3] == ("outputs", task, "multirun")
