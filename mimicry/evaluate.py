"""``mimicry eval RUN_DIR [n=1000 seed=0]``: image metrics of a finished run, with more samples
than training logs, beside a real-vs-real floor (FID depends on the sample count).

Works for any task whose module has ``sample_images(n, seed) -> images in [0, 1]``. Writes
``eval/metrics.json``, ``eval/samples.png`` and ``eval/memorization.png`` in the run directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.utils import save_image

from mimicry.checkpoints import find_checkpoint, load_task
from mimicry.data.images import to_unit
from mimicry.errors import MimicryError
from mimicry.metrics.image_quality import image_metrics
from mimicry.metrics.memorization import memorization
from mimicry.tasks.classifier import feature_net_accuracy, load_feature_net


def evaluate(run_dir: str | Path, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Sample ``n`` images from the run's best checkpoint and compare them with its training data."""
    ckpt = find_checkpoint(run_dir)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    task = load_task(ckpt)
    if not hasattr(task, "sample_images"):
        raise MimicryError(f"{type(task).__name__} makes no images: `mimicry eval` is for image generators")
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise MimicryError(f"{run_dir} has no .hydra/config.yaml: cannot tell which data it was trained on")
    data = instantiate(OmegaConf.load(config_file).data, limit=None)  # all the training images
    net = load_feature_net(data, **(task.hparams.get("feature_net") or {}))
    if net is None:
        raise MimicryError(f"data {data.name} has no class labels, so there is no feature net to compare with")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    task, net = task.to(device), net.to(device)
    fakes = task.sample_images(n, seed).cpu()
    train = to_unit(data.train_images(), data.value_range)
    val = to_unit(data.val_images(), data.value_range)
    real = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]]
    metrics = image_metrics(real, fakes, net, value_range="unit")
    floor = image_metrics(real[: len(val)], val[:n], net, value_range="unit")  # train vs held-out: the best to expect
    copies = memorization(fakes, train[:10_000], net, value_range="unit")

    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    save_image(fakes[:64], out / "samples.png", nrow=8, padding=1, pad_value=1.0)
    save_image(copies["grid"], out / "memorization.png")
    result = {
        "checkpoint": str(ckpt), "samples": len(fakes), "real": len(real), "seed": seed,
        "feature_net_accuracy": feature_net_accuracy(net),
        "metrics": {**metrics, "copy_rate": copies["copy_rate"]},
        "real_vs_real": {"fid": floor["fid"], "kid": floor["kid"], "precision": floor["precision"],
                         "recall": floor["recall"], "count": min(len(val), n)},
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def eval_command(args: list[str]) -> int:
    """``mimicry eval RUN_DIR [n=1000 seed=0]``: print the metrics, write them under RUN_DIR/eval."""
    if not args:
        raise MimicryError("give a run directory: mimicry eval RUN_DIR [n=1000 seed=0]")
    options = {"n": 1000, "seed": 0}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            raise MimicryError(f"eval options are n= and seed=; got {arg!r}")
        options[key] = int(yaml.safe_load(value))
    result = evaluate(args[0], **options)
    for name, value in result["metrics"].items():
        print(f"{name:<16} {value:.4f}")
    print(f"real-vs-real floor ({result['real_vs_real']['count']} held-out images): fid {result['real_vs_real']['fid']:.4f}")
    print(f"wrote {Path(result['checkpoint']).parent.parent / 'eval'}")
    return 0
