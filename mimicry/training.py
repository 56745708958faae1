"""``mimicry train``: seed → datamodule → task (model + loss) → callbacks + logger → Trainer.fit,
then ``summary.json`` and the HParams tab. Everything is built from the composed Hydra config."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, read_write
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from mimicry.callbacks import ConfigParams, SummaryRefresh
from mimicry.callbacks.run_summary import scalar_metrics
from mimicry.checkpoints import build_task, load_weights_into, read_checkpoint, read_derived
from mimicry.config_checks import check_settings
from mimicry.cuda_probe import drop_failing_nvml_probe
from mimicry import provenance
from mimicry.errors import DivergedError, MimicryError
from mimicry.output_paths import output_root, point_latest
from mimicry.recipe import record_recipe
from mimicry.run_reading import flatten_config
from mimicry.trackers import finish_trackers, tensorboard_writer
from mimicry.run_record import RunRecord, read_summary
from mimicry.starting_point import starting_data_options

log = logging.getLogger("mimicry")


class _QuietLightning(logging.Filter):
    """Drop Lightning's advertisement for its cloud logger from every run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_QuietLightning())


def lightning_logs_into_the_run() -> None:
    """Lightning's messages go where the run's log goes (train.log and the console). Imported before
    logging was configured (by a plugin, a notebook, a test harness) it keeps a console handler of
    its own and stops propagating, so its lines would miss train.log."""
    lightning = logging.getLogger("pytorch_lightning")
    if logging.getLogger().hasHandlers() and not lightning.propagate:
        for handler in [h for h in lightning.handlers if type(h) is logging.StreamHandler]:
            lightning.removeHandler(handler)
        lightning.propagate = True
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# rl's rollout loaders have a length and run in the training process (num_workers=0): nothing to warn of
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined.*")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one configuration in Hydra's run directory; returns what summary.json says of it.

    In a sweep, one job's failure (even a bug's exception) is recorded in its summary.json and
    log, and the sweep goes on to the next job; a single run lets a bug's traceback surface."""
    lightning_logs_into_the_run()
    drop_failing_nvml_probe()  # no NVIDIA driver: no failing dlopen on every optimizer step
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.get("resume_sweep") and (run_dir / "summary.json").is_file():
        previous = read_summary(run_dir)
        if previous.get("status") == "completed":
            log.info(f"already completed, skipped: {run_dir}")
            return previous
    choices = dict(hydra_cfg.runtime.choices)
    record = RunRecord(run_dir, choices.get("task", "?"), list(hydra_cfg.overrides.task))
    record.update("running", seed=cfg.seed, run_dir=str(run_dir),
                  monitor=cfg.get("monitor"), monitor_mode=cfg.get("monitor_mode", "min"))
    record_what_made_it(run_dir, hydra_cfg)
    try:
        results = fit(cfg, run_dir, choices, record)
    except DivergedError as error:
        log.error(str(error))
        record.update("diverged", error=str(error))
        return record.data
    except MimicryError as error:
        log.error(f"error: {error}")
        record.update("failed", error=str(error))
        return record.data
    except BaseException as error:  # a bug, or Ctrl-C: record it, then let it surface
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
        message = f"interrupted; continue with: mimicry train resume={run_dir}" if interrupted \
            else f"{type(error).__name__}: {error}"
        record.update("failed", error=message)
        if in_sweep and not interrupted:  # the traceback goes to this job's log; the other jobs go on
            log.exception(f"job failed: {run_dir}")
            return record.data
        raise
    else:
        record.update("completed", **results)
        log.info(f"done: {run_dir}")
        return record.data
    finally:  # summary.json is final now: MLflow gets it, a wandb run is closed
        finish_trackers(run_dir, record.data["status"])


def record_what_made_it(run_dir: Path, hydra_cfg: DictConfig) -> None:
    """provenance.json (code, versions, machine, command) in the run folder, and ``latest`` beside
    the runs pointing at this one. Once per run (rank 0), each sweep job for itself."""
    if rank_zero_only.rank != 0:
        return
    record, patch = provenance.collect()
    provenance.write(run_dir, record, patch)
    pattern = str(OmegaConf.to_container(hydra_cfg.run, resolve=False).get("dir", ""))
    root = output_root(pattern, run_dir)
    point_latest(root if run_dir.resolve().is_relative_to(root.resolve()) else run_dir.parent, run_dir)


