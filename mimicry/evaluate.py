"""``mimicry eval RUN_DIR [n=1000 seed=0]``: image metrics of a finished run, beside a real-vs-real
floor computed the same way.

- Reference: the data's held-out *test* split. Neither the model, nor checkpoint choice, nor the
  feature net (fitted on the training split) ever saw it.
- Model: n samples (``task.draw``, [0, 1]) against the reference.
- Floor: n training images against the same reference: FID depends on the sample count, so
  the floor uses the same n as the model. A generator that copies its training set scores the floor.
- Real images pass through ``task.as_drawable`` first (image_ar: its tokenizer), so the metrics
  measure the model and not what quantization loses.

Writes ``eval/metrics.json``, ``eval/samples.png`` and ``eval/memorization.png`` in the run directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from torchvision.utils import save_image

from mimicry.checkpoints import find_checkpoint, load_task_and_config
from mimicry.data.images import to_unit
from mimicry.errors import MimicryError
from mimicry.metrics.feature_net import feature_net_accuracy, load_feature_net
from mimicry.metrics.image_quality import image_metrics
from mimicry.metrics.memorization import memorization
from mimicry.output_paths import ensure_writable_dir
from mimicry.tasks.image_generation import MEMORIZATION_BANK, ImageGeneration, image_grid, upscale
from mimicry.recipe import typed_data_values

def evaluate(run_dir: str | Path, n: int = 1000, seed: int = 0, typed: dict[str, Any] | None = None,
             **draw_options: Any) -> dict[str, Any]:
    """Sample ``n`` images from the run's best checkpoint and score them against held-out test images.
    ``typed``: data settings given on the command line (``data.root=``: where the dataset is here)."""
    if n < 2:
        raise MimicryError(f"n={n}: FID and KID need at least 2 samples")
    ckpt = find_checkpoint(run_dir)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    task, cfg = load_task_and_config(ckpt, typed=typed)
    if not isinstance(task, ImageGeneration):
        raise MimicryError(f"{type(task).__name__} makes no images: `mimicry eval` is for image generators")
    unknown = sorted(set(draw_options) - set(task.draw_options))
    if unknown:  # e.g. sampler=, steps=, guidance= for diffusion; truncation= for gan
        raise MimicryError(f"eval option(s) {', '.join(unknown)} unknown to {type(task).__name__}; "
                           f"valid: n, seed{''.join(', ' + k for k in task.draw_options)}")
    # The data comes from the installed configs and the run's recipe; where it lives on this machine
    # is the user's (data.root=, MIMICRY_DATA), never the run folder's.
    data = instantiate(cfg.data, limit=None)  # all the training images
    net = load_feature_net(data, **(task.hparams.get("feature_net") or {}))
    if net is None:
        raise MimicryError(f"data {data.name} has no class labels, so there is no feature net to compare with")
    reference = to_unit(data.test_images(), data.value_range)
    if len(reference) < 2:
        raise MimicryError(f"data {data.name} has {len(reference)} test image(s): set data.test_fraction so that "
                           f"at least 2 are held out")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    task, net = task.to(device), net.to(device)
    train = task.as_drawable(to_unit(data.train_images(), data.value_range))
    reference = task.as_drawable(reference)
    note = ""
    if n > len(train):  # the floor cannot use more training images than there are
        note = f"n={n} is more than the {len(train)} training images: both are scored on {len(train)}"
        n = len(train)
    real = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]]
    fakes = task.metric_draws(n, seed, real, **draw_options).cpu()  # an autoencoder: its reconstructions of `real`
    metrics = image_metrics(reference, fakes, net, value_range="unit")
    floor = image_metrics(reference, real, net, value_range="unit")  # real images, the same n: the best to expect
    copies = memorization(fakes, train[:MEMORIZATION_BANK], net, value_range="unit")

    out = run_dir / "eval"
    ensure_writable_dir(out, "", fix="eval writes into the run directory: copy the run somewhere writable")
    save_image(image_grid(fakes[:64], 8), out / "samples.png")
    save_image(upscale(copies["grid"], task.image_size), out / "memorization.png")
    result = {
        "checkpoint": str(ckpt), "samples": len(fakes), "seed": seed, "draw_options": draw_options,
        "reference": {"split": "test", "count": len(reference)},
        "feature_net_accuracy": feature_net_accuracy(net),
        "metrics": {**metrics, "copy_rate": copies["copy_rate"], **task.factor_metrics(fakes)},
        "real_vs_real": {**floor, **task.factor_metrics(real), "count": len(real)},
        "note": note,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def eval_command(args: list[str]) -> int:
    """``mimicry eval RUN_DIR [n=1000 seed=0]``: print the metrics, write them under RUN_DIR/eval."""
    if not args:
        raise MimicryError("give a run directory: mimicry eval RUN_DIR [n=1000 seed=0 data.root=DIR]")
    args, typed = typed_data_values(args)
    options: dict[str, Any] = {"n": 1000, "seed": 0, "typed": typed}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep:
            raise MimicryError(f"eval options are key=value (n=, seed=, data.root=, and the task's sample options); "
                               f"got {arg!r}")
        parsed = yaml.safe_load(value)
        if key in ("n", "seed") and (not isinstance(parsed, int) or isinstance(parsed, bool)):
            raise MimicryError(f"eval option {key}={value!r} must be a whole number")
        options[key] = parsed  # other keys go to task.draw, checked against task.draw_options
    result = evaluate(args[0], **options)
    floor, n, ref = result["real_vs_real"], result["samples"], result["reference"]["count"]
    if result["note"]:
        print(result["note"])
    print(f"{'metric':<24} {'model':>9} {'real (floor)':>13}   each: {n} images vs {ref} held-out test images")
    for name, value in result["metrics"].items():
        real = f"{floor[name]:>13.4f}" if name in floor else " " * 13
        print(f"{name:<24} {value:>9.4f} {real}")
    print(f"the floor scores {floor['count']} real training images against the same test images: "
          f"the same n as the samples, since FID grows as n shrinks")
    print(f"wrote {Path(result['checkpoint']).parent.parent / 'eval'}")
    return 0
