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
    python scripts/bench_diffusion.py --loss eps --no-conditional --samplers DDIM-50 DPM-Solver++-20 \
        --no-figures --out scripts/results/bench_diffusion_eps.json   # another objective, a few samplers

The GAN's row at the same budget comes from `python scripts/bench_gan.py --losses ns
--conditional-losses --samples 500 --runs-dir outputs/bench_gan_500 --out
scripts/results/bench_gan_ns_500.json`, copied in (`--gan-results`) when its n and reference match.

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


def gan_rows(path: Path, n: int, floor: dict) -> dict | None:
    """bench_gan's rows, if that run scored as many samples against the same reference (same floor)."""
    if not path.is_file():
        return None
    gan = json.loads(path.read_text())
    same_floor = abs(gan["real_vs_real"]["fid"] - floor["fid"]) < 1e-6
    if gan["setup"]["samples"] != n or not same_floor:
        print(f"  {path.name}: another n or reference (floor FID {gan['real_vs_real']['fid']:.2f}); not copied")
        return None
    return {"source": str(path.relative_to(REPO)), "cpu_budget_s_per_run": gan["setup"]["cpu_budget_s_per_run"],
            "runs": gan["runs"]}


def objectives_figure(args: argparse.Namespace) -> None:
    """The same seeds through each objective's model: how eps, x0 and v look after the same budget."""
    rows = {}
    for loss in args.objectives_figure:
        task = load_task(Path(args.runs_dir) / f"unconditional_{loss}", prefer="last")
        for sampler, steps in (("ddim", 50), ("dpm_solver", 20)):
            images = task.draw(16, seed=args.seed + 1, sampler=sampler, steps=steps).cpu()
            rows[f"loss={loss}, {sampler}-{steps}"] = make_grid(images, nrow=16, padding=1, pad_value=0.5)
    figure = labelled_rows(rows)
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(REPO / "docs" / "diffusion_objectives.png")
    print("wrote docs/diffusion_objectives.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-budget-s", type=int, default=280, help="training CPU seconds per model (bench_gan's)")
    parser.add_argument("--decay-steps", type=int, default=800, help="lr cosine length: about the steps the budget allows")
    parser.add_argument("--loss", default="v", help="eps | x0 | v (the task default: v)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3, help="processes that draw each sampler's images")
    parser.add_argument("--samples", type=int, default=500,
                        help="images per sampler (at most the test split's size; DDPM-1000 costs ~2 CPU s each)")
    parser.add_argument("--samplers", nargs="*", default=None, help="score only these rows (e.g. DDIM-50)")
    parser.add_argument("--spacing", default=None, help="levels visited by the fast samplers; default: the model's")
    parser.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                        help="clip each step's predicted x0 to [-1, 1]; default: the model's setting")
    parser.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=True,
                        help="also train and score the class-conditional model (guidance)")
    parser.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                        help="write docs/diffusion_*.png")
    parser.add_argument("--gan-results", default=str(REPO / "scripts" / "results" / "bench_gan_ns_500.json"),
                        help="bench_gan's JSON at the same budget and n: its rows are copied beside the samplers")
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="DDPM's steps (T for the real thing)")
    parser.add_argument("--guidance", type=float, nargs="*", default=[1.0, 3.0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true", help="score the runs already in --runs-dir")
    parser.add_argument("--runs-dir", default=str(REPO / "outputs" / "bench_diffusion"))
    parser.add_argument("--objectives-figure", nargs="*", default=None, metavar="LOSS",
                        help="only draw docs/diffusion_objectives.png: a row per objective's trained unconditional "
                             "model (e.g. v eps x0), each with DDIM-50 and DPM-Solver++-20 at its default clipping")
    parser.add_argument("--out", default=str(REPO / "scripts" / "results" / "bench_diffusion.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MIMICRY_FEATURE_NETS", str(REPO / "outputs" / "feature_nets"))
    if args.objectives_figure:
        objectives_figure(args)
        return

    data = MNISTDataModule(root=args.data_root, source_split="test", download=False, value_range="signed")
    data.setup()
    test = data.test_images()[: args.samples]  # the reference: no training (model or feature net) saw it
    n = len(test)
    net = load_feature_net(data, accelerator="cpu")
    reference = extract(test, net)
    floor = sample_metrics((data.train_images()[:n] + 1) / 2, reference, net)  # real training images, same n

    names = ("unconditional", "conditional") if args.conditional else ("unconditional",)
    runs = {name: Path(args.runs_dir).resolve() / f"{name}_{args.loss}" for name in names}
    if not args.skip_training:
        for run_dir in runs.values():
            run_dir.parent.mkdir(parents=True, exist_ok=True)
        print(f"training {' and '.join(runs)} for {args.cpu_budget_s} CPU seconds each, side by side ...", flush=True)
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
            "steps": record.get("steps"), "status": record["status"], "val_loss": record.get("metrics", {}).get("val/loss"),
            "train_images_per_s": statistics.median(throughput) if throughput else None,
            "run_dir": str(run_dir.relative_to(REPO)),
        }
    print(f"real-vs-real floor (n={n}): FID {floor['fid']:.2f}; trained: {results['training']}", flush=True)

    # ---- samplers on the unconditional model -------------------------------------------------------
    task = load_task(runs["unconditional"], prefer="last")
    # Every row follows the sampler unclipped (task.clip_denoised=false, the default); the ", clip"
    # rows show what clipping each step's x0̂ to [-1, 1] does.
    samplers = {
        f"DDPM-{args.ddpm_steps}": {"sampler": "ddpm", "steps": args.ddpm_steps, "clip": False},
        "DDIM-50": {"sampler": "ddim", "steps": 50, "clip": False},
        "DDIM-50-eta1": {"sampler": "ddim", "steps": 50, "eta": 1.0, "clip": False},  # stochastic: DDPM on 50 levels
        "DDIM-20": {"sampler": "ddim", "steps": 20, "clip": False},
        "DDIM-10": {"sampler": "ddim", "steps": 10, "clip": False},
        "DPM-Solver++-20": {"sampler": "dpm_solver", "steps": 20, "clip": False},
        "DPM-Solver++-10": {"sampler": "dpm_solver", "steps": 10, "clip": False},
        "DDIM-50, clip": {"sampler": "ddim", "steps": 50, "clip": True},
        "DPM-Solver++-20, clip": {"sampler": "dpm_solver", "steps": 20, "clip": True},
    }
    if args.samplers:
        unknown = set(args.samplers) - set(samplers)
        if unknown:
            raise SystemExit(f"--samplers: unknown {sorted(unknown)}; choose from {list(samplers)}")
        samplers = {name: options for name, options in samplers.items() if name in args.samplers}
    chosen = {**({"spacing": args.spacing} if args.spacing else {}), **({} if args.clip is None else {"clip": args.clip})}
    samplers = {name: {**options, **chosen} for name, options in samplers.items()}
    results["setup"]["spacing"] = args.spacing or task.hparams.spacing
    results["setup"]["clip"] = task.hparams.clip_denoised if args.clip is None else args.clip
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
        rows[name] = make_grid(fakes[:16], nrow=16, padding=1, pad_value=0.5)  # the same seeds in every row
    gan = gan_rows(Path(args.gan_results), n, floor)
    if gan:
        results["gan_same_budget"] = gan
    figures = REPO / "docs"
    if args.figures:
        figures.mkdir(exist_ok=True)
        figure = labelled_rows(rows)
        figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(figures / "diffusion_samplers.png")
        trajectory = task.trajectory_image(args.seed, rows=6, sampler="ddim", steps=50)
        Image.fromarray(trajectory.mul(255).round().byte().permute(1, 2, 0).numpy()).save(
            figures / "diffusion_trajectory.png")

    # ---- guidance on the conditional model --------------------------------------------------------
    conditional = load_task(runs["conditional"], prefer="last") if args.conditional else None
    asked = conditional.default_labels(n).cpu() if conditional else None  # classes 0, 1, 2, ... in turn
    rows = {}
    guided = [(scale, False) for scale in args.guidance] + [(scale, True) for scale in args.guidance if scale != 1]
    for scale, clip in guided if conditional else []:
        options = {"sampler": "dpm_solver", "steps": 20, "guidance": scale, "clip": clip, **chosen}
        name = f"{scale:g}" + (", clip" if clip else "")
        fakes, cpu, wall = timed_draw(conditional, n, args.seed + 1, args.workers, labels=asked, **options)
        metrics = sample_metrics(fakes, reference, net, asked)
        results["guidance"][name] = {**metrics, **options, "images_per_cpu_s": n / cpu}
        print(f"  conditional, guidance {name}: asked-for class {metrics['asked_for_class_rate']:.3f}, within "
              f"asked-for class diversity {metrics['within_class_diversity_asked']:.2f} (real: 1), FID "
              f"{metrics['fid']:.2f}", flush=True)
        rows[f"guidance={name}"] = make_grid(conditional.draw(30, seed=args.seed, **options).cpu(), nrow=10,
                                                padding=1, pad_value=0.5)
    if rows and args.figures:
        figure = labelled_rows(rows)
        figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(figures / "diffusion_guidance.png")

    scored = results["samplers"]
    ddpm, ddim50, fast20 = (scored.get(k) for k in (f"DDPM-{args.ddpm_steps}", "DDIM-50", "DPM-Solver++-20"))
    results["summary"] = {}
    if ddpm and ddim50:
        results["summary"]["ddim50_speedup_over_ddpm"] = ddim50["images_per_cpu_s"] / ddpm["images_per_cpu_s"]
        results["summary"]["ddim50_fid_vs_ddpm"] = ddim50["fid"] / ddpm["fid"]
    if ddpm and scored.get("DDIM-50-eta1"):
        stochastic = scored["DDIM-50-eta1"]
        results["summary"]["ddim50_eta1_speedup_over_ddpm"] = stochastic["images_per_cpu_s"] / ddpm["images_per_cpu_s"]
        results["summary"]["ddim50_eta1_fid_vs_ddpm"] = stochastic["fid"] / ddpm["fid"]
    if ddim50 and fast20:
        results["summary"]["dpm_solver20_fid_vs_ddim50"] = fast20["fid"] / ddim50["fid"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(f"wrote {args.out}" + (" and docs/diffusion_{samplers,guidance,trajectory}.png" if args.figures else ""))


if __name__ == "__main__":
    main()
