"""callbacks.plain_updates: the optimizer step in plain PyTorch is the update Lightning's automatic
optimization makes (same weights, same step count, clipping and schedule included), it steps aside
wherever it would not be, and a run resumed across the two keeps its step count."""
from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import TINY_LM, run_dirs, run_mimicry, summary
from mimicry.callbacks import PlainUpdates
from mimicry.tasks.base import build_optimizer, gradient_norm


class Regression(pl.LightningModule):
    """A two-layer net fitted to a fixed random target, with mimicry's optimizer and schedule."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.grad_norms: list[float] = []
        self.modes: list[bool] = []
        self.steps: list[int] = []

    def training_step(self, batch, _):
        x, y = batch
        self.modes.append(self.automatic_optimization)
        self.steps.append(self.global_step)
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_before_optimizer_step(self, optimizer) -> None:
        self.grad_norms.append(float(gradient_norm(self.parameters())))

    def configure_optimizers(self):
        return build_optimizer(self.parameters(), {"lr": 3e-2, "weight_decay": 0.1, "warmup_steps": 3}, 12)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(48, 8, generator=generator)  # six batches an epoch: 6 steps end one
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True).sin()), batch_size=8)


def fit(module: Regression, callbacks: list, max_steps: int = 12, ckpt_path: str | None = None,
        **trainer: object) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, **trainer)
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


def weights(module: pl.LightningModule) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.mark.parametrize("clip", [{"gradient_clip_val": 0.05}, {"gradient_clip_val": 0.01,
                                                                  "gradient_clip_algorithm": "value"}])
def test_plain_update_is_lightnings_update(clip):
    lightning, plain, unclipped = Regression(), Regression(), Regression()
    fit(lightning, [], **clip)
    trainer = fit(plain, [PlainUpdates()], **clip)
    fit(unclipped, [PlainUpdates()])

    assert plain.modes == [False] * 12 and lightning.modes == [True] * 12  # each took its own path
    assert plain.steps == lightning.steps == list(range(12))
    assert trainer.global_step == 12 and plain.automatic_optimization  # counted, and the task given back as it was
    assert "training_step" not in vars(plain)
    assert plain.grad_norms == pytest.approx(lightning.grad_norms, rel=1e-4)  # norms before clipping, every step
    assert torch.allclose(weights(plain), weights(lightning), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(weights(unclipped), weights(lightning), rtol=1e-3, atol=1e-4)  # the clip bites
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 12  # the schedule stepped once a step


class AfterBackward(pl.Callback):
    def on_after_backward(self, trainer, pl_module) -> None:
        pass


@pytest.mark.parametrize("setting, reason", [
    ({"accumulate_grad_batches": 2}, "trainer.accumulate_grad_batches=2"),
    ({"callbacks": [AfterBackward()]}, "overridden AfterBackward.on_after_backward"),
])
def test_lightning_keeps_the_step_where_the_plain_one_would_differ(setting, reason, caplog):
    module, plain = Regression(), PlainUpdates()
    callbacks = [plain, *setting.pop("callbacks", [])]
    with caplog.at_level(logging.INFO, logger="mimicry"):
        fit(module, callbacks, max_steps=4, **setting)
    assert module.modes and all(module.modes) and not plain.active
    assert f"optimizer steps: Lightning's automatic optimization ({reason})" in caplog.text


@pytest.mark.parametrize("first, then", [([PlainUpdates()], []), ([], [PlainUpdates()])])
def test_a_run_resumed_across_the_two_paths_keeps_its_step_count_and_weights(first, then, tmp_path):
    straight = Regression()
    fit(straight, [])
    module = Regression()
    trainer = fit(module, first, max_steps=-1, max_epochs=1)  # stopped at an epoch's end, as resume= does
    trainer.save_checkpoint(tmp_path / "half.ckpt")

    resumed = Regression()
    trainer = fit(resumed, then, max_steps=-1, max_epochs=2, ckpt_path=str(tmp_path / "half.ckpt"))
    assert resumed.steps == list(range(6, 12)) and trainer.global_step == 12  # counted on from where it stopped
    assert torch.allclose(weights(resumed), weights(straight), rtol=1e-4, atol=1e-6)


def test_a_language_model_run_steps_in_plain_pytorch_unless_told_otherwise(tmp_path):
    run_mimicry(tmp_path, "train", *TINY_LM, "trainer.max_epochs=1")
    run_mimicry(tmp_path, "train", *TINY_LM, "trainer.max_epochs=1", "~callbacks.plain_updates")
    plain, lightning = sorted(run_dirs(tmp_path), key=lambda d: "plain_updates" in d.name)
    assert "optimizer steps: plain PyTorch" in (plain / "train.log").read_text()
    assert "optimizer steps" not in (lightning / "train.log").read_text()
    a, b = summary(plain), summary(lightning)
    assert a["steps"] == b["steps"] == 5
    for name in ("train/loss", "val/loss"):
        assert a["metrics"][name] == pytest.approx(b["metrics"][name], rel=1e-4)
