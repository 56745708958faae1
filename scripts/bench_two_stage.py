"""Benchmark the two-stage generators against their one-stage counterparts at one CPU budget:
image_ar on a VQ-VAE's codes (Taming) vs image_ar on pixel levels and on k-means patch codes, and
latent diffusion on a KL autoencoder's latents (Stable Diffusion) vs diffusion on pixels, with a
GAN (`task=gan`, default DCGAN, loss ns) beside them: feature-net FID, class coverage, confidence,
images per CPU second of sampling.

Every run is the real command (`mimicry train ...`), one thread, stopped after `--cpu-budget-s`
CPU seconds of training (process time: bench_gan's callback; the learning rate stays flat after its
warmup, since the number of steps is not known in advance). First the two autoencoders train (same
budget each), then the six second-stage and one-stage models side by side. The autoencoder's budget
is *not* counted in its second stage's: the table says so. Afterwards each model's last checkpoint
draws the same `--samples` seeds, scored by the offline feature net (fitted on the training split
only) against as many held-out test images (raw, as the GAN's are), beside a floor of as many real
training images and each autoencoder's reconstructions of the training images (what a perfect
second stage would score through that autoencoder).

    python scripts/bench_two_stage.py --data digits --cpu-budget-s 60
    python scripts/bench_two_stage.py --data mnist --cpu-budget-s 120 --samples 300
    python scripts/bench_two_stage.py --data mnist --skip-training       # re-score the runs of last time

Writes scripts/results/bench_two_stage_<data>.json and docs/two_stage_<data>.png (16 samples per row).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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

from bench_diffusion import timed_draw  # noqa: E402  (forked workers, the same chunks and seeds)
from bench_gan import labelled_rows, sample_metrics  # noqa: E402  (the same metrics and figure)
from mimicry.checkpoints import load_task  # noqa: E402
from mimicry.data.images import DigitsDataModule, MNISTDataModule  # noqa: E402
from mimicry.metrics.feature_net import feature_net_accuracy, load_feature_net  # noqa: E402
from mimicry.metrics.image_quality import extract  # noqa: E402

AUTOENCODERS = {"vq": ["task=autoencoder", "model=vqvae"], "kl": ["task=autoencoder", "model=kl_autoencoder"]}


def models(data: str, runs: Path) -> dict[str, list[str]]:
    """The compared runs: name → overrides (after the data's own)."""
    unet = "model=unet_mnist" if data == "mnist" else "model=unet"
    return {
        "gan (dcgan, ns)": ["task=gan"],
        "image_ar, pixels (16 levels)": ["task=image_ar"],
        "image_ar, k-means 2×2 patches": ["task=image_ar", "tokenizer=patches"],
        "image_ar, VQ-VAE codes": ["task=image_ar", "tokenizer=vq", f"tokenizer.from_run={runs / 'ae_vq'}"],
        "diffusion, pixels": ["task=diffusion", unet, "task.trajectory_rows=0"],
        "latent diffusion (KL latents)": ["task=diffusion", "model=unet_latent", "task.trajectory_rows=0",
                                          f"latent.from_run={runs / 'ae_kl'}"],
    }


def data_overrides(args: argparse.Namespace) -> list[str]:
    if args.data == "mnist":
        return ["data=mnist", f"data.root={args.data_root}", "data.source_split=test", "data.download=false"]
    return ["data=digits"]


def start(overrides: list[str], args: argparse.Namespace, run_dir: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "mimicry.cli", "train", *overrides, *data_overrides(args),
               "trainer=cpu", "trainer.max_epochs=-1", "+callbacks.budget._target_=bench_gan.CPUTimeBudget",
               f"+callbacks.budget.seconds={args.cpu_budget_s}",
               "task.metrics_every_n_epochs=0", "task.sample_every_n_steps=0",  # scored afterwards, all alike
               f"seed={args.seed}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(run_dir.with_suffix(".log"), "w")
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def train_all(jobs: dict[str, tuple[list[str], Path]], args: argparse.Namespace) -> None:
    started = time.perf_counter()
    processes = {name: start(overrides, args, run_dir) for name, (overrides, run_dir) in jobs.items()}
    for name, process in processes.items():
        if process.wait() != 0:
            raise RuntimeError(f"training {name} failed: see {jobs[name][1].with_suffix('.log')}")
    print(f"  trained {', '.join(jobs)} in {time.perf_counter() - started:.0f} s wall", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--cpu-budget-s", type=int, default=60, help="training CPU seconds per run (one thread)")
    parser.add_argument("--samples", type=int, default=None, help="draws per model (default: the test split, ≤ 500)")
    parser.add_argument("--workers", type=int, default=2, help="processes drawing each model's samples")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--runs-dir", default=None, help="default: outputs/bench_two_stage_<data>")
    parser.add_argument("--out", default=None, help="default: scripts/results/bench_two_stage_<data>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("MIMICRY_FEATURE_NETS", str(REPO / "outputs" / "feature_nets"))
    runs = Path(args.runs_dir or REPO / "outputs" / f"bench_two_stage_{args.data}").resolve()
    out = Path(args.out or REPO / "scripts" / "results" / f"bench_two_stage_{args.data}.json")

    if args.data == "mnist":
        data = MNISTDataModule(root=args.data_root, source_split="test", download=False, value_range="signed")
    else:
        data = DigitsDataModule(value_range="signed")
    data.setup()
    n = min(args.samples or 500, len(data.test_images()))
    test = data.test_images()[:n]  # the reference: no training (model or feature net) saw it
    net = load_feature_net(data, accelerator="cpu")
    reference = extract(test, net)
    train_images = (data.train_images()[:n] + 1) / 2
    floor = sample_metrics(train_images, reference, net)

    compared = models(args.data, runs)
    if not args.skip_training:
        print(f"training the autoencoders for {args.cpu_budget_s} CPU s each ...", flush=True)
        train_all({f"ae_{kind}": (overrides, runs / f"ae_{kind}") for kind, overrides in AUTOENCODERS.items()}, args)
        print(f"training {len(compared)} models for {args.cpu_budget_s} CPU s each, side by side ...", flush=True)
        train_all({name: (overrides, runs / f"run_{i}") for i, (name, overrides) in enumerate(compared.items())}, args)

    results: dict = {
        "setup": {"data": f"{args.data}: {len(data.train_images())} train / {len(data.val_images())} validation / "
                          f"{len(data.test_images())} test images, {data.spec()['image_size']}×{data.spec()['image_size']}",
                  "cpu_budget_s_per_run": args.cpu_budget_s, "samples": n, "threads_per_run": 1,
                  "lr": "each task's default, flat after warm-up (the budget fixes no step count)",
                  "autoencoder_budget": "each autoencoder trained for the same budget first, not counted in its "
                                        "second stage's",
                  "reference": "raw held-out test images (the first stage's reconstructions are not the reference)",
                  "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                  "load_average": round(os.getloadavg()[0], 2), "seed": args.seed},
        "feature_net_test_accuracy": feature_net_accuracy(net),
        "real_vs_real": floor, "autoencoders": {}, "runs": {},
    }
    rows = {"real test images": make_grid((test[:16] + 1) / 2, nrow=16, padding=1, pad_value=0.5)}
    for kind in AUTOENCODERS:
        task = load_task(runs / f"ae_{kind}", prefer="last")
        rebuilt = task.reconstruct(train_images)  # what a perfect second stage would draw through it
        record = json.loads((runs / f"ae_{kind}" / "summary.json").read_text())
        results["autoencoders"][kind] = {**sample_metrics(rebuilt, reference, net), "steps": record.get("steps"),
                                         "val_reconstruction": record.get("metrics", {}).get("val/reconstruction")}
        rows[f"AE {kind}: reconstructions"] = make_grid(task.reconstruct((test[:16] + 1) / 2), nrow=16, padding=1,
                                                        pad_value=0.5)
        print(f"  autoencoder {kind}: reconstructions FID {results['autoencoders'][kind]['fid']:.2f}", flush=True)
    for i, name in enumerate(compared):
        run_dir = runs / f"run_{i}"
        task = load_task(run_dir, prefer="last")
        fakes, cpu, wall = timed_draw(task, n, args.seed + 1, args.workers)
        metrics = sample_metrics(fakes, reference, net)
        record = json.loads((run_dir / "summary.json").read_text())
        results["runs"][name] = {**metrics, "images_per_cpu_s": n / cpu, "images_per_s_wall": n / wall,
                                 "steps": record.get("steps"), "overrides": compared[name],
                                 "run_dir": str(run_dir.relative_to(REPO)) if run_dir.is_relative_to(REPO) else str(run_dir)}
        print(f"  {name}: FID {metrics['fid']:.2f}, classes {metrics['classes_covered']:.0f}, confidence "
              f"{metrics['confidence']:.3f}, {n / cpu:.1f} images per CPU s, {record.get('steps')} steps", flush=True)
        rows[name] = make_grid(fakes[:16], nrow=16, padding=1, pad_value=0.5)  # the same seeds in every row
    gan = results["runs"]["gan (dcgan, ns)"]["fid"]
    codes = results["runs"]["image_ar, VQ-VAE codes"]
    results["targets"] = {
        "image_ar_codes_confidence_at_least_0.8": codes["confidence"] >= 0.8,
        "image_ar_codes_fid_at_most_2x_gan": codes["fid"] <= 2 * gan,
        "image_ar_codes_fid_over_gan": codes["fid"] / gan,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    figure = labelled_rows(rows)
    figure = figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST)
    (REPO / "docs").mkdir(exist_ok=True)
    figure.save(REPO / "docs" / f"two_stage_{args.data}.png")
    print(f"wrote {out} and docs/two_stage_{args.data}.png; targets: {results['targets']}")


if __name__ == "__main__":
    main()
