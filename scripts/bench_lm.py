"""Benchmark: nanoGPT's CPU "baby GPT" on tinyshakespeare, through mimicry and through a plain loop.

    python scripts/bench_lm.py [--data-root ../shared/data] [--iters 2000] [--trainer cpu]

Reports val/loss after the run (nanoGPT: about 1.88 at 2000 iterations), training tokens/s through
`mimicry train` and through a plain PyTorch loop on the same model and batches (Lightning's
overhead), and generation tokens/s for 500 new tokens with and without the KV cache.
Writes scripts/results/bench_lm.json.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mimicry.checkpoints import load_task  # noqa: E402
from mimicry.data.text import TextDataModule  # noqa: E402
from mimicry.models.gpt import GPT  # noqa: E402
from mimicry.tasks.base import build_optimizer  # noqa: E402

# The same settings as conf/experiment/lm_baby_gpt.yaml, for the plain loop.
BABY_GPT = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
OPTIM = dict(lr=1e-3, min_lr=1e-4, betas=[0.9, 0.99], weight_decay=0.1, warmup_steps=100, decay_steps=2000)
BATCH = 12


def mimicry_run(root: Path, iters: int, trainer: str, out: Path) -> tuple[Path, float]:
    """`mimicry train experiment=lm_baby_gpt`: 8 epochs of iters/8 steps, validated after each."""
    args = ["experiment=lm_baby_gpt", f"data.root={root}", f"trainer={trainer}", f"data.steps_per_epoch={iters // 8}",
            f"optim.decay_steps={iters}", "task.sample_every_n_steps=0", "trainer.log_every_n_steps=50"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mimicry.cli", "train", *args], cwd=out, check=True)
    wall = time.perf_counter() - start
    summary = max((out / "outputs").rglob("summary.json"), key=os.path.getmtime)
    return summary.parent, wall


def train_tokens_per_sec(run_dir: Path) -> float:
    """Median of mimicry's own throughput log (tokens between logging steps / time between them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for event_file in (run_dir / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/tokens_per_sec" in acc.Tags()["scalars"]:
            values += [e.value for e in acc.Scalars("train/tokens_per_sec")]
    return float(torch.tensor(values).median())


def plain_loop(root: Path, iters: int, device: str) -> float:
    """The same model, batches, optimizer and clipping in a bare PyTorch loop; tokens/s."""
    torch.manual_seed(0)
    data = TextDataModule("tinyshakespeare", path="tinyshakespeare/input.txt", root=str(root),
                          block_size=BABY_GPT["block_size"], batch_size=BATCH, steps_per_epoch=iters, seed=0)
    data.setup()
    model = GPT(vocab_size=data.tokenizer.vocab_size, **BABY_GPT).to(device)
    opt = build_optimizer(model.parameters(), OPTIM, iters)
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = list(data.train_dataloader())
    start, warm = None, 20  # skip the first steps (allocations, lazy init)
    for step, tokens in enumerate(batches):
        if step == warm:
            start = time.perf_counter()
        tokens = tokens.to(device)
        logits = model(tokens[:, :-1])
        loss = loss_fn(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (len(batches) - warm) * BATCH * BABY_GPT["block_size"] / (time.perf_counter() - start)


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
    parser.add_argument("--out", default=str(REPO / "scripts" / "results"))
    args = parser.parse_args()
    root, out = Path(args.data_root).resolve(), Path(args.out)
    work = out / f"bench_lm_runs_{args.trainer}"
    work.mkdir(parents=True, exist_ok=True)
    device = "cuda" if args.trainer == "gpu" else "cpu"

    run_dir, wall = mimicry_run(root, args.iters, args.trainer, work)
    summary = json.loads((run_dir / "summary.json").read_text())
    mimicry_tps = train_tokens_per_sec(run_dir)
    plain_tps = plain_loop(root, args.iters, device)
    generation = generation_speed(run_dir, device)
    result = {
        "benchmark": "lm baby GPT, tinyshakespeare char-level",
        "settings": {**BABY_GPT, **OPTIM, "batch_size": BATCH, "iters": args.iters, "trainer": args.trainer},
        "val_loss": summary["metrics"]["val/loss"],
        "val_loss_reference_nanogpt": 1.88,
        "train_loss": summary["metrics"]["train/loss"],
        "train_tokens_per_sec_mimicry": round(mimicry_tps),
        "train_tokens_per_sec_plain_loop": round(plain_tps),
        "lightning_overhead_pct": round(100 * (plain_tps / mimicry_tps - 1), 1),
        "mimicry_wall_time_s": round(wall, 1),
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
