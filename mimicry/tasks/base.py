"""What every task shares: building parts from config, the optimizer and its schedule, logging
at a fixed cadence (loss, learning rate, gradient norm, throughput), checkpoint metadata, and the
hooks for samples. A task adds only its own imitation: the reference, the prediction, the loss.
"""
# BASE READY: the shared task base; see mimicry/tasks/lm.py for the pattern a task follows.
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.tensorboard import SummaryWriter

from mimicry.errors import MimicryError
from mimicry.lightning_internals import is_logging_step
from mimicry.trackers import tensorboard_writer

log = logging.getLogger("mimicry")


class ImitationTask(pl.LightningModule):
    """Base LightningModule. Constructor arguments are plain dicts/values (the composed Hydra
    config, converted), so a checkpoint alone rebuilds the task: ``mimicry sample`` needs no data.

    Subclasses build their networks in ``__init__`` from ``self.hparams.model`` and ``data_spec``,
    implement ``training_step``/``validation_step`` with ``self.imitate``, and the sample hooks.
    A task whose loss is one comparison also implements ``imitation(batch)``, which gives the
    probes (mimicry/probes/) its loss as a pure function of a batch: ``self.loss(batch)``.

    A task whose model may be a lookup table fitted by counting mixes in
    mimicry/tasks/counted_fit.py's ``CountedFit``.
    """

    #: what throughput counts: "samples" (images, episodes) or "tokens"
    throughput_unit = "samples"

    #: TensorBoard's Custom Scalars tab: related curves on one chart ({category: {chart: [regexes]}});
    #: tasks add their own with ``charts = {**ImitationTask.charts, ...}``
    charts: dict[str, dict[str, list[str]]] = {
        "imitation": {
            "loss (train, val)": [r"^train/loss$", r"^val/loss$"],
            "learning rate": [r"^lr-"],
            "gradient norm": [r"grad_norm$"],
            "throughput": [r"^train/.*_per_sec$"],
        },
    }

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 200):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the logger gets the whole flattened config instead
        self.data_spec = data_spec
        self.loss_fn = instantiate(loss) if loss.get("_target_") else None

    # ---- the one trick -------------------------------------------------------------------------
    def imitate(self, prediction: torch.Tensor, reference: torch.Tensor, weight: torch.Tensor | None = None,
                stage: str = "train", name: str = "loss") -> torch.Tensor:
        """Loss between prediction and reference (optionally weighted per example), logged as ``stage/name``."""
        loss = self.compare(prediction, reference, weight)
        self.log_metric(f"{stage}/{name}", loss, prog_bar=True)
        return loss

    def compare(self, prediction: torch.Tensor, reference: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """The loss between prediction and reference (optionally weighted per example); logs nothing."""
        loss = self.loss_fn(prediction, reference)
        return (loss * weight).mean() if weight is not None else loss

    def imitation(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """(prediction, reference[, weight]) of a batch: what ``training_step`` imitates."""
        raise MimicryError(f"{type(self).__name__} does not give its loss as one comparison of a batch "
                           f"(no imitation()); the probes read lm and classifier runs")

    @property
    def imitates_in_one_comparison(self) -> bool:
        """True when the task gives its loss as one comparison of a batch (``imitation``): what the probes need."""
        return type(self).imitation is not ImitationTask.imitation

    def loss(self, batch: Any) -> torch.Tensor:
        """The training loss of a batch as a pure function (no logging, no state): what the probes measure."""
        return self.compare(*self.imitation(batch))

    # ---- logging -------------------------------------------------------------------------------
    def is_logging_step(self) -> bool:
        """True on the batches whose train/* values Lightning writes: every
        ``trainer.log_every_n_steps`` batches (and the last). A value is computed only where it
        is written, so the point drawn at step s is the batch s it was computed on; per-step
        logging would cost 10-15% of a small model's step time on CPU for curves nobody can tell apart."""
        return True if self._trainer is None else is_logging_step(self.trainer)

    def log_metric(self, name: str, value: torch.Tensor | float, **kwargs: Any) -> None:
        if name.startswith("train/"):
            if self.is_logging_step():
                self.log(name, value, on_step=True, on_epoch=False, **kwargs)
        else:  # one name whatever the validation loader (lm may add fixed training windows as a second one)
            self.log(name, value, on_step=False, on_epoch=True, sync_dist=True, add_dataloader_idx=False, **kwargs)

    def count_items(self, batch: Any) -> int:
        """Items this batch contributes to throughput (override for tokens)."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return len(first)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.is_logging_step():
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self.log("train/grad_norm", gradient_norm(params), on_step=True)

    def on_fit_start(self) -> None:
        writer = self.tensorboard()
        if writer is not None and self.trainer.is_global_zero:
            writer.add_custom_scalars({category: {title: ["Multiline", tags] for title, tags in charts.items()}
                                       for category, charts in self.charts.items()})

    def tensorboard(self) -> SummaryWriter | None:
        """The run's TensorBoard writer, for images and text, wherever TensorBoard is among the loggers;
        None without a TensorBoard logger."""
        return tensorboard_writer(self.trainer.loggers) if self._trainer is not None else None

    def epoch_end_due(self, every_n_epochs: int) -> bool:
        """Costly epoch-end work (sample metrics) runs every N epochs and after the last; never in
        the sanity check."""
        if not every_n_epochs or self._trainer is None or self.trainer.sanity_checking:
            return False
        epoch = self.current_epoch + 1
        return epoch % every_n_epochs == 0 or epoch == self.trainer.max_epochs

    # ---- optimization --------------------------------------------------------------------------
    def configure_optimizers(self):
        return build_optimizer(self.parameters(), self.hparams.optim, self.trainer.estimated_stepping_batches)

    # ---- checkpoints ---------------------------------------------------------------------------
    #: the run's recipe (mimicry/recipe.py), set by whoever built the task; it goes into every checkpoint
    recipe: dict | None = None

    def derived_arguments(self) -> dict[str, Any]:
        """Constructor arguments this task derived from files when first built, as plain values, so
        that its checkpoint alone rebuilds it (mimicry/checkpoints.py): here the data spec."""
        return {"data_spec": self.data_spec}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint is data: the recipe and derived values rebuild the task from the installed configs
        # (the class-naming hyper-parameters Lightning keeps are not needed, so not saved); the RNG state
        # lets a resumed run draw the same dropout masks.
        checkpoint.pop("hyper_parameters", None)
        checkpoint.pop("datamodule_hyper_parameters", None)
        checkpoint["mimicry"] = {"task": f"{type(self).__module__}.{type(self).__qualname__}",
                                 "recipe": self.recipe, "derived": self.derived_arguments(),
                                 "rng_state": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "mimicry" in checkpoint and self._trainer is not None:
            torch.set_rng_state(checkpoint["mimicry"]["rng_state"])

    # ---- samples (each generative task implements these) ---------------------------------------
    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        """Write samples for this training step to TensorBoard and to ``sample_dir``."""

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """``mimicry sample``: write ``n`` samples under ``out_dir``; return the files written."""
        raise NotImplementedError(f"{type(self).__name__} has no samples to draw")


def gradient_norm(parameters) -> torch.Tensor:
    """Global L2 norm of the parameters' gradients (zero when there are none yet)."""
    norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


def build_optimizer(parameters, optim: dict, total_steps: int | float) -> dict:
    """AdamW with weight decay on matrices only (nanoGPT), linear warmup, cosine decay to ``min_lr``."""
    params = [p for p in parameters if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": optim.get("weight_decay", 0.0)},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim.get("betas", (0.9, 0.999))))
    decay_steps = optim.get("decay_steps")
    if not decay_steps:  # decay over the whole run unless told otherwise
        if not math.isfinite(total_steps):  # an endless stream (e.g. rollouts) and no max_steps
            log.info("the number of training steps is unknown (set trainer.max_steps or optim.decay_steps "
                     "to decay the learning rate); the learning rate stays flat after the warmup")
        decay_steps = int(total_steps) if math.isfinite(total_steps) else math.inf
    min_ratio = optim.get("min_lr", optim["lr"]) / optim["lr"] if optim["lr"] > 0 else 1.0
    schedule = warmup_cosine(optim.get("warmup_steps", 0), decay_steps, min_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine(warmup_steps: int, decay_steps: int | float, min_ratio: float):
    """Multiplier of the base lr at a step: linear warmup, cosine down to ``min_ratio``, then flat."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if step >= decay_steps:
            return min_ratio
        progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
        return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))

    return multiplier
