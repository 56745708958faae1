"""GPU benchmark, one command: each task's GPU preset through `mimicry train trainer=gpu` (bf16
mixed precision) for a fixed wall time, then its throughput, peak GPU memory, MFU (lm) and metric.

    python scripts/bench_gpu.py                          # every task, 120 s each, on the CUDA GPU
    python scripts/bench_gpu.py --tasks lm --lm-full     # nanoGPT's shakespeare-char run to 5,000 iterations
    python scripts/bench_gpu.py --trainer cpu --seconds 20 --tasks gan rl   # the script itself, on a CPU

What each row holds: throughput is the training clock only (train/<unit>_per_sec, median of the
logged values; rollout/env_steps_per_sec for rl, acting and learning), peak memory is
train/peak_memory_gb (torch.cuda.max_memory_allocated), MFU is nanoGPT's estimate
(6·N + 12·L·d·T FLOPs per token, against --peak-tflops), and the metric is the task's monitored
one at the end of the run. The LM anchor: nanoGPT's config reaches val loss 1.4697 after 5,000
iterations in about 3 minutes on one A100 (--lm-full runs exactly that). → scripts/results/bench_gpu.json
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

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mimicry.run_reading import scalar_curves  # noqa: E402

MNIST = ["data=mnist", "data.source_split=test"]
# The GPU presets: the defaults, on the offline MNIST split, with batches that fill a GPU better.
PRESETS = {
    "lm": (["experiment=lm_shakespeare_gpu"], "tokens"),
    "image_ar": (["task=image_ar", *MNIST, "data.batch_size=128", "model.n_layer=6", "model.n_embd=256",
                  "model.n_head=8"], "tokens"),
    "diffusion": (["task=diffusion", "model=unet_mnist", *MNIST, "data.batch_size=256"], "samples"),
    "gan": (["task=gan", *MNIST, "data.batch_size=256"], "samples"),
    "classifier": (["task=classifier", *MNIST, "data.batch_size=512"], "samples"),
    "rl": (["task=rl", "algo=ppo", "task.stop_at_return=null"], "env_steps"),
}


def lm_flops_per_token(run_dir: Path, model: dict) -> float:
    """nanoGPT's estimate: 6 FLOPs per weight per token (forward and backward), plus attention."""
    import torch

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    weights = sum(t.numel() for name, t in state.items()  # lm_head is tied to the token embedding
                  if not name.endswith(("position_embedding.weight", "lm_head.weight")))
    return 6 * weights + 12 * model["n_layer"] * model["n_embd"] * model["block_size"]


def run_task(task: str, seconds: float, trainer: str, data_root: str, workdir: Path, extra: list[str],
             peak_tflops: float) -> dict:
    overrides, unit = PRESETS[task]
    run_dir = workdir / task
    limit = [] if extra and any(a.startswith("trainer.max_") for a in extra) else \
        [f"trainer.max_time=00:00:{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"]
    if task == "rl":  # PPO counts env steps; a budget far beyond the wall time, which stops it
        limit += ["task.total_env_steps=100000000"]
    data = [] if task == "rl" else [f"data.root={data_root}"]  # CartPole reads no data folder
    args = [sys.executable, "-m", "mimicry.cli", "train", *overrides, f"trainer={trainer}", *data,
            *limit, *extra, f"hydra.run.dir={run_dir}", "callbacks.progress=null"]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return {"task": task, "status": "failed", "error": result.stderr[-2000:]}
    summary = json.loads((run_dir / "summary.json").read_text())
    curves = scalar_curves(run_dir)
    speed_tag = "rollout/env_steps_per_sec" if task == "rl" else f"train/{unit}_per_sec"
    speeds = curves[speed_tag].values.tolist() if speed_tag in curves else []
    memory = curves["train/peak_memory_gb"].values.tolist() if "train/peak_memory_gb" in curves else []
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    monitor = config.get("monitor") or ("val/fid" if task == "gan" else None)
    row = {"task": task, "status": summary["status"], "overrides": overrides, "wall_s": round(wall, 1),
           "steps": summary.get("steps"), f"{unit}_per_sec": round(statistics.median(speeds), 1) if speeds else None,
           "peak_memory_gb": round(max(memory), 2) if memory else None,
           "metric": monitor, "value": summary.get("metrics", {}).get(monitor)}
    if task == "lm" and speeds:
        flops = lm_flops_per_token(run_dir, config["model"])
        row["mfu"] = round(flops * row["tokens_per_sec"] / (peak_tflops * 1e12), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--seconds", type=float, default=120, help="wall time of each task's training")
    parser.add_argument("--trainer", default="gpu", help="gpu (bf16-mixed), or cpu to try the script")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--lm-full", action="store_true", help="lm: nanoGPT's whole 5,000 iterations, no time limit")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(REPO / "scripts/results/bench_gpu.json"))
    args = parser.parse_args()
    workdir = Path(args.workdir or f"/tmp/bench_gpu_{int(time.time())}")
    workdir.mkdir(parents=True, exist_ok=True)
    device = "cpu"
    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    elif args.trainer != "cpu":
        raise SystemExit("no CUDA GPU here: run on a GPU machine, or try the script with --trainer cpu")
    rows = []
    for task in args.tasks:
        extra = ["trainer.max_steps=5000", "trainer.max_time=null"] if task == "lm" and args.lm_full else []
        row = run_task(task, args.seconds, args.trainer, args.data_root, workdir, extra, args.peak_tflops)
        rows.append(row)
        print(json.dumps(row), flush=True)
        results = {"device": device, "trainer": args.trainer, "seconds_per_task": args.seconds,
                   "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__, "rows": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))  # a killed benchmark keeps the rows it finished
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
