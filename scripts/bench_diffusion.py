"""Benchmark the diffusion samplers on MNIST under the GAN benchmark's CPU budget: feature-net FID,
class coverage and confidence, images per CPU second for DDPM-1000, DDIM-50/20/10 and DPM-Solver++ 2M; and a
class-conditional model: does classifier-free guidance draw the asked-for digit, and many different ones?

Two models train with `mimicry train task=diffusion model=unet_mnist` (the real command) for the same
budget of CPU seconds as scripts/bench_gan.py (process time; one thread, since on a shared, busy CPU
a second thread mostly spins): one unconditional, one conditional (label dropout 0.1). Afterwards the
unconditional model's EMA draws the same `--samples` seeds with each sampler; the offline feature net
(fitted on the training split only) scores them against the held-out test split, beside a floor of
as many real training images. All samplers use the same n, so their FIDs compare.

    python scripts/bench_diffusion.py                            # offline: MNIST test split from ../shared/data
    python scripts/bench_diffusion.py --samples 300 --ddpm-steps 1000
    python scripts/bench_diffusion.py --skip-training            # re-score the models trained last time

Writes scripts/results/bench_diffusion.json, docs/diffusion_samplers.png (a row of the same seeds per
sampler), docs/diffusion_guidance.png (columns are the asked-for classes) and docs/diffusion_trajectory.png.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_gan import labelled_rows, logged_scalars, sample_metrics  # noqa: E402  (the same metrics and figure)
from mimicry.checkpoints import load_task  # noqa: E402
from mimicry.data.images import MNISTDataModule  # noqa: E402
from mimicry.metrics.feature_net import feature_net_accuracy, load_feature_net  # noqa: E402
from mimicry.metrics.image_quality import extract  # noqa: E402


def train(conditional: bool, args: argparse.Namespace, run_dir: Path) -> subprocess.Popen:
    """Start one `mimicry train task=diffusion` run, stopped by the CPU budget (bench_gan's callback)."""
    command = [
        sys.executable, "-m", "mimicry.cli", "train", "task=diffusion", "model=unet_mnist", f"loss={args.loss}",
        "data=mnist", f"data.root={args.data_root}", "data.source_split=test", "data.download=false",
        f"task.conditional={str(conditional).lower()}", "trainer=cpu", "trainer.max_epochs=-1",
        "+callbacks.budget._target_=bench_gan.CPUTimeBudget", f"+callbacks.budget.seconds={args.cpu_budget_s}",
        # nothing but training inside the budget: samples and metrics come afterwards, the same for all
        "task.metrics_every_n_epochs=0", "task.sample_every_n_steps=0", "task.trajectory_rows=0",
        f"optim.decay_steps={args.decay_steps}", f"seed={args.seed}", f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    log = open(run_dir.with_suffix(".log"), "w")
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


_TASK = None  # the model being sampled, shared with forked workers


def _draw_chunk(n: int, seed: int, labels: torch.Tensor | None, options: dict) -> tuple[torch.Tensor, float]:
    torch.set_num_threads(1)
    cpu = time.process_time()
    images = _TASK.draw(n, seed, labels, **options).cpu()
    return images, time.process_time() - cpu


def timed_draw(task, n: int, seed: int, workers: int, labels: torch.Tensor | None = None,
               **options) -> tuple[torch.Tensor, float, float]:
    """(images, CPU seconds summed over workers, wall seconds). The n images are drawn in `workers`
    forked processes, chunk i from seed + 1000·i: the same chunks and seeds for every sampler."""
    global _TASK
    _TASK = task
    chunks = [len(c) for c in torch.arange(n).chunk(workers)]
    starts = [sum(chunks[:i]) for i in range(len(chunks))]
    wall = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context("fork")) as pool:
        jobs = [pool.submit(_draw_chunk, size, seed + 1000 * i, None if labels is None else labels[start:start + size],
                            options) for i, (size, start) in enumerate(zip(chunks, starts))]
        done = [job.result() for job in jobs]
    return torch.cat([images for images, _ in done]), sum(cpu for _, cpu in done), time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-budget-s", type=int, default=280, help="training CPU seconds per model (bench_gan's)")
    parser.add_argument("--decay-steps", type=int, default=800, help="lr cosine length: about the steps the budget allows")
    parser.add_argument("--loss", default="v", help="eps | x0 | v (the task default: v)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3, help="processes that draw each sampler's images")
    parser.add_argument("--samples", type=int, default=1000, help="images per sampler (at most the test split's size)")
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="DDPM's steps (T for the real thing)")
    parser.add_argument("--guidance", type=float, nargs="*", default=[1.0, 3.0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true", help="score the runs already in outputs/bench_diffusion")
    parser.add_argument("--out", default=str(REPO / "scripts" / "results" / "bench_diffusion.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MIMICRY_FEATURE_NETS", str(REPO / "outputs" / "feature_nets"))

    data = MNISTDataModule(root=args.data_root, source_split="test", download=False, value_range="signed")
    data.setup()
    test = data.test_images()[: args.samples]  # the reference: no training (model or feature net) saw it
    n = len(test)
    net = load_feature_net(data, accelerator="cpu")
    reference = extract(test, net)
    floor = sample_metrics((data.train_images()[:n] + 1) / 2, reference, net)  # real training images, same n

    runs = {name: REPO / "outputs" / "bench_diffusion" / f"{name}_{args.loss}" for name in ("unconditional", "conditional")}
    if not args.skip_training:
        for run_dir in runs.values():
            run_dir.parent.mkdir(parents=True, exist_ok=True)
        print(f"training both models for {args.cpu_budget_s} CPU seconds each, side by side ...", flush=True)
        started = time.perf_counter()
        processes = {name: train(name == "conditional", args, run_dir) for name, run_dir in runs.items()}
        for name, process in processes.items():
            if process.wait() != 0:
                raise RuntimeError(f"training the {name} model failed: see {runs[name].with_suffix('.log')}")
        print(f"  trained in {time.perf_counter() - started:.0f} s wall", flush=True)

    results: dict = {
        "setup": {
            "data": f"MNIST test split cut three ways: {len(data.train_images())} train / {len(data.val_images())} "
                    f"validation / {len(data.test_images())} test (the reference), 28x28",
            "cpu_budget_s_per_model": args.cpu_budget_s, "samples_per_sampler": n, "loss": args.loss,
            "model": "unet_mnist (conf/model/unet_mnist.yaml), cosine schedule, T=1000, EMA 0.999 with warm-up",
            "threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "seed": args.seed,
        },
        "feature_net_test_accuracy": feature_net_accuracy(net),
        "real_vs_real": floor,
        "training": {},
        "samplers": {},
        "guidance": {},
    }
    for name, run_dir in runs.items():
        record = json.loads((run_dir / "summary.json").read_text())
        throughput = logged_scalars(run_dir, "train/samples_per_sec")
        results["training"][name] = {
            "steps": record["steps"], "status": record["status"], "val_loss": record["metrics"].get("val/loss"),
            "train_images_per_s": statistics.median(throughput) if throughput else None,
            "run_dir": str(run_dir.relative_to(REPO)),
        }
    print(f"real-vs-real floor (n={n}): FID {floor['fid']:.2f}; trained: {results['training']}", flush=True)

    # ---- samplers on the unconditional model -------------------------------------------------------
    task = load_task(runs["unconditional"], prefer="last")
    samplers = {
        f"DDPM-{args.ddpm_steps}": {"sampler": "ddpm", "steps": args.ddpm_steps},
        "DDIM-50": {"sampler": "ddim", "steps": 50},
        "DDIM-20": {"sampler": "ddim", "steps": 20},
        "DDIM-10": {"sampler": "ddim", "steps": 10},
        "DPM-Solver++-20": {"sampler": "dpm_solver", "steps": 20},
        "DPM-Solver++-10": {"sampler": "dpm_solver", "steps": 10},
    }
    rows = {}
    for name, options in samplers.items():
        fakes, cpu, wall = timed_draw(task, n, args.seed + 1, args.workers, **options)
        metrics = sample_metrics(fakes, reference, net)
        # On a shared CPU, wall time measures the neighbours; images per CPU second is the model's speed.
        results["samplers"][name] = {**metrics, **options, "images_per_cpu_s": n / cpu,
                                     "images_per_s_wall": n / wall, "workers": args.workers,
                                     "load_average": round(os.getloadavg()[0], 2)}
        print(f"  {name}: FID {metrics['fid']:.2f}, classes {metrics['classes_covered']:.0f}, confidence "
              f"{metrics['confidence']:.3f}, {n / cpu:.1f} images per CPU second ({n / wall:.1f}/s wall, "
              f"{args.workers} processes)", flush=True)
        rows[name] = make_grid(task.draw(16, seed=args.seed, **options).cpu(), nrow=16, padding=1, pad_value=0.5)
    figures = REPO / "docs"
    figures.mkdir(exist_ok=True)
    figure = labelled_rows(rows)
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(figures / "diffusion_samplers.png")
    trajectory = task.trajectory_image(args.seed, rows=6, sampler="ddim", steps=50)
    Image.fromarray(trajectory.mul(255).round().byte().permute(1, 2, 0).numpy()).save(figures / "diffusion_trajectory.png")

    # ---- guidance on the conditional model --------------------------------------------------------
    conditional = load_task(runs["conditional"], prefer="last")
    asked = conditional.default_labels(n).cpu()  # classes 0, 1, 2, ... in turn
    rows = {}
    for scale in args.guidance:
        options = {"sampler": "dpm_solver", "steps": 20, "guidance": scale}
        fakes, cpu, wall = timed_draw(conditional, n, args.seed + 1, args.workers, labels=asked, **options)
        metrics = sample_metrics(fakes, reference, net, asked)
        results["guidance"][f"{scale:g}"] = {**metrics, **options, "images_per_cpu_s": n / cpu}
        print(f"  conditional, guidance {scale:g}: asked-for class {metrics['asked_for_class_rate']:.3f}, within "
              f"asked-for class diversity {metrics['within_class_diversity_asked']:.2f} (real: 1), FID "
              f"{metrics['fid']:.2f}", flush=True)
        rows[f"guidance={scale:g}"] = make_grid(conditional.draw(30, seed=args.seed, **options).cpu(), nrow=10,
                                                padding=1, pad_value=0.5)
    figure = labelled_rows(rows)
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(figures / "diffusion_guidance.png")

    ddpm, ddim50 = results["samplers"][f"DDPM-{args.ddpm_steps}"], results["samplers"]["DDIM-50"]
    results["summary"] = {
        "ddim50_speedup_over_ddpm": ddim50["images_per_cpu_s"] / ddpm["images_per_cpu_s"],
        "ddim50_fid_vs_ddpm": ddim50["fid"] / ddpm["fid"],
        "dpm_solver20_fid_vs_ddim50": results["samplers"]["DPM-Solver++-20"]["fid"] / ddim50["fid"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {args.out} and docs/diffusion_{{samplers,guidance,trajectory}}.png")


if __name__ == "__main__":
    main()
