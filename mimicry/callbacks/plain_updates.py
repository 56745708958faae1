"""Take a task's optimizer step in plain PyTorch where Lightning's automatic optimization adds nothing.

Lightning's automatic optimization wraps each update in a closure and about twenty hook calls
(on_before_zero_grad, optimizer_zero_grad, on_before_backward, backward, on_after_backward,
on_before_optimizer_step, configure_gradient_clipping, optimizer_step, lr_scheduler_step, each for
the module and every callback): some 3,000 Python calls per batch, 2-3 ms of CPU. A baby GPT's whole
step on a GPU takes about that long, so the framework cost a tenth of the speed (scripts/bench_lm.py).

Where nothing would use those hooks, this callback turns the task to manual optimization when
training starts and wraps its ``training_step`` in the update Lightning would have made, in the same
order: zero the gradients, the task's step, backward, the task's ``on_before_optimizer_step`` (the
gradient norm, before clipping), clip by ``trainer.gradient_clip_val``, optimizer step, the step
counter, the learning-rate scheduler. Anywhere that is not the same update (DDP, fp16 loss scaling,
gradient accumulation, several optimizers, a scheduler on a monitor, a hook overridden by the task or a
callback) Lightning keeps the step, and the log says why. ``~callbacks.plain_updates`` turns it off.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import pytorch_lightning as pl
import torch

from mimicry.lightning_internals import advance_global_step, single_device_unscaled, sync_step_counters

log = logging.getLogger("mimicry")

# The hooks of Lightning's automatic update that the plain one does not call (on_before_optimizer_step
# of the module is called; a callback's is not).
MODULE_HOOKS = ("backward", "optimizer_step", "optimizer_zero_grad", "configure_gradient_clipping",
                "lr_scheduler_step", "on_before_zero_grad", "on_before_backward", "on_after_backward")
CALLBACK_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")


def overrides(obj: object, base: type, name: str) -> bool:
    return getattr(type(obj), name, None) is not getattr(base, name, None)


def why_lightning_steps(trainer: pl.Trainer, task: pl.LightningModule) -> str | None:
    """Why Lightning's automatic update must stay (a short reason for the log), or None."""
    if not task.automatic_optimization:
        return "the task steps its own optimizers"
    if not single_device_unscaled(trainer):
        return f"{type(trainer.strategy).__name__} with precision {trainer.precision}"
    if trainer.accumulate_grad_batches != 1:
        return f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}"
    if len(trainer.optimizers) != 1:
        return f"{len(trainer.optimizers)} optimizers"
    configs = trainer.lr_scheduler_configs
    if len(configs) > 1 or any(c.interval != "step" or c.frequency != 1 or c.monitor for c in configs):
        return "a learning-rate scheduler that is not stepped once per step"
    hooks = [name for name in MODULE_HOOKS if overrides(task, pl.LightningModule, name)]
    hooks += [f"{type(c).__name__}.{name}" for c in trainer.callbacks for name in CALLBACK_HOOKS
              if overrides(c, pl.Callback, name)]
    if hooks:
        return "overridden " + ", ".join(hooks)
    return None


class PlainUpdates(pl.Callback):
    def __init__(self) -> None:
        self.active = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync_step_counters(trainer)  # a run resumed across the two paths keeps its global_step
        reason = why_lightning_steps(trainer, pl_module)
        if reason is not None:
            if pl_module.automatic_optimization:
                log.info(f"optimizer steps: Lightning's automatic optimization ({reason})")
            return
        log.info("optimizer steps: plain PyTorch (callbacks.plain_updates; ~callbacks.plain_updates for Lightning's)")
        self.active = True
        pl_module.automatic_optimization = False
        pl_module.training_step = plain_update(pl_module, trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:  # the task as it was: later trainer calls (test, another fit) see it unchanged
            del pl_module.training_step
            pl_module.automatic_optimization = True
            self.active = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)


def plain_update(task: pl.LightningModule, trainer: pl.Trainer):
    """The task's bound ``training_step`` followed by the update Lightning's automatic optimization makes."""
    step = type(task).training_step.__get__(task)
    optimizer = trainer.optimizers[0]
    scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
    clip_value, clip_by = trainer.gradient_clip_val, trainer.gradient_clip_algorithm or "norm"

    @functools.wraps(step)
    def training_step(*args: Any, **kwargs: Any) -> Any:
        optimizer.zero_grad(set_to_none=True)
        output = step(*args, **kwargs)
        loss = output["loss"] if isinstance(output, dict) else output
        if loss is None:  # as in Lightning: a step that returns nothing is skipped
            return output
        with torch.autocast(loss.device.type, enabled=False):  # outside mixed precision, as Lightning's update
            loss.backward()
            task.on_before_optimizer_step(optimizer)  # the gradient norm, logged before clipping as Lightning does
            if clip_value:
                parameters = [p for group in optimizer.param_groups for p in group["params"]]
                if clip_by == "value":
                    torch.nn.utils.clip_grad_value_(parameters, clip_value)
                else:
                    torch.nn.utils.clip_grad_norm_(parameters, clip_value)
            optimizer.step()
        advance_global_step(trainer)
        if scheduler is not None:
            scheduler.step()
        return output

    return training_step
