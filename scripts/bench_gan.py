"""Benchmark the GAN losses on MNIST under the same CPU budget: feature-net FID, class coverage,
within-class diversity, images/s; and a class-conditional model: does it draw the asked-for
digit, and many different ones?

Each run trains with `mimicry train task=gan` (the real command, default model and settings) for a
fixed budget of CPU seconds (process time, all threads: on a shared machine this is fairer than
wall time, which other people's jobs stretch); the last checkpoint's EMA generator then draws
fixed-seed samples that the offline feature net (mimicry/metrics: fitted on the training split
only) compares with the held-out *test* split, which no training ever touches. A real-vs-real
floor (as many training images vs the same test images) says what a perfect imitator would score.

Within-class diversity (mimicry.metrics.image_quality.within_class): mean pairwise feature distance
among the fakes of a class over the same for real images of that class, averaged over classes
(1 = real-like variety, 0 = one image per class). For the conditional model it is given twice:
classes as the feature net sees them, and classes as asked for; the asked-for class rate is the
share of samples the feature net puts in the class that was asked for.

    python scripts/bench_gan.py                        # offline: MNIST test split from ../shared/data
    python scripts/bench_gan.py --cpu-budget-s 120 --losses ns hinge --conditional-losses
    python scripts/bench_gan.py --trainer gpu --image-size 32   # where a GPU is lent

Writes scripts/results/bench_gan.json and docs/gan_samples.png (a row of samples per run; the
conditional model's columns are classes).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimicry.checkpoints import load_task  # noqa: E402
from mimicry.run_reading import scalar_curves  # noqa: E402
from mimicry.data.images import MNISTDataModule  # noqa: E402
from mimicry.metrics.feature_net import feature_net_accuracy, load_feature_net  # noqa: E402
from mimicry.metrics.image_quality import class_coverage, extract, fid_kid, within_class  # noqa: E402


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


def train(loss: str, conditional: bool, args: argparse.Namespace, run_dir: Path) -> float:
    """One `mimicry train task=gan` run, stopped by the CPU budget; returns its wall time."""
    command = [
        sys.executable, "-m", "mimicry.cli", "train", "task=gan", f"loss={loss}", "data=mnist",
        f"task.conditional={str(conditional).lower()}",
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")]),
           # threads per run: on a shared, busy CPU a second thread mostly spins and eats the budget
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
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
    curve = scalar_curves(run_dir, {tag}).get(tag)
    return [] if curve is None else curve.values.tolist()


def labelled_rows(rows: dict[str, torch.Tensor]) -> Image.Image:
    """One grid per run, stacked, each with its name on the left."""
    label_width, gap = 150, 6
    grids = {name: Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy()) for name, grid in rows.items()}
    width = label_width + max(g.width for g in grids.values())
    height = sum(g.height for g in grids.values()) + gap * (len(grids) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for name, grid in grids.items():
        canvas.paste(grid, (label_width, y))
        draw.text((8, y + grid.height // 2 - 6), name, fill="black")
        y += grid.height + gap
    return canvas


def sample_metrics(fakes: torch.Tensor, real: tuple[torch.Tensor, torch.Tensor], net: torch.nn.Module,
                   asked: torch.Tensor | None = None) -> dict[str, float]:
    """FID/KID, class coverage and within-class diversity of fakes in [0, 1] against the reference
    features; with `asked` (the labels a conditional model was given) also the asked-for class rate
    and the diversity within each asked-for class."""
    real_features, real_probs = real
    fake_features, fake_probs = extract(fakes, net, value_range="unit")
    fid, kid = fid_kid(real_features, fake_features)
    metrics = {"fid": fid, "kid": kid, **class_coverage(fake_probs),
               **within_class(real_features, real_probs, fake_features, fake_probs)}
    if asked is not None:
        metrics["asked_for_class_rate"] = (fake_probs.argmax(dim=1) == asked).float().mean().item()
        as_asked = torch.nn.functional.one_hot(asked, fake_probs.shape[1]).float()  # group by the asked-for class
        metrics["within_class_diversity_asked"] = within_class(real_features, real_probs, fake_features,
                                                               as_asked)["within_class_diversity"]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="*", default=["ns", "hinge", "wgan_gp", "lsgan"])
    parser.add_argument("--conditional-losses", nargs="*", default=["ns"],
                        help="losses also run with task.conditional=true")
    parser.add_argument("--cpu-budget-s", type=int, default=280, help="training CPU seconds (all threads) per run")
    parser.add_argument("--wall-budget-s", type=int, default=None, help="also stop after this many wall seconds")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per training run")
    parser.add_argument("--parallel", type=int, default=1, help="training runs at a time")
    parser.add_argument("--reuse", action="store_true", help="score finished runs in outputs/bench_gan again, untrained")
    parser.add_argument("--samples", type=int, default=1000, help="fakes per FID (at most the test split's size)")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--trainer", default="cpu", help="cpu | gpu")
    parser.add_argument("--image-size", type=int, default=None, help="default: MNIST's native 28")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "scripts" / "results" / "bench_gan.json"))
    parser.add_argument("--figure", default=str(REPO / "docs" / "gan_samples.png"))
    parser.add_argument("--runs-dir", default=str(REPO / "outputs" / "bench_gan"),
                        help="where the runs live (another folder keeps this table's runs when re-measuring)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The feature net is cached with the outputs, never inside the shared data folder.
    os.environ.setdefault("MIMICRY_FEATURE_NETS", str(REPO / "outputs" / "feature_nets"))

    data = MNISTDataModule(root=args.data_root, source_split="test", download=False, image_size=args.image_size,
                           value_range="signed")
    data.setup()
    test = data.test_images()[: args.samples]  # the reference: no training (GAN or feature net) saw it
    n = len(test)
    print(f"building/loading the MNIST feature net (cache: {os.environ['MIMICRY_FEATURE_NETS']})", flush=True)
    net = load_feature_net(data, accelerator="cpu")
    reference = extract(test, net)
    floor = sample_metrics((data.train_images()[:n] + 1) / 2, reference, net)  # real training images, same n
    size = data.spec()["image_size"]
    results: dict = {
        "setup": {
            "data": f"MNIST test split cut three ways: {len(data.train_images())} train / {len(data.val_images())} "
                    f"validation / {len(data.test_images())} test (the reference), {size}x{size}",
            "metrics": "feature net of mimicry/metrics/feature_net.py (fitted on the train split; features: an "
                       "earlier layer's pooled activations beside the penultimate ones), reference = test split",
            "cpu_budget_s_per_run": args.cpu_budget_s, "wall_budget_s_per_run": args.wall_budget_s,
            "samples": n, "trainer": args.trainer, "seed": args.seed,
            "model": "dcgan (conf/model/dcgan.yaml defaults)", "torch": torch.__version__,
            "cpu_threads_per_run": args.threads, "runs_in_parallel": args.parallel, "machine": platform.processor() or platform.machine(),
        },
        "feature_net_test_accuracy": feature_net_accuracy(net),
        "real_vs_real": floor,
        "runs": {},
    }
    print(f"real-vs-real floor: FID {floor['fid']:.2f}, within-class diversity {floor['within_class_diversity']:.2f}",
          flush=True)

    plan = [(loss, False) for loss in args.losses] + [(loss, True) for loss in args.conditional_losses]
    runs = {(f"{loss}_conditional" if conditional else loss): (loss, conditional) for loss, conditional in plan}
    run_dirs = {name: Path(args.runs_dir) / f"{name}_{args.trainer}_{size}px" for name in runs}
    print(f"training {', '.join(runs)} for {args.cpu_budget_s} CPU seconds each, {args.parallel} at a time ...",
          flush=True)
    load_before = os.getloadavg()[0]
    # Each run's budget is its own process's CPU time, so running several at once changes no run's budget.
    def train_or_reuse(name: str) -> float | None:
        summary = run_dirs[name] / "summary.json"
        if args.reuse and summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
            return None  # --reuse: score the finished run again without training it again
        return train(*runs[name], args, run_dirs[name])

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        walls = dict(zip(runs, pool.map(train_or_reuse, runs)))

    load_after = os.getloadavg()[0]
    rows = {}
    for name, (loss, conditional) in runs.items():
        run_dir, wall = run_dirs[name], walls[name]
        task = load_task(run_dir, prefer="last")
        asked = task.default_labels(n)  # conditional: classes 0, 1, 2, ... in turn; else None
        cpu = time.process_time()
        fakes = task.draw(n, seed=args.seed + 1).cpu()
        cpu = time.process_time() - cpu  # sampling cost in CPU seconds, comparable with bench_diffusion's
        metrics = sample_metrics(fakes, reference, net, None if asked is None else asked.cpu())
        record = json.loads((run_dir / "summary.json").read_text())
        throughput = logged_scalars(run_dir, "train/samples_per_sec")
        results["runs"][name] = {
            **metrics, "loss": loss, "conditional": conditional,
            "train_images_per_s": statistics.median(throughput) if throughput else None,
            "images_per_cpu_s": n / cpu if cpu > 0 else None,
            "generator_steps": record["steps"], "d_steps_per_g_step": task.d_steps,
            "status": record["status"], "wall_s": None if wall is None else round(wall, 1), "run_dir": str(run_dir.resolve().relative_to(REPO)),
            # other jobs on the machine (1-minute load average, before and after training) make wall time noisy
            "load_average": [round(load_before, 2), round(load_after, 2)],
        }
        extra = (f", asked-for class {metrics['asked_for_class_rate']:.3f}, within asked-for class "
                 f"{metrics['within_class_diversity_asked']:.2f}") if conditional else ""
        print(f"  {name}: FID {metrics['fid']:.2f}, classes {metrics['classes_covered']:.0f}, "
              f"within-class diversity {metrics['within_class_diversity']:.2f}{extra}, "
              f"{results['runs'][name]['train_images_per_s'] or 0:.0f} images/s, {record['steps']} G steps", flush=True)
        if conditional:  # columns are classes: three different draws of each digit
            three_of_each = task.draw(3 * task.num_classes, seed=args.seed).cpu()
            rows[f"loss={loss}, conditional"] = make_grid(three_of_each, nrow=task.num_classes, padding=1, pad_value=0.5)
        else:
            rows[f"loss={loss}"] = make_grid(task.draw(16, seed=args.seed).cpu(), nrow=16, padding=1, pad_value=0.5)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    figure = labelled_rows(rows)
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
