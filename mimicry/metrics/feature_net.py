"""The offline feature net behind the image metrics: a small CNN classifier per dataset, cached.

No Inception weights can be downloaded, so FID, KID, precision/recall and class coverage read
the features of a `CNNClassifier` fitted on the dataset's *training* split (a plain loop here:
metrics import no task). The validation and test splits stay unseen by it, which is what makes
them fair reference sets: a generator that copies training images gains nothing over real ones.

`load_feature_net(datamodule)` returns the cached net for a dataset, fitting it on first use.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mimicry.data.images import ImageDataModule, to_signed
from mimicry.errors import MimicryError
from mimicry.models.cnn_classifier import CNNClassifier

log = logging.getLogger("mimicry")

FEATURE_NET = {"width": 32, "steps": 400, "batch_size": 128, "lr": 3e-3}
CACHE_VERSION = "v2"  # v2: fitted on the training split only (v1 nets also saw today's validation images)


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


@torch.enable_grad()  # a caller drawing under no_grad (a probe, a metric) still gets a fitted net
def fit_feature_net(datamodule: ImageDataModule, width: int, steps: int, lr: float, batch_size: int = 128,
                    device: str = "cpu", seed: int = 0) -> tuple[CNNClassifier, float]:
    """Fit the classifier on the training split: AdamW, warmup then cosine decay, seeded random batches.

    Returns the net (on the CPU, eval mode) and its accuracy on the validation split, which it never saw.
    """
    spec = datamodule.spec()
    images = to_signed(datamodule.train_images(), datamodule.value_range)
    labels = datamodule.train_labels()
    net = CNNClassifier(spec["channels"], spec["num_classes"], spec["image_size"], width=width).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / warmup, 0.05 + 0.475 * (1 + math.cos(math.pi * min(step, steps) / steps))))
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for step in range(steps):
        batch = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        reference = labels[batch].to(device)              # the class a person gave each image
        prediction = net(images[batch].to(device))        # logits over the classes
        loss = F.cross_entropy(prediction, reference)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % max(1, steps // 4) == 0:
            log.info(f"feature net step {step + 1}/{steps}: loss {loss.item():.3f}")
    net = net.cpu().eval()
    return net, held_out_accuracy(net, datamodule)


@torch.no_grad()
def held_out_accuracy(net: CNNClassifier, datamodule: ImageDataModule, batch_size: int = 500) -> float:
    """Accuracy on the validation split (images the feature net did not train on)."""
    images = to_signed(datamodule.val_images(), datamodule.value_range)
    labels = datamodule.val_labels()
    if len(images) == 0:
        return float("nan")
    correct = sum(int((net(x).argmax(dim=1) == y).sum()) for x, y in zip(images.split(batch_size), labels.split(batch_size)))
    return correct / len(images)


def load_feature_net(datamodule: ImageDataModule, accelerator: str = "auto", **settings: Any) -> CNNClassifier | None:
    """The dataset's feature net: read from the cache, or fitted (seed 0) on its training split and cached.

    None for unlabelled data (one class): a classifier of one class has no features worth comparing.
    `settings` override FEATURE_NET (width, steps, batch_size, lr); they are part of the cache name.
    The caller's random numbers are untouched either way (building the net draws its initial weights):
    a run draws the same batches and noise whether the net was cached or not.
    """
    with torch.random.fork_rng(devices=[]):
        return _load_or_fit(datamodule, accelerator, settings)


def _load_or_fit(datamodule: ImageDataModule, accelerator: str, settings: dict[str, Any]) -> CNNClassifier | None:
    spec = datamodule.spec()
    if spec["num_classes"] < 2:
        log.info(f"no feature net for {spec['dataset']}: it has no class labels; image metrics are skipped")
        return None
    settings = {**FEATURE_NET, **settings}
    name = f"{datamodule.identity()}_cnn{settings['width']}_{settings['steps']}steps_{CACHE_VERSION}.pt"
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).lstrip(".")  # a file in the cache folder, whatever the settings
    folders = feature_net_dirs(datamodule.root)
    for folder in folders:
        if (folder / name).is_file():
            return _read_feature_net(folder / name)

    log.info(f"building the feature net for {datamodule.identity()} (once; cached as {name})")
    device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    training_data = datamodule.variant(value_range="signed", limit=None, num_workers=0)
    torch.manual_seed(0)
    net, accuracy = fit_feature_net(training_data, settings["width"], settings["steps"], settings["lr"],
                                    settings["batch_size"], device)
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
    """A cached feature net (weights only); a damaged cache file gets one line, and is left as it is."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
        spec = record["spec"]
        net = CNNClassifier(int(spec["channels"]), int(spec["num_classes"]), int(spec["image_size"]),
                            width=int(record["width"]))
        net.load_state_dict(record["state_dict"])
        net.test_accuracy = float(record["test_accuracy"])
    except Exception as error:  # truncated, not a torch file, a pickle asking for code, wrong fields or shapes
        raise MimicryError(f"the cached feature net {path} is damaged ({type(error).__name__}); delete it and it "
                           f"is fitted again on first use") from None
    return net.eval()


def feature_net_accuracy(net: CNNClassifier) -> float | None:
    """Held-out (validation-split) accuracy recorded when the net was fitted (None if unknown)."""
    return getattr(net, "test_accuracy", None)
