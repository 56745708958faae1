"""Trackers beside TensorBoard (logger=csv|mlflow|wandb, several at once), read back through each
tracker's own format: MLflow's client, the CSV file, wandb's offline transaction log."""
from __future__ import annotations

import csv
import json
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import read_events, run_dirs, run_mimicry, summary
from omegaconf import OmegaConf

from mimicry import trackers
from mimicry.errors import MimicryError

TINY_GAN = [
    "task=gan", "model.generator.latent_dim=8", "model.generator.width=8", "model.discriminator.width=8",
    "data.limit=64", "data.batch_size=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
    "task.sample_every_n_steps=4", "task.num_samples=10", "task.metrics_every_n_epochs=0",
]
TRACKER_ENV = ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL")


def offline_env(root: Path) -> dict[str, str]:
    """No API key anywhere (so wandb stays offline and never tries the network), no usage reports, and
    wandb's own folders in tmp. (In-process, MLflow sees PYTEST_CURRENT_TEST and sends no telemetry.)"""
    return {"NETRC": str(root / "no-netrc"), "MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_ERROR_REPORTING": "false",
            **{name: str(root / name.lower()) for name in
               ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")}}


@pytest.fixture(scope="module")
def tracked_gan(tmp_path_factory) -> SimpleNamespace:
    """One tiny GAN run logged by all four loggers at once, TensorBoard not the first of them."""
    cwd = tmp_path_factory.mktemp("tracked_gan")
    with pytest.MonkeyPatch.context() as env:
        for name in TRACKER_ENV:
            env.delenv(name, raising=False)
        result = run_mimicry(cwd, "train", *TINY_GAN, "logger=[mlflow,tensorboard,csv,wandb]", env=offline_env(cwd))
    (run_dir,) = run_dirs(cwd)
    return SimpleNamespace(cwd=cwd, run_dir=run_dir, summary=summary(run_dir), log=result.stdout + result.stderr)


def assert_same_metrics(found: dict[str, float], expected: dict[str, float], where: str) -> None:
    assert set(expected) <= set(found), f"{where} lacks {sorted(set(expected) - set(found))}"
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, rel=1e-6), f"{where}: {name}"


# ---- MLflow ------------------------------------------------------------------------------------
def test_mlflow_run_reads_back_as_the_run_went(tracked_gan):
    from mlflow.tracking import MlflowClient

    run_dir, record = tracked_gan.run_dir, tracked_gan.summary
    client = MlflowClient(f"sqlite:///{tracked_gan.cwd / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gan").experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.tags["mimicry.run_dir"] == str(run_dir.resolve())
    assert "model.generator.width=8" in run.data.tags["mimicry.overrides"]

    params = run.data.params  # the composed config, flattened and resolved
    assert params["model.generator.width"] == "8" and params["data.batch_size"] == "16" and params["seed"] == "0"
    assert params["callbacks.checkpoint.dirpath"] == str(run_dir / "checkpoints")
    assert_same_metrics(run.data.metrics, record["metrics"], "MLflow's latest metrics")
    assert len(client.get_metric_history(run.info.run_id, "gan/d_real")) == record["steps"]  # every step

    samples = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "samples")}
    assert samples == {p.name for p in (run_dir / "samples").glob("*.png")} == \
        {"step_0000000.png", "step_0000004.png", "step_0000008.png"}
    downloaded = Path(client.download_artifacts(run.info.run_id, "summary.json", str(tracked_gan.cwd)))
    final = json.loads(downloaded.read_text())
    assert final == record and final["status"] == "completed"  # the file as the run ended, not a running one


def test_trackers_leave_no_second_run_in_the_outputs(tracked_gan):
    from mimicry.run_reading import find_runs

    assert find_runs([str(tracked_gan.cwd / "outputs")]) == [tracked_gan.run_dir]
    assert (tracked_gan.cwd / "mlartifacts" / "gan").is_dir()  # MLflow's files beside outputs/, not in it