def check_config(cfg: DictConfig, choices: dict[str, str]) -> None:
    """Before any work: required settings are given, and the task accepts the chosen model, loss
    and data (each task lists them under ``accepts`` in conf/task/)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise MimicryError(f"required setting(s) not given: {', '.join(missing)}; add them on the command line, "
                           f"e.g. {missing[0]}=...")
    check_settings(cfg)
    context = f"task={choices.get('task')}" + (f" env={choices['env']}" if choices.get("env") else "")
    for group, allowed in (cfg.get("accepts") or {}).items():
        chosen = choices.get(group)
        if chosen not in allowed:
            raise MimicryError(f"{group}={chosen} does not go with {context}; "
                               f"choose one of: {', '.join(allowed)} (see `mimicry list`)")


def launcher_shape(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """Under Hydra's submitit (SLURM) launcher, the job's `nodes` and `gpus_per_node` become the
    trainer's `num_nodes` and `devices`, unless those were set on the command line."""
    launcher = hydra_cfg.get("launcher") or {}
    if "submitit" not in str(launcher.get("_target_", "")):
        return
    given = {o.lstrip("+").split("=", 1)[0] for o in hydra_cfg.overrides.task}
    with read_write(cfg.trainer):
        if "trainer.num_nodes" not in given and launcher.get("nodes"):
            cfg.trainer.num_nodes = int(launcher.nodes)
        if "trainer.devices" not in given and launcher.get("gpus_per_node"):
            cfg.trainer.devices = int(launcher.gpus_per_node)


def check_manual_optimization(task: pl.LightningModule, cfg: DictConfig) -> None:
    """A task that steps its own optimizers (the GAN's two; ppo and dqn, a rollout per batch) cannot have
    Lightning accumulate or clip for it."""
    if task.automatic_optimization:
        return
    if getattr(task, "fitted_by_counting", False):  # a counted table has no gradients to clip or accumulate
        with read_write(cfg.trainer):
            cfg.trainer.gradient_clip_val, cfg.trainer.accumulate_grad_batches = None, 1
        return
    name = type(task).__name__
    if (cfg.trainer.get("accumulate_grad_batches") or 1) != 1:
        raise MimicryError(f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches}: {name} steps its "
                           f"optimizers itself, so Lightning cannot accumulate for it; set it to 1 and raise "
                           f"data.batch_size instead")
    if cfg.trainer.get("gradient_clip_val"):
        instead = " and clip with algo.max_grad_norm" if "max_grad_norm" in (cfg.get("algo") or {}) else ""
        raise MimicryError(f"trainer.gradient_clip_val={cfg.trainer.gradient_clip_val}: {name} steps its optimizers "
                           f"itself, so Lightning cannot clip for it; set trainer.gradient_clip_val=null{instead}")


def build_trainer(cfg: DictConfig, run_dir: Path, record: RunRecord | None = None) -> pl.Trainer:
    callbacks = [instantiate(node) for node in (cfg.callbacks or {}).values() if node is not None]
    if record is not None:  # summary.json follows the run at every validation
        callbacks.append(SummaryRefresh(record))
    loggers = build_loggers(cfg.get("logger"))
    if loggers:
        callbacks.append(ConfigParams(flatten_config(OmegaConf.to_container(cfg, resolve=True))))
    else:  # `logger=null`: nothing to write the learning rate to (Lightning's monitor refuses to start)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir))


def build_loggers(nodes: DictConfig | None) -> list[Logger]:
    """Every logger chosen (``logger=[tensorboard,mlflow]`` gives {tensorboard: ..., mlflow: ...}), in order;
    a tracker's own one-line error (its package missing) comes through as it is."""
    try:
        return [instantiate(node) for node in (nodes or {}).values() if node is not None]
    except InstantiationException as error:
        if isinstance(error.__cause__, MimicryError):
            raise error.__cause__ from None
        raise


def carried_arguments(checkpoint: dict, source: str) -> dict[str, Any]:
    """What a resumed run's checkpoint carries of the runs it started from (an lm run's settings and
    tokenizer, a first-stage autoencoder's recipe; its weights are in the state dict): the task is built
    from these, so the runs behind ``init_from`` / ``*.from_run`` need not exist any more. The data spec
    is the data's own, read again."""
    return {key: value for key, value in read_derived(checkpoint, source).items() if key != "data_spec"}


