"""Benchmark: nanoGPT's CPU "baby GPT" on tinyshakespeare, through mimicry and through a plain loop.

    python scripts/bench_lm.py [--data-root ../shared/data] [--iters 2000] [--trainer cpu]

Reports val/loss after the run (nanoGPT: about 1.88 at 2000 iterations), training tokens/s through
`mimicry train` and through a plain PyTorch loop on the same model, batches, optimizer and clipping
(the framework's cost), and generation tokens/s for 500 new tokens with and without the KV cache.
Writes scripts/results/bench_lm.json.

The framework's cost is measured the same way on both sides, in the same sitting: `--repeats` runs
of each, alternating (mimicry, plain, mimicry, plain, ...), each timed by the wall clock over the
steady part of every epoch (from its first logging step to its last but one: every per-step cost
counts, data loading and logging included; validation, checkpoints and samples at the epoch's end do
not), and the median of each side compared. Target: mimicry within 3% of the plain loop.
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

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimicry.checkpoints import load_task  # noqa: E402
from mimicry.cuda_probe import drop_failing_nvml_probe  # noqa: E402
from mimicry.data.text import TextDataModule  # noqa: E402
from mimicry.models.gpt import GPT  # noqa: E402
from mimicry.tasks.base import build_optimizer  # noqa: E402

# The same settings as conf/experiment/lm_baby_gpt.yaml, for the plain loop.
BABY_GPT = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
OPTIM = dict(lr=1e-3, min_lr=1e-4, betas=[0.9, 0.99], weight_decay=0.1, warmup_steps=100, decay_steps=2000)
BATCH = 12


def log_every(iters: int) -> int:
    """50 steps (nanoGPT's eval cadence is coarser); at least 5 logging steps in each of the 8 epochs."""
    return max(1, min(50, iters // 8 // 5))


def mimicry_run(root: Path, iters: int, trainer: str, out: Path) -> tuple[Path, float]:
    """`mimicry train experiment=lm_baby_gpt`: 8 epochs of iters/8 steps, validated after each."""
    args = ["experiment=lm_baby_gpt", f"data.root={root}", f"trainer={trainer}", f"data.steps_per_epoch={iters // 8}",
            f"optim.decay_steps={iters}", "task.sample_every_n_steps=0", f"trainer.log_every_n_steps={log_every(iters)}"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mimicry.cli", "train", *args], cwd=out, check=True)
    wall = time.perf_counter() - start
    summary = max((out / "outputs").rglob("summary.json"), key=os.path.getmtime)
    return summary.parent, wall


def steady_tokens_per_sec(steps: list[int], walls: list[float], steps_per_epoch: int) -> float:
    """Tokens/s over the steady part of each epoch (its first logged step to its last but one, so that
    neither the epoch's start nor its end-of-epoch work is inside), summed over epochs."""
    tokens, seconds = 0, 0.0
    for epoch in range(max(steps) // steps_per_epoch + 1):
        inside = [(s, w) for s, w in zip(steps, walls) if epoch * steps_per_epoch <= s < (epoch + 1) * steps_per_epoch - 1]
        if len(inside) >= 2:
            (s0, w0), (s1, w1) = inside[0], inside[-1]
            tokens += (s1 - s0) * BATCH * BABY_GPT["block_size"]
            seconds += w1 - w0
    return tokens / seconds


def mimicry_tokens_per_sec(run_dir: Path, steps_per_epoch: int) -> float:
    """From the wall times of the run's train/loss events (written at each logging step)."""
    from mimicry.run_reading import scalar_curves

    curve = scalar_curves(run_dir, {"train/loss"})["train/loss"]
    return steady_tokens_per_sec([int(s) for s in curve.steps], [float(w) for w in curve.wall], steps_per_epoch)


def plain_loop(root: Path, iters: int, device: str) -> float:
    """The same model, batches, optimizer and clipping in a bare PyTorch loop, batches loaded as it
    goes, timed like the mimicry run (a wall-clock mark at each logging step); tokens/s."""
    torch.manual_seed(0)
    drop_failing_nvml_probe()  # what `mimicry train` does: both sides skip the same failing probe
    data = TextDataModule("tinyshakespeare", path="tinyshakespeare/input.txt", root=str(root),
                          block_size=BABY_GPT["block_size"], batch_size=BATCH, steps_per_epoch=iters // 8, seed=0)
    data.setup()
    model = GPT(vocab_size=data.tokenizer.vocab_size, **BABY_GPT).to(device)
    opt = build_optimizer(model.parameters(), OPTIM, iters)
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    loss_fn = torch.nn.CrossEntropyLoss()
    steps, walls, step = [], [], 0
    for _ in range(8):  # the same 8 epochs of iters/8 batches
        for tokens in data.train_dataloader():
            tokens = tokens.to(device)
            logits = model(tokens[:, :-1])
            loss = loss_fn(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if (step + 1) % log_every(iters) == 0:
                loss.item()  # what a logger does: waits for the step's result (on a GPU, a sync)
                steps.append(step)
                walls.append(time.time())
            step += 1
    return steady_tokens_per_sec(steps, walls, iters // 8)


def generation_speed(run_dir: Path, device: str, new_tokens: int = 500) -> dict:
    task = load_task(run_dir).to(device)
    result = {}
    for use_cache in (True, False):
        prompt = task.tokenizer.encode("ROMEO:\n").unsqueeze(0).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        start = time.perf_counter()
        out = task.model.generate(prompt, new_tokens, temperature=0.8, use_cache=use_cache, generator=gen)
        seconds = time.perf_counter() - start
        result["cache" if use_cache else "no_cache"] = new_tokens / seconds
        result.setdefault("sample", task.tokenizer.decode(out[0].cpu()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--trainer", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--out", default=str(REPO / "scripts" / "results"))
    args = parser.parse_args()
    root, out = Path(args.data_root).resolve(), Path(args.out)
    work = out / f"bench_lm_runs_{args.trainer}"
    work.mkdir(parents=True, exist_ok=True)
    device = "cuda" if args.trainer == "gpu" else "cpu"

    mimicry_runs, plain_runs, walls = [], [], []
    for repeat in range(args.repeats):  # alternating, so a slow minute of the machine hits both sides
        run_dir, wall = mimicry_run(root, args.iters, args.trainer, work)
        mimicry_runs.append(mimicry_tokens_per_sec(run_dir, args.iters // 8))
        walls.append(wall)
        plain_runs.append(plain_loop(root, args.iters, device))
        print(f"repeat {repeat}: mimicry {mimicry_runs[-1]:.0f}, plain loop {plain_runs[-1]:.0f} tokens/s", flush=True)
    mimicry_tps, plain_tps = statistics.median(mimicry_runs), statistics.median(plain_runs)
    summary = json.loads((run_dir / "summary.json").read_text())
    generation = generation_speed(run_dir, device)
    result = {
        "benchmark": "lm baby GPT, tinyshakespeare char-level",
        "settings": {**BABY_GPT, **OPTIM, "batch_size": BATCH, "iters": args.iters, "trainer": args.trainer},
        "val_loss": summary["metrics"]["val/loss"],
        "val_loss_reference_nanogpt": 1.88,
        "train_loss": summary["metrics"]["train/loss"],
        "train_tokens_per_sec_mimicry": round(mimicry_tps),
        "train_tokens_per_sec_plain_loop": round(plain_tps),
        "train_tokens_per_sec_mimicry_runs": [round(v) for v in mimicry_runs],
        "train_tokens_per_sec_plain_loop_runs": [round(v) for v in plain_runs],
        "framework_cost_pct": round(100 * (plain_tps / mimicry_tps - 1), 1),
        "framework_cost_target_pct": 3.0,
        "measured_as": f"median of {args.repeats} alternating runs each; wall clock over each epoch's steady part",
        "mimicry_wall_time_s": [round(w, 1) for w in walls],
        "generate_tokens_per_sec_kv_cache": round(generation["cache"]),
        "generate_tokens_per_sec_no_cache": round(generation["no_cache"]),
        "sample": generation["sample"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
        "run_dir": str(run_dir),
    }
    path = out / f"bench_lm{'_gpu' if args.trainer == 'gpu' else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "sample"}, indent=2))
    print("\nsample:\n" + result["sample"])
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