def test_mlflow_honours_the_tracking_uri_and_cuts_long_params(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from mimicry.callbacks import ConfigParams
    from mimicry.training import build_loggers

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (logger,) = build_loggers(OmegaConf.create({"mlflow": {
        "_target_": "mimicry.trackers.mlflow_logger", "run_dir": str(tmp_path / "run"), "experiment": "lm"}}))
    ConfigParams({"model.n_embd": 32, "data.path": "x" * 1000}).on_fit_start(SimpleNamespace(loggers=[logger]), None)
    logger.log_metrics({"val/loss": 1.5}, step=3)
    logger.finalize("success")
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("lm").experiment_id])
    assert run.info.run_name == "run" and run.data.metrics == {"val/loss": 1.5}
    assert run.data.params == {"model.n_embd": "32", "data.path": "x" * 250}  # cut, not refused
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("option,package", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_tracker_without_its_package_says_what_to_install(tmp_path, monkeypatch, option, package):
    from mimicry.training import build_loggers

    monkeypatch.setitem(__import__("sys").modules, package, None)  # `import mlflow` now raises ImportError
    node = {"_target_": f"mimicry.trackers.{option}_logger", "run_dir": str(tmp_path)}
    with pytest.raises(MimicryError) as error:
        build_loggers(OmegaConf.create({option: {**node, **({"experiment": "gan"} if option == "mlflow" else {})}}))
    assert str(error.value) == f"logger={option} needs {'MLflow' if option == 'mlflow' else 'Weights & Biases'}: " \
                               f"pip install 'mimicry[{option}]'"


# ---- TensorBoard and CSV beside it -------------------------------------------------------------
def test_tensorboard_still_gets_images_when_it_is_not_the_first_logger(tracked_gan):
    events = read_events(tracked_gan.run_dir)
    assert {step for step, _, _ in events["images"]["samples/fakes"]} == {0, 4, 8}
    assert len(events["scalars"]["gan/d_real"]) == tracked_gan.summary["steps"]
    assert "final/gan/d_real" in events["scalars"]  # the HParams tab's final metrics


def test_csv_holds_every_metric_and_the_config(tracked_gan):
    rows = list(csv.DictReader((tracked_gan.run_dir / "csv" / "metrics.csv").open()))
    last = {name: float(value) for row in rows for name, value in row.items() if value != ""}
    assert_same_metrics(last, tracked_gan.summary["metrics"], "metrics.csv's last values")
    hparams = yaml.safe_load((tracked_gan.run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["model.generator.width"] == 8 and hparams["task.num_samples"] == 10


# ---- wandb -------------------------------------------------------------------------------------
def wandb_records(path: Path) -> list:
    """The records of a wandb transaction log (what `wandb sync` uploads): wandb's 7-byte file header, then
    LevelDB-log blocks of 32 KiB whose chunks (7-byte header: crc, length, type full|first|middle|last) hold
    serialized wandb Record protos."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a wandb log"
    found, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            found.append(Record.FromString(pending))
    return found


def test_wandb_logs_offline_into_the_run_folder(tracked_gan):
    (offline_run,) = (tracked_gan.run_dir / "wandb").glob("offline-run-*")
    assert "wandb: logging offline" in tracked_gan.log and "wandb sync" in tracked_gan.log
    records = wandb_records(next(offline_run.glob("run-*.wandb")))
    latest, config = {}, {}
    for record in records:  # an item names its key, or the path to it when the name has a "/" (gan/d_real)
        if record.WhichOneof("record_type") == "summary":
            latest.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                           for item in record.summary.update})
        if record.WhichOneof("record_type") == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    assert_same_metrics(latest, tracked_gan.summary["metrics"], "wandb's run summary")
    assert config["model.generator.width"] == 8
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == tracked_gan.run_dir.name and run.project == "mimicry" and run.run_group == "gan"
    assert any(r.WhichOneof("record_type") == "exit" and r.exit.exit_code == 0 for r in records)  # closed


def test_wandb_mode_explicit_then_environment_then_key_and_network(tmp_path, monkeypatch):
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    tries = []
    monkeypatch.setattr(trackers, "reachable", lambda host: tries.append(host) or True)
    assert trackers.wandb_mode(None) == "offline" and tries == []  # no key: the network is never tried
    with pytest.raises(MimicryError, match="needs an API key.*offline=true"):
        trackers.wandb_mode(False)  # asked for online without a key: an error, not a login prompt
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    assert trackers.wandb_mode(None) == "online" and tries == ["api.wandb.ai"]
    assert trackers.wandb_mode(True) == "offline"  # the setting wins over a key and a network
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert trackers.wandb_mode(None) == "offline" and trackers.wandb_mode(False) == "online"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(trackers, "reachable", lambda host: False)
    assert trackers.wandb_mode(None) == "offline"  # a key, but no network


def test_reachable_is_a_bounded_tcp_connect():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert trackers.reachable("127.0.0.1", port, timeout=1.0)
    assert not trackers.reachable("127.0.0.1", port, timeout=1.0)  # closed now: refused


# ---- the config group ----------------------------------------------------------------------------
def test_logger_options_compose_and_none_can_be_chosen():
    from mimicry.recipe import compose_installed
    from mimicry.training import build_loggers

    both, _ = compose_installed(["logger=[mlflow,tensorboard]"], "test")
    assert list(both.logger) == ["mlflow", "tensorboard"]  # each option nests under its name: they merge
    default, _ = compose_installed([], "test")
    assert list(default.logger) == ["tensorboard"]
    for nothing in ("~logger", "logger=[]"):  # (Hydra refuses logger=null as a command-line override)
        cfg, _ = compose_installed([nothing], "test")
        assert "logger" not in cfg and build_loggers(cfg.get("logger")) == []


def test_resume_keeps_a_list_of_loggers_and_refuses_an_unknown_one(tmp_path):
    from mimicry.saved_overrides import vet_overrides

    saved = tmp_path / ".hydra" / "overrides.yaml"
    kept = vet_overrides(["task=lm", "logger=[tensorboard,mlflow]", "model.n_embd=32"], saved, "mimicry train resume=R")
    assert kept == ["task=lm", "logger=[tensorboard,mlflow]", "model.n_embd=32"]
    with pytest.raises(MimicryError, match="logger=evil is not an installed option"):
        vet_overrides(["logger=[tensorboard,evil]"], saved, "mimicry train resume=R")


@pytest.mark.parametrize("off", ["logger=null", "~logger"])
def test_a_run_with_no_logger_trains_and_keeps_its_summary_and_checkpoints(off, tmp_path):
    run_mimicry(tmp_path, "train", *TINY_GAN, "trainer.max_epochs=1", off)  # no LearningRateMonitor refusal
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "completed" and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "tb").exists()


def test_resume_continues_the_same_mlflow_and_wandb_runs(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)
    env = offline_env(tmp_path)
    run_mimicry(tmp_path, "train", *TINY_GAN, "trainer.max_epochs=1", "logger=[mlflow,wandb]", env=env)
    (run_dir,) = run_dirs(tmp_path)
    first = json.loads((run_dir / "trackers.json").read_text())
    run_mimicry(tmp_path, "train", f"resume={run_dir}", "trainer.max_epochs=2", env=env)
    assert json.loads((run_dir / "trackers.json").read_text()) == first

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gan").experiment_id])  # one run, not two
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "gan/d_real"))
    assert run.info.run_id == first["mlflow"] and steps == list(range(summary(run_dir)["steps"]))  # both sessions
    assert run.data.params["trainer.max_epochs"] == "1"  # MLflow keeps a run's first params...
    assert "trainer.max_epochs=2" in run.data.tags["mimicry.resumed_with"]  # ...and the change is said beside them
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(d.name.endswith(first["wandb"]) for d in offline)  # one wandb id, synced as one


def test_a_tampered_tracker_id_file_starts_new_runs(tmp_path, caplog):
    from mimicry.trackers import saved_tracker_ids

    (tmp_path / "trackers.json").write_text(json.dumps({"mlflow": "../../etc; rm -rf /", "wandb": "abc"}))
    with caplog.at_level("WARNING", logger="mimicry"):
        assert saved_tracker_ids(tmp_path) == {}
    assert "not a file of tracker run ids" in caplog.text
    (tmp_path / "trackers.json").write_text("{not json")
    assert saved_tracker_ids(tmp_path) == {}
