"""Trackers beside TensorBoard: MLflow and Weights & Biases loggers built for a run folder, and what
each logger of a run gets besides its metrics (TensorBoard the images, MLflow the sample files).

conf/logger/{mlflow,wandb}.yaml build their loggers here; Lightning's own loggers do the logging.
Neither package is a core dependency: a run that picks one without it fails with one line.
"""
from __future__ import annotations

import importlib
import json
import logging
import netrc
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlparse

from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torch.utils.tensorboard import SummaryWriter

from mimicry.errors import MimicryError

log = logging.getLogger("mimicry")

WANDB_HOST = "api.wandb.ai"
TRACKER_IDS = "trackers.json"  # in the run folder: the MLflow and wandb run ids, so that resume= continues them
TRACKER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REACH_TIMEOUT_S = 1.5

# The loggers this process built, by run folder, until that job's summary.json is final (finish_trackers
# then attaches it to the MLflow run and closes the wandb run, so the next job of a sweep starts its own).
_open_loggers: dict[str, list[Logger]] = {}


def require(package: str, option: str, name: str) -> None:
    """One line naming the extra to install when ``logger=<option>`` is chosen without its package."""
    try:
        importlib.import_module(package)
    except ImportError:
        raise MimicryError(f"logger={option} needs {name}: pip install 'mimicry[{option}]'") from None


def tensorboard_writer(loggers: Iterable[Logger]) -> SummaryWriter | None:
    """The run's TensorBoard writer, wherever TensorBoard is in the list of loggers; None without one
    (or on a DDP rank other than 0, whose logger writes nothing)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment
            return writer if isinstance(writer, SummaryWriter) else None
    return None


def log_sample_files(loggers: Iterable[Logger], paths: Sequence[Path]) -> None:
    """Sample files just written to the run's samples/ folder, as MLflow artifacts under "samples"."""
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="samples")


def finish_trackers(run_dir: Path, status: str) -> None:
    """Once the run's summary.json is final: the MLflow run gets it as an artifact, and a wandb run is
    closed, so that the next job of a sweep run in this process starts its own. A logger that never
    started (the run failed before its first log) is left alone: Lightning's loggers say so only in
    private attributes (``_initialized``, ``_experiment``), as they start on first use."""
    summary = Path(run_dir) / "summary.json"
    loggers = _open_loggers.pop(str(Path(run_dir).resolve()), [])
    save_tracker_ids(Path(run_dir), loggers)
    for logger in loggers:
        if isinstance(logger, MLFlowLogger) and logger._initialized and summary.is_file():
            logger.experiment.log_artifact(logger.run_id, str(summary))
        # (wandb is not given summary.json: a copy inside the run folder would look like a run of its own)
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish(exit_code=0 if status == "completed" else 1)


def saved_tracker_ids(run_dir: Path) -> dict[str, str]:
    """The tracker run ids a previous session of this run folder left (``trackers.json``), checked to be
    plain ids: the file is data from a shared folder, and anything else in it is ignored with a warning."""
    path = Path(run_dir) / TRACKER_IDS
    if not path.is_file():
        return {}
    try:
        ids = json.loads(path.read_text())
    except (OSError, ValueError):
        ids = None
    if not isinstance(ids, dict) or not all(isinstance(v, str) and TRACKER_ID.fullmatch(v) for v in ids.values()):
        log.warning(f"{path} is not a file of tracker run ids; this session starts new MLflow/wandb runs")
        return {}
    return ids


def save_tracker_ids(run_dir: Path, loggers: Iterable[Logger]) -> None:
    ids = dict(saved_tracker_ids(run_dir))
    for logger in loggers:
        if isinstance(logger, MLFlowLogger) and logger._initialized:
            ids["mlflow"] = logger.run_id
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            ids["wandb"] = logger._experiment.id
    if ids and Path(run_dir).is_dir():
        (Path(run_dir) / TRACKER_IDS).write_text(json.dumps(ids, indent=1) + "\n")


def _remember(run_dir: Path, logger: Logger) -> Logger:
    _open_loggers.setdefault(str(Path(run_dir).resolve()), []).append(logger)
    return logger


# ---- MLflow ------------------------------------------------------------------------------------
def default_outputs() -> Path:
    """Where run folders go by default (``outputs`` under the working directory), made absolute."""
    return Path("outputs").resolve()


