"""Benchmark the GAN losses on MNIST under the same CPU budget: feature-net FID, class coverage, images/s.

Each loss trains with `mimicry train task=gan` (the real command, default model and settings) for a
fixed budget of CPU seconds (process time, all threads: on a shared machine this is fairer than
wall time, which other people's jobs stretch); the last checkpoint's EMA generator then draws fixed-seed samples that the
offline feature net compares with the held-out MNIST images. A real-vs-real floor (training images
vs the same held-out images, same count) says how low FID can go with this many samples.

    python scripts/bench_gan.py                        # offline: MNIST test split from ../shared/data
    python scripts/bench_gan.py --cpu-budget-s 120 --losses ns hinge
    python scripts/bench_gan.py --trainer gpu --image-size 32   # where a GPU is lent

Writes scripts/results/bench_gan.json and docs/gan_samples.png (one row of samples per loss).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimicry.checkpoints import load_task  # noqa: E402
from mimicry.data.images import MNISTDataModule  # noqa: E402
from mimicry.metrics.image_quality import class_coverage, extract, fid_kid  # noqa: E402
from mimicry.tasks.classifier import feature_net_accuracy, load_feature_net  # noqa: E402


class CPUTimeBudget(pl.Callback):
    """Stop training once the process has used `seconds` of CPU time (added with +callbacks.budget=...)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.process_time()

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if time.process_time() - self._start > self.seconds:
            trainer.should_stop = True


def train(loss: str, args: argparse.Namespace, run_dir: Path) -> float:
    """One `mimicry train task=gan` run, stopped by the CPU budget; returns its wall time."""
    command = [
        sys.executable, "-m", "mimicry.cli", "train", "task=gan", f"loss={loss}", "data=mnist",
        f"data.root={args.data_root}", "data.source_split=test", "data.download=false",
        f"trainer={args.trainer}", "trainer.max_epochs=-1",
        "+callbacks.budget._target_=bench_gan.CPUTimeBudget", f"+callbacks.budget.seconds={args.cpu_budget_s}",
        "task.metrics_every_n_epochs=0",  # metrics come afterwards, the same way for every loss
        f"seed={args.seed}", f"hydra.run.dir={run_dir}",
    ]
    if args.image_size:
        command.append(f"data.image_size={args.image_size}")
    if args.wall_budget_s:  # a GPU run: wall time is what one pays for
        command.append(f"+trainer.max_time='{as_days_hours_minutes_seconds(args.wall_budget_s)}'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"training with loss={loss} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def as_days_hours_minutes_seconds(seconds: int) -> str:
    """Lightning's max_time string (a dict would arrive as a DictConfig, which it does not read)."""
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours // 24:02d}:{hours % 24:02d}:{minutes:02d}:{seconds:02d}"


def logged_scalars(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: list[float] = []
    for event_file in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            values.extend(e.value for e in acc.Scalars(tag))
    return values


def labelled_rows(rows: dict[str, torch.Tensor]) -> Image.Image:
    """One grid per loss, stacked, each with its name on the left."""
    label_width, gap = 90, 6
    grids = {name: Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy()) for name, grid in rows.items()}
    width = label_width + max(g.width for g in grids.values())
    height = sum(g.height for g in grids.values()) + gap * (len(grids) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for name, grid in grids.items():
        canvas.paste(grid, (label_width, y))
        draw.text((8, y + grid.height // 2 - 6), f"loss={name}", fill="black")
        y += grid.height + gap
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", default=["ns", "hinge", "wgan_gp", "lsgan"])
    parser.add_argument("--cpu-budget-s", type=int, default=280, help="training CPU seconds (all threads) per loss")
    parser.add_argument("--wall-budget-s", type=int, default=None, help="also stop after this many wall seconds")
    parser.add_argument("--samples", type=int, default=1000, help="fakes per FID (= the held-out real count)")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--trainer", default="cpu", help="cpu | gpu")
    parser.add_argument("--image-size", type=int, default=None, help="default: MNIST's native 28")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "scripts" / "results" / "bench_gan.json"))
    parser.add_argument("--figure", default=str(REPO / "docs" / "gan_samples.png"))
    args = parser.parse_args()
    # The feature net is cached with the outputs, never inside the shared data folder.
    os.environ.setdefault("MIMICRY_FEATURE_NETS", str(REPO / "outputs" / "feature_nets"))

    data = MNISTDataModule(root=args.data_root, source_split="test", download=False, image_size=args.image_size,
                           value_range="signed")
    data.setup()
    real = data.val_images()[: args.samples]
    print(f"building/loading the MNIST feature net (cache: {os.environ['MIMICRY_FEATURE_NETS']})", flush=True)
    net = load_feature_net(data, accelerator="cpu")
    real_features, _ = extract(real, net)
    floor_features, floor_probs = extract(data.train_images()[: len(real)], net)
    floor_fid, floor_kid = fid_kid(floor_features, real_features)
    results: dict = {
        "setup": {
            "data": f"MNIST test split: {len(data.train_images())} train / {len(real)} held out, "
                    f"{data.spec()['image_size']}x{data.spec()['image_size']}",
            "cpu_budget_s_per_loss": args.cpu_budget_s, "wall_budget_s_per_loss": args.wall_budget_s,
            "samples": len(real), "trainer": args.trainer, "seed": args.seed,
            "model": "dcgan (conf/model/dcgan.yaml defaults)", "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        },
        "feature_net_test_accuracy": feature_net_accuracy(net),
        "real_vs_real": {"fid": floor_fid, "kid": floor_kid, **class_coverage(floor_probs)},
        "runs": {},
    }
    print(f"real-vs-real floor: FID {floor_fid:.2f}", flush=True)

    rows = {}
    for loss in args.losses:
        run_dir = REPO / "outputs" / "bench_gan" / f"{loss}_{args.trainer}_{data.spec()['image_size']}px"
        print(f"training loss={loss} for {args.cpu_budget_s} CPU seconds ...", flush=True)
        load_before = os.getloadavg()[0]
        wall = train(loss, args, run_dir)
        task = load_task(run_dir, prefer="last")
        fakes = task.draw(len(real), seed=args.seed + 1).cpu()
        fake_features, fake_probs = extract(fakes, net)
        fid, kid = fid_kid(real_features, fake_features)
        record = json.loads((run_dir / "summary.json").read_text())
        throughput = logged_scalars(run_dir, "train/samples_per_sec")
        results["runs"][loss] = {
            "fid": fid, "kid": kid, **class_coverage(fake_probs),
            "train_images_per_s": statistics.median(throughput) if throughput else None,
            "generator_steps": record["steps"], "d_steps_per_g_step": task.d_steps,
            "status": record["status"], "wall_s": round(wall, 1), "run_dir": str(run_dir.relative_to(REPO)),
            # other jobs on the machine (1-minute load average, before and after) make wall time noisy
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        print(f"  {loss}: FID {fid:.2f}, classes {results['runs'][loss]['classes_covered']:.0f}, "
              f"entropy {results['runs'][loss]['class_entropy']:.2f}, "
              f"{results['runs'][loss]['train_images_per_s'] or 0:.0f} images/s, {record['steps']} G steps", flush=True)
        rows[loss] = make_grid((task.draw(16, seed=args.seed).cpu() + 1) / 2, nrow=16, padding=1, pad_value=0.5)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    figure = labelled_rows(rows)
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
