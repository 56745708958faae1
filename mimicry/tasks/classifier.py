"""Classification: imitate the label a person gave each image.

The trained classifier is also our offline feature net: FID, KID, precision/recall and class
coverage of generated images are computed from its penultimate features and its predictions
(no Inception weights can be downloaded). `load_feature_net(datamodule)` returns the cached net
for a dataset, fitting this task with Lightning on first use.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from hydra.utils import instantiate
from torchmetrics import MeanMetric

from mimicry.data.images import ImageDataModule
from mimicry.errors import MimicryError
from mimicry.models.cnn_classifier import CNNClassifier
from mimicry.tasks.base import ImitationTask

log = logging.getLogger("mimicry")


class Classification(ImitationTask):
    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 0):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)
        if data_spec.get("kind") != "image":
            raise MimicryError(f"task=classifier needs image data, got {data_spec.get('kind')!r} data")
        if data_spec["num_classes"] < 2:
            raise MimicryError(f"task=classifier needs labelled data with at least 2 classes; "
                               f"{data_spec['dataset']} has {data_spec['num_classes']}")
        if data_spec["value_range"] != "signed":
            raise MimicryError("task=classifier reads images in [-1, 1]: set data.value_range=signed")
        self.model = instantiate(model, channels=data_spec["channels"], num_classes=data_spec["num_classes"],
                                 image_size=data_spec["image_size"])
        self.val_accuracy = MeanMetric()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        reference = labels              # the class a person gave the image
        prediction = self.model(images)  # logits over the classes
        return self.imitate(prediction, reference)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.imitate(logits, labels, stage="val")
        self.val_accuracy.update((logits.argmax(dim=1) == labels).float().mean(), weight=len(labels))

    def on_validation_epoch_end(self) -> None:
        self.log("val/accuracy", self.val_accuracy.compute(), prog_bar=True)
        self.val_accuracy.reset()

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        raise MimicryError("a classifier draws no samples; `mimicry sample` is for generative tasks")


# ---- the cached feature net -----------------------------------------------------------------

FEATURE_NET = {"width": 32, "steps": 400, "batch_size": 128, "lr": 3e-3}


def feature_net_dirs(root: Path) -> list[Path]:
    """Where cached feature nets are looked for, in order; the first writable one gets new nets.

    `MIMICRY_FEATURE_NETS` if set, then `<data root>/feature_nets`, then the user's cache
    (~/.cache/mimicry/feature_nets), which takes over when the data root is read-only.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mimicry" / "feature_nets"
    folders = [Path(root) / "feature_nets", cache]
    if os.environ.get("MIMICRY_FEATURE_NETS"):
        folders.insert(0, Path(os.environ["MIMICRY_FEATURE_NETS"]))
    return folders


def _writable(folder: Path) -> bool:
    """Permission bits, not just os.access: a folder marked read-only stays untouched even for root."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    return bool(existing.stat().st_mode & stat.S_IWUSR) and os.access(existing, os.W_OK)


def fit_feature_net(datamodule: ImageDataModule, width: int, steps: int, lr: float,
                    accelerator: str = "auto") -> tuple[CNNClassifier, float]:
    """Fit `task=classifier` with Lightning; returns the net and its accuracy on the held-out split."""
    task = Classification(
        model={"_target_": "mimicry.models.cnn_classifier.CNNClassifier", "width": width},
        loss={"_target_": "torch.nn.CrossEntropyLoss"},
        optim={"lr": lr, "min_lr": lr / 20, "weight_decay": 0.0, "warmup_steps": steps // 10, "betas": [0.9, 0.99]},
        data_spec=datamodule.spec(),
    )
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=steps, max_epochs=-1, logger=False,
        callbacks=[TQDMProgressBar()],  # not Rich: this may run inside another run's live Rich display
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=None, val_check_interval=steps,  # validate once, at the end
    )
    trainer.fit(task, datamodule=datamodule)
    return task.model.cpu().eval(), float(trainer.callback_metrics["val/accuracy"])


def load_feature_net(datamodule: ImageDataModule, accelerator: str = "auto", **settings: Any) -> CNNClassifier | None:
    """The dataset's feature net: read from the cache, or fitted (with a progress bar) and cached.

    None for unlabelled data (one class): a classifier of one class has no features worth comparing.
    `settings` override FEATURE_NET (width, steps, batch_size, lr); they are part of the cache name.
    """
    spec = datamodule.spec()
    if spec["num_classes"] < 2:
        log.info(f"no feature net for {spec['dataset']}: it has no class labels; image metrics are skipped")
        return None
    settings = {**FEATURE_NET, **settings}
    name = f"{datamodule.identity()}_cnn{settings['width']}_{settings['steps']}steps.pt"
    folders = feature_net_dirs(datamodule.root)
    for folder in folders:
        if (folder / name).is_file():
            return _read_feature_net(folder / name)

    log.info(f"building the feature net for {datamodule.identity()} (once; cached as {name})")
    training_data = datamodule.variant(value_range="signed", limit=None, batch_size=settings["batch_size"], num_workers=0)
    with torch.random.fork_rng(devices=[]):  # the same seed gives the same net, and the caller's RNG is untouched
        torch.manual_seed(0)
        net, accuracy = fit_feature_net(training_data, settings["width"], settings["steps"], settings["lr"], accelerator)
    record = {"state_dict": net.state_dict(), "spec": spec, "width": settings["width"], "test_accuracy": accuracy}
    folder = next((f for f in folders if _writable(f)), None)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(record, folder / name)
    log.info(f"feature net for {datamodule.identity()}: held-out accuracy {accuracy:.4f} "
             f"({f'saved in {folder}' if folder else 'not cached: no writable folder'})")
    net.test_accuracy = accuracy
    return net


def _read_feature_net(path: Path) -> CNNClassifier:
    record = torch.load(path, map_location="cpu", weights_only=True)
    spec = record["spec"]
    net = CNNClassifier(spec["channels"], spec["num_classes"], spec["image_size"], width=record["width"])
    net.load_state_dict(record["state_dict"])
    net.test_accuracy = float(record["test_accuracy"])
    return net.eval()


def feature_net_accuracy(net: CNNClassifier) -> float | None:
    """Held-out accuracy recorded when the net was fitted (None if unknown)."""
    return getattr(net, "test_accuracy", None)