def mlflow_tracking_uri(explicit: str | None = None) -> str:
    """``logger.mlflow.tracking_uri`` if given, else $MLFLOW_TRACKING_URI, else a SQLite file beside the run
    folders, which `mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` opens."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    outputs = default_outputs()
    outputs.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{outputs / 'mlflow.db'}"


def mlflow_logger(run_dir: str, experiment: str, overrides: Sequence[str] = (),
                  tracking_uri: str | None = None) -> MLFlowLogger:
    """Lightning's MLFlowLogger for one run folder: experiment = the task, run name = the folder's name,
    tags = the folder and the command-line overrides."""
    require("mlflow", "mlflow", "MLflow")
    uri = mlflow_tracking_uri(tracking_uri)
    # With the default store, artifacts go to ./mlartifacts/<task> (where `mlflow server` keeps them too): not
    # under outputs/, where a copy of summary.json would look like a run of its own to `mimicry compare outputs`.
    artifacts = None if tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") else \
        (Path("mlartifacts").resolve() / experiment).as_uri()
    logger = MLFlowLogger(experiment_name=experiment, run_name=Path(run_dir).name, tracking_uri=uri,
                          artifact_location=artifacts, run_id=mlflow_run_to_continue(run_dir, uri),
                          tags={"mimicry.run_dir": str(Path(run_dir).resolve()),
                                "mimicry.overrides": " ".join(overrides)})
    return _remember(Path(run_dir), logger)


def mlflow_run_to_continue(run_dir: str, uri: str) -> str | None:
    """The MLflow run of this folder's earlier session (resume=), where this tracking store holds it."""
    run_id = saved_tracker_ids(Path(run_dir)).get("mlflow")
    if run_id is None:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).get_run(run_id)
    except MlflowException:
        log.info(f"MLflow run {run_id} of this folder is not in {uri}: this session starts a new one")
        return None
    return run_id


# ---- Weights & Biases --------------------------------------------------------------------------
def wandb_host() -> str:
    """The wandb server's host name: api.wandb.ai, or that of $WANDB_BASE_URL (a private server)."""
    return urlparse(os.environ.get("WANDB_BASE_URL", f"https://{WANDB_HOST}")).hostname or WANDB_HOST


def wandb_api_key_exists() -> bool:
    """An API key in $WANDB_API_KEY or in the netrc file that `wandb login` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(wandb_host()) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def reachable(host: str, port: int = 443, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` seconds (the name lookup included:
    it runs in a thread, because a lookup with no network can hang far longer than a connect)."""
    answered, opened = threading.Event(), []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass
        answered.set()

    threading.Thread(target=connect, daemon=True).start()
    answered.wait(timeout)  # a refusal answers at once; silence waits the whole timeout
    return bool(opened)


def wandb_mode(offline: bool | None) -> str:
    """The wandb mode, online or offline: ``logger.wandb.offline`` when given, then $WANDB_MODE, else online
    only with an API key and the wandb server reachable. Never a login prompt: online without a key is an error."""
    if offline is not None:
        mode = "offline" if offline else "online"
    elif os.environ.get("WANDB_MODE"):
        mode = "offline" if os.environ["WANDB_MODE"] in ("offline", "dryrun") else os.environ["WANDB_MODE"]
    else:
        return "online" if wandb_api_key_exists() and reachable(wandb_host()) else "offline"
    if mode == "online" and not wandb_api_key_exists():
        raise MimicryError("logger=wandb online needs an API key: run `wandb login` or set WANDB_API_KEY, "
                           "or log offline with logger.wandb.offline=true")
    return mode


def wandb_logger(run_dir: str, overrides: Sequence[str] = (), project: str = "mimicry", group: str | None = None,
                 offline: bool | None = None, **init: Any) -> WandbLogger:
    """Lightning's WandbLogger writing into the run folder (its wandb/ subfolder); run name = the folder's name,
    group = the task. ``init``: more wandb.init arguments (entity=, tags=, ...)."""
    require("wandb", "wandb", "Weights & Biases")
    mode = wandb_mode(offline)
    run_dir_path = Path(run_dir).resolve()
    if mode == "offline":
        log.info(f"wandb: logging offline into {run_dir_path / 'wandb'}; upload it later with: "
                 f"wandb sync {run_dir_path / 'wandb'}/offline-run-*")
    # mode= goes to wandb.init itself: Lightning's offline=True would set $WANDB_MODE for the whole process
    earlier = saved_tracker_ids(run_dir_path).get("wandb")  # resume=: the same wandb run goes on
    if earlier is not None:
        init = {"id": earlier, "resume": "allow", **init}
    logger = WandbLogger(name=run_dir_path.name, save_dir=str(run_dir_path), project=project, group=group,
                         notes=" ".join(overrides), mode=mode, **init)
    return _remember(run_dir_path, logger)
