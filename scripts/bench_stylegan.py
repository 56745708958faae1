"""Benchmark model=stylegan against the DCGAN at the same CPU budget, on MNIST and on data=shapes.

Each run is `mimicry train task=gan model=M data=D` with the defaults of both (loss=ns, the DCGAN
discriminator with spectral norm for both generators), stopped after a fixed number of CPU
seconds (process time: on a shared machine fairer than wall time). The last checkpoint's EMA
generator then draws fixed-seed samples that the offline feature net (fitted on the training split
only) compares with the held-out *test* split: FID and KID, classes covered; on shapes also the
share of samples whose shape and colour the shape reader reads with confidence (`shapes_read`;
mimicry/metrics/shape_reader.py). The StyleGAN is scored twice: untruncated and at psi = 0.7 in W.
A real-vs-real floor (as many training images against the same test images) says what a perfect
imitator scores.

    python scripts/bench_stylegan.py                       # ~4 runs x --cpu-budget-s CPU seconds
    python scripts/bench_stylegan.py --cpu-budget-s 120 --datasets shapes --parallel 2

Writes scripts/results/bench_stylegan.json, docs/stylegan_samples.png (16 samples per run) and
docs/stylegan_mixing_<data>.png (the style-mixing grid of each StyleGAN run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_gan import labelled_rows, logged_scalars  # noqa: E402
from mimicry.checkpoints import load_task  # noqa: E402
from mimicry.data.images import MNISTDataModule  # noqa: E402
from mimicry.data.shapes import ShapesDataModule  # noqa: E402
from mimicry.metrics.feature_net import feature_net_accuracy, load_feature_net  # noqa: E402
from mimicry.metrics.image_quality import class_coverage, extract, fid_kid  # noqa: E402
from mimicry.metrics.shape_reader import share_read  # noqa: E402

MODELS = ("dcgan", "stylegan")


def datamodule(name: str, args: argparse.Namespace):
    if name == "mnist":  # offline: the MNIST test files cut three ways, as bench_gan does
        return MNISTDataModule(root=args.data_root, source_split="test", download=False, value_range="signed")
    return ShapesDataModule(value_range="signed")  # the defaults of conf/data/shapes.yaml


def train(model: str, data: str, args: argparse.Namespace, run_dir: Path) -> float:
    """One `mimicry train task=gan` run, stopped by the CPU budget; returns its wall time."""
    command = [sys.executable, "-m", "mimicry.cli", "train", "task=gan", f"model={model}", f"data={data}",
               "trainer.max_epochs=-1", "task.metrics_every_n_epochs=0",  # metrics come afterwards, alike for all
               "+callbacks.budget._target_=bench_gan.CPUTimeBudget", f"+callbacks.budget.seconds={args.cpu_budget_s}",
               f"seed={args.seed}", f"hydra.run.dir={run_dir}", *(args.stylegan_overrides if model == "stylegan" else [])]
    if data == "mnist":
        command += [f"data.root={args.data_root}", "data.source_split=test", "data.download=false"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"model={model} data={data} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def scores(fakes: torch.Tensor, reference: torch.Tensor, net: torch.nn.Module, shapes: bool) -> dict[str, float]:
    """FID/KID and class coverage of [0, 1] images against the reference features; shapes_read on shapes."""
    features, probs = extract(fakes, net, value_range="unit")
    fid, kid = fid_kid(reference, features)
    result = {"fid": fid, "kid": kid, **class_coverage(probs)}
    if shapes:
        result["shapes_read"] = share_read(fakes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["mnist", "shapes"])
    parser.add_argument("--cpu-budget-s", type=int, default=200, help="training CPU seconds per run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per training run")
    parser.add_argument("--parallel", type=int, default=2, help="training runs at a time")
    parser.add_argument("--reuse", action="store_true", help="score finished runs in --runs-dir again, untrained")
    parser.add_argument("--samples", type=int, default=1000, help="fakes per FID (at most the test split's size)")
    parser.add_argument("--truncation", type=float, default=0.7, help="psi of the StyleGAN's second scoring")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "scripts" / "results" / "bench_stylegan.json"))
    parser.add_argument("--docs", default=str(REPO / "docs"))
    parser.add_argument("--runs-dir", default=str(REPO / "outputs" / "bench_stylegan"))
    parser.add_argument("--stylegan-overrides", nargs="*", default=[],
                        help="extra overrides of the StyleGAN runs (recorded in the JSON), e.g. model.generator.width=32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MIMICRY_FEATURE_NETS", str(REPO / "outputs" / "feature_nets"))

    plan = [(model, data) for data in args.datasets for model in MODELS]
    run_dirs = {(m, d): Path(args.runs_dir) / f"{d}_{m}" for m, d in plan}

    def train_or_reuse(key: tuple[str, str]) -> float | None:
        summary = run_dirs[key] / "summary.json"
        if args.reuse and summary.is_file() and json.loads(summary.read_text()).get("status") == "completed":
            return None
        return train(*key, args, run_dirs[key])

    print(f"training {len(plan)} runs for {args.cpu_budget_s} CPU seconds each, {args.parallel} at a time ...",
          flush=True)
    load_before = os.getloadavg()[0]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        walls = dict(zip(plan, pool.map(train_or_reuse, plan)))
    load_after = os.getloadavg()[0]

    results: dict = {
        "setup": {
            "command": "mimicry train task=gan model={dcgan,stylegan} data={mnist,shapes} (all defaults: loss=ns, "
                       "lr 2e-4 for both networks, the DCGAN discriminator with spectral norm), stopped by CPU time",
            "cpu_budget_s_per_run": args.cpu_budget_s, "cpu_threads_per_run": args.threads,
            "runs_in_parallel": args.parallel, "seed": args.seed, "torch": torch.__version__,
            "stylegan_overrides": args.stylegan_overrides,
            "machine": platform.processor() or platform.machine(),
            "load_average": [round(load_before, 2), round(load_after, 2)],
            "metrics": "feature net of mimicry/metrics/feature_net.py fitted on each dataset's train split; "
                       "reference = its test split (no training saw it); shapes_read: mimicry/metrics/shape_reader.py",
        },
        "datasets": {},
    }
    rows: dict[str, torch.Tensor] = {}
    for data_name in args.datasets:
        data = datamodule(data_name, args)
        data.setup()
        test = (data.test_images()[: args.samples] + 1) / 2
        n, shapes = len(test), data_name == "shapes"
        net = load_feature_net(data, accelerator="cpu")
        reference, _ = extract(test, net, value_range="unit")
        record: dict = {"test_images": n, "feature_net_test_accuracy": feature_net_accuracy(net),
                        "real_vs_real": scores((data.train_images()[:n] + 1) / 2, reference, net, shapes), "runs": {}}
        print(f"{data_name}: real-vs-real FID {record['real_vs_real']['fid']:.2f}"
              + (f", shapes_read {record['real_vs_real']['shapes_read']:.3f}" if shapes else ""), flush=True)
        for model in MODELS:
            run_dir = run_dirs[(model, data_name)]
            task = load_task(run_dir, prefer="last")
            summary = json.loads((run_dir / "summary.json").read_text())
            throughput = logged_scalars(run_dir, "train/samples_per_sec")
            params = sum(p.numel() for p in task.generator.parameters())
            run = {"generator_steps": summary["steps"], "generator_parameters": params, "status": summary["status"],
                   "train_images_per_s_median": sorted(throughput)[len(throughput) // 2] if throughput else None,
                   "wall_s": None if walls[(model, data_name)] is None else round(walls[(model, data_name)], 1),
                   "run_dir": os.path.relpath(run_dir.resolve(), REPO),
                   **scores(task.draw(n, seed=args.seed + 1).cpu(), reference, net, shapes)}
            if model == "stylegan":
                run[f"truncation_{args.truncation:g}"] = scores(task.draw(n, seed=args.seed + 1, truncation=args.truncation).cpu(),
                                                                reference, net, shapes)
                save_image(task.style_mixing_grid(args.seed), Path(args.docs) / f"stylegan_mixing_{data_name}.png")
            record["runs"][model] = run
            print(f"  {model}: FID {run['fid']:.2f}, classes {run['classes_covered']:.0f}"
                  + (f", shapes_read {run['shapes_read']:.3f}" if shapes else "")
                  + f", {summary['steps']} G steps, {params} G parameters", flush=True)
            rows[f"{data_name}: {model}"] = make_grid(task.draw(16, seed=args.seed).cpu(), nrow=16, padding=1, pad_value=0.5)
        results["datasets"][data_name] = record

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    figure = labelled_rows(rows)
    figure.resize((figure.width * 2, figure.height * 2), Image.NEAREST).save(Path(args.docs) / "stylegan_samples.png")
    print(f"wrote {args.out} and {args.docs}/stylegan_*.png")


if __name__ == "__main__":
    main()
