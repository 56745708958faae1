"""Benchmark `task=image_ar` on offline MNIST (only the official test split is here): 8,000 of
its images to train, 1,000 to validate (the NLL reported), 1,000 held-out test images (the
reference of `mimicry eval`; nothing trains on them).

1. Binarized pixels (tokenizer.levels=2, a fixed threshold: intensity > 0.5 → 1): validation
   NLL in nats per image after a fixed number of training steps on CPU. PixelCNN reports 81.30
   (PixelRNN 79.20) on the standard stochastically binarized MNIST (60k official training images,
   10k official test images) after long GPU training: a different binarization and split (see
   the README), so this says how far a few CPU minutes get, not who is better.
2. 16 levels: validation bits/dim.
3. Sampling speed of the K=16 model: images per second (KV cache, batch 64), and `mimicry eval`'s
   image metrics: samples and real training images (the floor) in equal numbers, both scored
   against the test images after quantization to 16 levels.
4. The feature net's held-out accuracy.

Each training run goes through `mimicry train` like a user's. Numbers are written to
scripts/results/bench_image_ar.json, the sample grids next to it.

    python scripts/bench_image_ar.py [--steps 300] [--data ../shared/data] [--levels 2 16] [--merge]

`--levels 2` and `--levels 16 --merge` run the two settings as separate processes (in parallel
on a shared machine); `--merge` keeps the other setting's entry of an existing results file.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "scripts" / "results"


def train(cwd: Path, data_root: Path, levels: int, steps: int, extra: list[str]) -> Path:
    """One `mimicry train` run; returns its run directory."""
    args = [
        "task=image_ar", "data=mnist", "data.source_split=test", f"tokenizer.levels={levels}",
        f"trainer.max_steps={steps}", "trainer.max_epochs=-1",
        f"trainer.val_check_interval={steps}", "trainer.check_val_every_n_epoch=null",  # validate at the end
        "task.metrics_every_n_epochs=0", f"task.sample_every_n_steps={steps}", "task.num_samples=64",
        "task.completions=8", f"optim.warmup_steps={max(1, steps // 20)}", *extra,
    ]
    env = {**os.environ, "MIMICRY_DATA": str(data_root)}
    cwd.mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mimicry.cli", "train", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"  trained {steps} steps (K={levels}) in {time.perf_counter() - started:.0f} s", flush=True)
    (summary,) = (cwd / "outputs").rglob("summary.json")
    return summary.parent


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def keep_grids(run_dir: Path, name: str) -> list[str]:
    kept = []
    for pattern, suffix in (("step_*.png", "samples"), ("completion_step_*.png", "completions")):
        last = sorted((run_dir / "samples").glob(pattern))[-1]
        target = RESULTS / f"bench_image_ar_{name}_{suffix}.png"
        shutil.copy(last, target)
        kept.append(str(target.relative_to(REPO)))
    return kept


def sampling_speed(run_dir: Path, n: int = 64) -> float:
    from mimicry.checkpoints import load_task

    task = load_task(run_dir, prefer="last")
    task.draw(4, seed=0)  # warm up
    started = time.perf_counter()
    task.draw(n, seed=1, batch_size=n)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (the CPU budget)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--levels", type=int, nargs="+", default=[2, 16], choices=[2, 16])
    parser.add_argument("--merge", action="store_true", help="update an existing results file")
    parser.add_argument("--model", nargs="*", default=["model.n_layer=2", "model.n_embd=64", "model.n_head=4",
                                                       "data.batch_size=32", "optim.lr=3e-3"])
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # shows the feature net being built
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
                    "steps": options.steps, "settings": options.model,
                    "data": "MNIST official test split cut three ways (data.source_split=test): 8,000 train / "
                            "1,000 validation (NLL, bits/dim) / 1,000 test (eval reference)",
                    "binarization": "tokenizer.levels=2: pixel = round(intensity), i.e. intensity > 0.5 → 1 (fixed threshold)"}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        for levels, name in ((2, "binarized"), (16, "levels16")):
            if levels not in options.levels:
                continue
            run_start = time.perf_counter()
            run_dir = train(cwd / name, options.data, levels, options.steps, options.model)
            metrics = read_summary(run_dir)["metrics"]
            result[name] = {
                "levels": levels, "steps": options.steps, "data": result["data"],  # per entry: --merge mixes runs
                "nll_nats_per_image": metrics["val/nll_per_image"],
                "bits_per_dim": metrics["val/bits_per_dim"],
                "train_loss": metrics.get("train/loss"),
                "tokens_per_sec": metrics.get("train/tokens_per_sec"),
                "wall_s": round(time.perf_counter() - run_start, 1),
                "grids": keep_grids(run_dir, name),
            }
            print(f"  {name}: {result[name]['nll_nats_per_image']:.2f} nats/image, "
                  f"{result[name]['bits_per_dim']:.4f} bits/dim", flush=True)
            if levels == 16:
                result[name]["samples_per_sec"] = sampling_speed(run_dir)
                from mimicry.evaluate import evaluate

                os.environ["MIMICRY_DATA"] = str(options.data)
                evaluation = evaluate(run_dir, n=options.eval_samples)
                result[name]["image_metrics"] = evaluation["metrics"]
                result[name]["real_vs_real"] = evaluation["real_vs_real"]  # same n, same test reference
                result[name]["eval_reference"] = evaluation["reference"]
                result["feature_net_accuracy"] = evaluation["feature_net_accuracy"]
                shutil.copy(run_dir / "eval" / "memorization.png", RESULTS / "bench_image_ar_memorization.png")
    result["reference"] = {"pixelcnn_nats_per_image": 81.30, "pixelrnn_nats_per_image": 79.20,
                           "pixelcnn_bits_per_dim_binarized": round(81.30 / (784 * math.log(2)), 4)}
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    out = RESULTS / "bench_image_ar.json"
    if options.merge and out.is_file():
        previous = json.loads(out.read_text())
        result = {**previous, **result, "total_wall_s": {"previous": previous.get("total_wall_s"), "this": result["total_wall_s"]}}
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