def fit(cfg: DictConfig, run_dir: Path, choices: dict[str, str], record: RunRecord | None = None) -> dict[str, Any]:
    check_config(cfg, choices)
    launcher_shape(cfg, HydraConfig.get())
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    fine_tune = cfg.get("init_from") and not cfg.get("resume")
    last = run_dir / "checkpoints" / "last.ckpt"
    continues = cfg.get("resume") or cfg.get("resume_sweep")
    # the model's tokenizer (and an hf: model's settings), so that its ids mean what its weights learned
    data_options = starting_data_options(cfg, last if continues and last.is_file() else None)
    # A task that makes its own data (an RL task's rollouts) runs with `data: null` and its own
    # train_dataloader; every other task gets its datamodule here.
    datamodule = instantiate(cfg.data, **data_options) if cfg.get("data") is not None else None
    if datamodule is not None:
        datamodule.setup("fit")
    ckpt_path = None
    if cfg.get("resume"):
        if not last.is_file():
            raise MimicryError(f"nothing to resume: {last} does not exist (the run stopped before its "
                               f"first checkpoint); start it again without resume=")
        ckpt_path = last
    elif cfg.get("resume_sweep") and last.is_file():  # a sweep job that stopped part-way
        ckpt_path = last
    carried = {}
    if ckpt_path is not None:  # a run folder may come from anyone: the checkpoint is checked as data first
        carried = carried_arguments(read_checkpoint(ckpt_path), str(ckpt_path))
        log.info(f"resuming from {ckpt_path}")
    task = build_task(cfg, datamodule.spec() if datamodule is not None else {}, recipe=record_recipe(cfg, choices),
                      **carried)
    if fine_tune:
        log.info(f"initialised weights from {load_weights_into(task, cfg.init_from)}")

    check_manual_optimization(task, cfg)
    trainer = build_trainer(cfg, run_dir, record)
    writer = tensorboard_writer(trainer.loggers)
    if writer is not None and trainer.is_global_zero:  # TensorBoard's Text tab: what made this run
        writer.add_text("run/provenance", provenance.as_markdown(provenance.read(run_dir)), trainer.global_step)
    with relaunch_into(run_dir):
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except (ValueError, TypeError, MisconfigurationException) as error:
            if trainer.global_step == 0 and raised_by_lightning(error):  # a Trainer setting it cannot use
                raise MimicryError(f"Lightning cannot use these settings: {' '.join(str(error).split())}") from None
            raise

    metrics = scalar_metrics(trainer)
    results: dict[str, Any] = {"metrics": metrics, "steps": trainer.global_step, "epochs": trainer.current_epoch}
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        results["best"] = {checkpoint.monitor: float(checkpoint.best_model_score),
                           "checkpoint": checkpoint.best_model_path}
    for logger in trainer.loggers:  # the HParams tab: the whole config beside the final metrics
        if isinstance(logger, TensorBoardLogger):  # the other trackers got the config at fit start (ConfigParams)
            logger.log_hyperparams(flatten_config(OmegaConf.to_container(cfg, resolve=True)),
                                   metrics={f"final/{k}": v for k, v in metrics.items()})
            logger.experiment.close()  # fit closed the writer; this reopened one, so flush it before exit
    return results


def raised_by_lightning(error: BaseException) -> bool:
    """True when the error comes from Lightning's own checks (its message names the setting), not from our code."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = frame.tb_frame.f_code.co_filename if frame is not None else ""
    return "pytorch_lightning" in where or "lightning_fabric" in where


@contextmanager
def relaunch_into(run_dir: Path) -> Iterator[None]:
    """Lightning's DDP launcher starts the other ranks as `sys.argv` + `hydra.run.dir=<the run dir
    Hydra knows>`. Inside a sweep that would be `-m` with every sweep value, and Hydra's run-dir
    pattern rather than this job's folder: so, for the fit, the command line becomes this job's
    own overrides and the run dir this job's folder. Afterwards the process is left as it was
    (no process group, none of the rank variables Lightning set), so the next job launches anew."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    saved_argv, saved_dir, saved_env = list(sys.argv), hydra_cfg.run.dir, dict(os.environ)
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = str(run_dir)
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = saved_dir
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved_env)
