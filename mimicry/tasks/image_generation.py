"""What every image generator shares (gan, image_ar, diffusion): one value range for samples,
fixed-seed grids, the feature-net metrics every N epochs, the memorization check, and
`mimicry sample` / `mimicry eval`.

A subclass implements its own imitation (`training_step`, `validation_step`) and:

- ``draw(n, seed, labels=None, **options) -> Tensor``: n images (n, C, H, W) **in [0, 1]**,
  whatever range the model works in; the same seed gives the same images. When conditional and
  ``labels`` is None, draw classes 0, 1, 2, ... in turn (``self.default_labels(n)``).
- ``data_value_range``: the range it trains on, "signed" ([-1, 1]) or "unit" ([0, 1]);
  the data spec is checked against it before anything is built.

and may override:

- ``draw_options``: names of ``draw`` keyword options that `mimicry sample` passes through
  (temperature, truncation, sampling steps, ...); ``sample_options`` lists every option it accepts.
- ``setup_data(datamodule)``: fit what needs training data before training (a codebook).
- ``as_drawable(images)``: real [0, 1] images as the sampler could produce them (image_ar passes
  them through its tokenizer), so the metrics compare like with like. Identity by default.
- ``on_image_metrics(metrics)``: react to the metrics just logged (the GAN warns on collapse).
- ``metric_draws(n, seed, real, **options)``: what the metrics score; ``draw(n, seed)`` by default
  (the autoencoder scores its reconstructions of ``real``, n real [0, 1] images).
- ``sample_name(seed, label, options)``: the file stem `mimicry sample` writes.

The base reads these constructor arguments from ``self.hparams`` (pass them through):
``conditional, sample_seed, num_samples, metrics_every_n_epochs, metrics_samples, feature_net``.
A subclass calls ``super().on_validation_epoch_end()`` if it overrides that hook.

Metrics (logged as ``val/<name>``) compare ``metrics_samples`` fixed-seed draws with the
validation images (which the feature net never trained on): FID, KID, precision/recall,
density/coverage, class coverage, within-class diversity and class recall, the copy rate
against the training images, and ``val/fid_floor``: training images (as many as the draws)
scored against the same reference: what a perfect imitator (or a copier) would get.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid, save_image

from mimicry.data.images import to_unit
from mimicry.errors import MimicryError
from mimicry.metrics.feature_net import load_feature_net
from mimicry.metrics.image_quality import image_metrics
from mimicry.metrics.memorization import memorization, typical_train_distance
from mimicry.metrics.shape_reader import share_read
from mimicry.tasks.base import ImitationTask

log = logging.getLogger("mimicry")

MEMORIZATION_BANK = 10_000  # training images searched for nearest neighbours (bounded cost on big datasets)
SAMPLE_FORMATS = ("png", "npz", "both")


class ImageGeneration(ImitationTask):
    #: the value range the model trains on ("signed": [-1, 1], "unit": [0, 1]); draw() always returns [0, 1]
    data_value_range = "signed"
    #: draw() keyword options that `mimicry sample` may pass
    draw_options: tuple[str, ...] = ()
    #: every option `mimicry sample` accepts besides n, seed, out
    sample_options: tuple[str, ...] = ("label", "format")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 250):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)
        name = type(self).task_name()
        if data_spec.get("kind") != "image":
            raise MimicryError(f"task={name} needs image data, got {data_spec.get('kind')!r} data")
        if data_spec.get("value_range") != self.data_value_range:
            span = "[-1, 1]" if self.data_value_range == "signed" else "[0, 1]"
            raise MimicryError(f"task={name} trains on images in {span}: set data.value_range={self.data_value_range}")
        classes = int(data_spec.get("num_classes", 0))
        if self.hparams.get("conditional") and classes < 2:
            raise MimicryError(f"task.conditional=true needs labelled data with at least 2 classes; "
                               f"data {data_spec.get('dataset', '?')} has {classes}")
        self.num_classes = classes if self.hparams.get("conditional") else 0
        self.channels, self.image_size = int(data_spec["channels"]), int(data_spec["image_size"])
        self._helpers: dict[str, Any] = {}  # feature net, reference images: not part of the state dict

    @classmethod
    def task_name(cls) -> str:
        return cls.__module__.rpartition(".")[2]

    # ---- what a subclass implements ------------------------------------------------------------
    def draw(self, n: int, seed: int, labels: Tensor | None = None, **options: Any) -> Tensor:
        """n images (n, C, H, W) in [0, 1]; the same seed gives the same images."""
        raise NotImplementedError

    def setup_data(self, datamodule) -> None:
        """Fit what needs the training data (e.g. a codebook); runs before training starts."""

    def as_drawable(self, images: Tensor) -> Tensor:
        """Real [0, 1] images as the sampler could produce them (identity for continuous generators)."""
        return images

    def on_image_metrics(self, metrics: dict[str, float]) -> None:
        """Called after the sample metrics are logged."""

    def metric_draws(self, n: int, seed: int, real: Tensor, **options: Any) -> Tensor:
        """The n images (in [0, 1]) the metrics score: draws; ``real`` (the floor's real images) is unused here."""
        return self.draw(n, seed, **options)

    def factor_metrics(self, images: Tensor) -> dict[str, float]:
        """data=shapes: the share of images (in [0, 1]) whose shape and colour are read with confidence
        (the factors are known, so samples are judged exactly); other data: nothing."""
        if self.data_spec.get("dataset") != "shapes" or self.channels != 3:
            return {}
        return {"shapes_read": share_read(images)}

    def default_labels(self, n: int) -> Tensor | None:
        """Classes 0, 1, 2, ... in turn when conditional (one grid column per class), else None."""
        return torch.arange(n, device=self.device) % self.num_classes if self.num_classes else None

    # ---- data, feature net, reference images ---------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or stage != "fit":
            return
        self.setup_data(datamodule)
        self._helpers["datamodule"] = datamodule
        if not self.hparams.get("metrics_every_n_epochs"):
            return
        net = load_feature_net(datamodule, **(self.hparams.get("feature_net") or {}))
        if net is None:
            return
        keep = max(MEMORIZATION_BANK, self.hparams.metrics_samples)  # bounded work on big datasets
        train = self.as_drawable(to_unit(datamodule.train_images()[:keep], datamodule.value_range))
        bank = train[:MEMORIZATION_BANK]
        self._helpers.update(
            feature_net=net,
            # the reference: validation images, which neither the feature net nor the model trained on
            reference=self.as_drawable(to_unit(datamodule.val_images(), datamodule.value_range)),
            floor_images=train[: self.hparams.metrics_samples],  # as many real images as there are draws
            bank=bank,
            typical_distance=typical_train_distance(bank),
        )

    def metrics_due(self) -> bool:
        return self._helpers.get("feature_net") is not None and self.epoch_end_due(self.hparams.metrics_every_n_epochs)

    def on_validation_epoch_end(self) -> None:
        if self.metrics_due():
            self.log_image_metrics()

    def log_image_metrics(self) -> dict[str, float]:
        """Metrics of fixed-seed draws against the reference images, the floor, the copy check."""
        h, helpers = self.hparams, self._helpers
        net = helpers["feature_net"].to(self.device)
        fakes = self.metric_draws(h.metrics_samples, h.sample_seed + 1, helpers["floor_images"]).cpu()
        metrics = image_metrics(helpers["reference"], fakes, net, value_range="unit")
        if "fid_floor" not in helpers:  # the same every time: the real images and reference do not change
            helpers["fid_floor"] = image_metrics(helpers["reference"], helpers["floor_images"], net, value_range="unit")["fid"]
        copies = memorization(fakes, helpers["bank"], net, value_range="unit", typical=helpers["typical_distance"])
        factors = self.factor_metrics(fakes)
        if factors and "factor_floor" not in helpers:  # the same real images read: what a perfect imitator gets
            helpers["factor_floor"] = {f"{k}_floor": v for k, v in self.factor_metrics(helpers["floor_images"]).items()}
        metrics.update(fid_floor=helpers["fid_floor"], copy_rate=copies["copy_rate"], **factors,
                       **helpers.get("factor_floor", {}))
        for name, value in metrics.items():
            self.log(f"val/{name}", value)
        writer = self.tensorboard()
        if writer is not None:
            writer.add_image("samples/memorization", upscale(copies["grid"], self.image_size), self.global_step)
        self.on_image_metrics(metrics)
        return metrics

    # ---- grids and files -----------------------------------------------------------------------
    def grid_columns(self, n: int) -> int:
        """One column per class when conditional, else a square-ish grid."""
        return self.num_classes if self.num_classes else max(1, round(math.sqrt(n)))

    def sample_grid(self, n: int, seed: int, label: int | None = None, **options: Any) -> tuple[Tensor, Tensor | None, int]:
        """(images in [0, 1], their labels or None, columns) for a grid; conditional grids are
        rounded up to whole rows of classes unless one label is asked for."""
        labels = None
        if self.num_classes:
            if label is None:
                n = math.ceil(n / self.num_classes) * self.num_classes
                labels = self.default_labels(n)
            else:
                labels = torch.full((n,), int(label), device=self.device)
        return self.draw(n, seed, labels, **options), labels, self.grid_columns(n)

    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        images, _, columns = self.sample_grid(self.hparams.num_samples, self.hparams.sample_seed)
        grid = image_grid(images.cpu(), columns)
        save_image(grid, sample_dir / f"step_{step:07d}.png")
        if writer is not None:
            writer.add_image("samples/images", grid, step)

    def check_label(self, label: Any) -> int | None:
        if label is None:
            return None
        if not self.num_classes or not 0 <= int(label) < self.num_classes:
            raise MimicryError(f"label={label}: this model is " + (
                f"conditional on classes 0..{self.num_classes - 1}" if self.num_classes
                else "unconditional (trained without task.conditional=true)"))
        return int(label)

    def sample_name(self, seed: int, label: int | None, options: dict[str, Any]) -> str:
        """File stem for `mimicry sample`: seed, label, and any draw option given."""
        parts = [f"samples_seed{seed}"] + ([f"label{label}"] if label is not None else [])
        parts += [f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}" for key, value in options.items()]
        return "_".join(parts)

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """`mimicry sample`: a grid PNG (format=png), the raw samples (format=npz), or both."""
        label = self.check_label(options.get("label"))
        fmt = options.get("format") or "png"
        if fmt not in SAMPLE_FORMATS:
            raise MimicryError(f"format={fmt}: choose one of {', '.join(SAMPLE_FORMATS)}")
        drawn = {k: options[k] for k in self.draw_options if options.get(k) is not None}
        images, labels, columns = self.sample_grid(n, seed, label, **drawn)
        images = images[:n].cpu()
        stem = self.sample_name(seed, label, drawn)
        paths = []
        if fmt in ("png", "both"):
            paths.append(out_dir / f"{stem}.png")
            save_image(image_grid(images, columns), paths[-1])
        if fmt in ("npz", "both"):
            paths.append(out_dir / f"{stem}.npz")
            save_npz(paths[-1], images, None if labels is None else labels[:n].cpu())
        return paths


def image_grid(images: Tensor, columns: int) -> Tensor:
    """(3, H, W) grid of [0, 1] images, thin grey lines between cells, zoomed when small."""
    grid = make_grid(images.clamp(0, 1), nrow=columns, padding=1, pad_value=0.5)
    return upscale(grid, images.shape[-1])


def upscale(grid: Tensor, image_size: int, min_cell: int = 48) -> Tensor:
    """Nearest-neighbour zoom so that small images (16x16 digits) are visible at 100% in TensorBoard."""
    factor = max(1, min_cell // image_size)
    return grid if factor == 1 else torch.nn.functional.interpolate(grid[None], scale_factor=factor, mode="nearest")[0]


def save_npz(path: Path, images: Tensor, labels: Tensor | None) -> None:
    """Raw samples for other tools: `images` uint8 (N, H, W, C) as image files store them
    (round(255·x)), and `labels` int64 (N,) when the model is conditional."""
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arrays = {"images": pixels}
    if labels is not None:
        arrays["labels"] = labels.long().numpy()
    np.savez_compressed(path, **arrays)
