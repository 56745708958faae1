"""Benchmark: RL on text, every route on one reward, from a char-level GPT of tinyshakespeare.

    flock /tmp/mimicry_bench.lock .venv/bin/python scripts/bench_rl_text.py [--lm RUN_DIR] [--tokens 92160]
        [--routes reward_conditioned]   # rerun some routes only: the others' saved results stay in the JSON

1. The starting model: `mimicry train experiment=lm_baby_gpt` (nanoGPT's CPU baby GPT, 2,000 steps)
   unless --lm gives a run of it.
2. For algo=ppo, grpo, rloo, filtered_bc, reward_conditioned: `mimicry train task=rl env=text algo=... init_from=LM
   reward=sentence_length` (a first sentence of 30 characters ending in . ! or ?; maximum 1), each for
   the same number of generated tokens, evaluated on fixed prompts and seeds.
3. Per route: the reward and the KL to the start before and after, where the route first closed half
   of the gap between the start's reward and the maximum (generated tokens, KL: the "first touch"),
   and what held after it (scripts/what_holds.py): the mean of the last 5 evaluations, the share of
   evaluations after the first crossing still at or above half the gap, the worst one; wall and CPU time,
   the validation loss on tinyshakespeare's held-out 10% before and after (reward_conditioned's also as it
   samples: told the highest return), and samples side by side.
Writes scripts/results/bench_rl_text.json, scripts/results/bench_rl_text_samples.md and
docs/rl_text_routes.png (reward and KL against generated tokens, and reward against KL).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mimicry.run_reading import scalar_curves

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from what_holds import what_holds  # noqa: E402
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "scripts" / "results"
WORK = RESULTS / "bench_rl_text_runs_cpu"
ROUTES = ("ppo", "grpo", "rloo", "filtered_bc", "reward_conditioned")
REWARD = ["reward=sentence_length", "reward.target=30", "reward.tolerance=20"]
REWARD_MAX = 1.0


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mimicry(cwd: Path, *args: str) -> tuple[float, float]:
    """Run `mimicry ARGS` (one thread); returns (wall, CPU) seconds."""
    cpu, started = child_cpu_seconds(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mimicry.cli", *args, "callbacks.progress=null"], cwd=cwd,
                            capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MIMICRY_DATA": str(DATA)})
    if result.returncode != 0:
        raise SystemExit(f"mimicry {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, child_cpu_seconds() - cpu


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a run logged, as (step, value) pairs."""
    return {tag: list(zip(curve.steps.astype(int).tolist(), curve.values.tolist()))
            for tag, curve in scalar_curves(run_dir).items()}


def evaluations(run_dir: Path) -> list[dict]:
    """Each evaluation (the start's at step 0 included): generated tokens, reward mean, KL."""
    found = scalars(run_dir)
    tokens_at, kl_at = dict(found["rollout/generated_tokens"]), dict(found["eval/kl"])
    return [{"generated_tokens": int(tokens_at[step]), "reward": value, "kl": kl_at[step]}
            for step, value in sorted(found["eval/return_mean"]) if step in tokens_at]


def held_out_windows(tokenizer, text: str, size: int, windows: int = 200):
    """Evenly spaced windows of ``size`` tokens of tinyshakespeare's held-out 10% (the lm task's
    validation split), (windows, size)."""
    import torch

    tokens = tokenizer.encode(text)
    held_out = tokens[len(tokens) - int(len(tokens) * 0.1):]
    starts = torch.linspace(0, len(held_out) - size, windows).long()
    return torch.stack([held_out[s:s + size] for s in starts])


def val_loss(gpt, tokenizer, text: str) -> float:
    """Mean next-character cross-entropy of a GPT on the held-out windows."""
    import torch
    import torch.nn.functional as F

    batch = held_out_windows(tokenizer, text, gpt.block_size + 1)
    with torch.no_grad():
        logits = gpt(batch[:, :-1])
        return float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)))


def policy_val_loss(task, text: str) -> float:
    """The same, read by the policy as it samples: reward_conditioned's GPT told the highest return
    (its return embedding added; each window read as one continuation after its first character),
    the other routes' GPT itself (the same number as val_loss)."""
    import torch
    import torch.nn.functional as F

    batch = held_out_windows(task.tokenizer, text, task.gpt.block_size + 1)
    with torch.no_grad():
        logits = task.action_logits({"tokens": batch, "context": 1, **task.condition(len(batch))})
        return float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)))


def samples(task, prompts: list[str], n: int, seed: int) -> list[dict]:
    """n continuations of each prompt (fixed seed), with their rewards."""
    import torch

    from mimicry.tasks.rl.text import TextEnvironment

    task.spec = TextEnvironment("text", tuple(prompts), task.spec.max_new_tokens)
    task.prompt_ids = [task.encode_prompt(p) for p in prompts]
    groups = task.continue_prompts([n] * len(prompts), torch.Generator().manual_seed(seed))
    out = []
    for prompt, group in zip(prompts, groups):
        for text, reward in zip(group["text"], task.score(group["text"])):
            out.append({"prompt": prompt, "text": text, "reward": float(reward)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lm", help="a trained lm run (default: train experiment=lm_baby_gpt first)")
    parser.add_argument("--tokens", type=int, default=92160, help="generated tokens per route")
    parser.add_argument("--eval-every", type=int, default=6144, help="generated tokens between evaluations")
    parser.add_argument("--out", default=str(RESULTS / "bench_rl_text.json"))
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES),
                        help="routes to run; the others' results are kept from --out (same reward and tokens)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict = {"benchmark": "rl on text: the routes from a tinyshakespeare char GPT",
                     "reward": " ".join(REWARD), "reward_max": REWARD_MAX, "generated_tokens_per_route": args.tokens,
                     "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                                 "threads": 1, "note": "2 CPU cores shared with other engineers' jobs"}}

    lm_dir = Path(args.lm).resolve() if args.lm else WORK / "lm_baby_gpt"
    if not args.lm:
        wall, cpu = mimicry(WORK, "train", "experiment=lm_baby_gpt", f"data.root={DATA}", f"hydra.run.dir={lm_dir}")
        results["lm"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    results["lm"] = {**results.get("lm", {}), "run_dir": str(lm_dir),
                     "val_loss": json.loads((lm_dir / "summary.json").read_text())["metrics"].get("val/loss")}
    print(f"lm: {results['lm']}", flush=True)

    from mimicry.checkpoints import load_task

    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    routes = {}
    if set(args.routes) != set(ROUTES):  # keep the saved routes (and the start's samples) of an earlier run
        saved = json.loads(Path(args.out).read_text())
        if saved["reward"] != results["reward"] or saved["generated_tokens_per_route"] != args.tokens:
            raise SystemExit(f"{args.out} has another reward or length: run all routes (drop --routes)")
        routes = {algo: saved["routes"][algo] for algo in ROUTES if algo not in args.routes}
        results["samples_before"] = saved["samples_before"]
        results["machine"]["note"] += f"; routes {', '.join(routes)} from an earlier run of this script"
    for algo in args.routes:
        run_dir = WORK / algo
        shutil.rmtree(run_dir, ignore_errors=True)  # a previous run's events would mix into the curves
        wall, cpu = mimicry(WORK, "train", "task=rl", "env=text", f"algo={algo}", f"init_from={lm_dir}", *REWARD,
                            f"task.total_env_steps={args.tokens}", f"task.eval_every_env_steps={args.eval_every}",
                            f"hydra.run.dir={run_dir}")
        evals = evaluations(run_dir)
        start, end = evals[0], evals[-1]
        half = start["reward"] + (REWARD_MAX - start["reward"]) / 2
        reached = next((e for e in evals if e["reward"] >= half), None)
        task = load_task(run_dir, prefer="last")
        routes[algo] = {
            "reward_before": round(start["reward"], 4), "reward_after": round(end["reward"], 4),
            "kl_after": round(end["kl"], 2), "half_gap_target": round(half, 4),
            "half_gap_reached_at_tokens": reached["generated_tokens"] if reached else None,
            "half_gap_kl": round(reached["kl"], 2) if reached else None,
            "holds": what_holds([(e["generated_tokens"], e["reward"]) for e in evals], half),
            "val_loss_before": round(val_loss(task.reference, task.tokenizer, text), 4),
            "val_loss_after": round(val_loss(task.gpt, task.tokenizer, text), 4),
            "val_loss_after_as_sampled": round(policy_val_loss(task, text), 4),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "evals": evals, "run_dir": str(run_dir),
            "samples_after": samples(task, ["ROMEO:\n", "JULIET:\n"], 2, seed=1),
        }
        if "samples_before" not in results:  # the starting model's samples: the policy set back to the reference
            task.gpt.load_state_dict(task.reference.state_dict())
            results["samples_before"] = samples(task, ["ROMEO:\n", "JULIET:\n"], 2, seed=1)
        print(f"{algo}: " + json.dumps({k: v for k, v in routes[algo].items() if k not in ("evals", "samples_after")}),
              flush=True)
    results["routes"] = {algo: routes[algo] for algo in ROUTES}
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    write_samples(results, RESULTS / "bench_rl_text_samples.md")
    plot(results["routes"], results, REPO / "docs" / "rl_text_routes.png")


def write_samples(results: dict, path: Path) -> None:
    """Before and after, side by side, as a markdown table (for the README)."""
    cell = lambda s: f"`{(s['prompt'] + s['text'])!r}`<br>reward {s['reward']:.2f}"  # noqa: E731
    lines = ["| start | " + " | ".join(ROUTES) + " |", "|---" * (len(ROUTES) + 1) + "|"]
    for i, before in enumerate(results["samples_before"]):
        lines.append("| " + cell(before) + " | " + " | ".join(cell(results["routes"][r]["samples_after"][i])
                                                          for r in ROUTES) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def plot(routes: dict, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (reward_ax, kl_ax, both_ax) = plt.subplots(1, 3, figsize=(15, 4.2))
    for algo, route in routes.items():
        tokens = [e["generated_tokens"] for e in route["evals"]]
        rewards = [e["reward"] for e in route["evals"]]
        kls = [e["kl"] for e in route["evals"]]
        reward_ax.plot(tokens, rewards, marker="o", ms=3, label=algo)
        kl_ax.plot(tokens, kls, marker="o", ms=3, label=algo)
        both_ax.plot(kls, rewards, marker="o", ms=3, label=algo)
    half = next(iter(routes.values()))["half_gap_target"]
    for ax in (reward_ax, both_ax):
        ax.axhline(REWARD_MAX, color="grey", lw=0.8, ls=":")
        ax.axhline(half, color="grey", lw=0.8, ls="--", label="half the gap to the maximum")
    reward_ax.set(xlabel="generated tokens", ylabel="eval reward mean", title="reward (fixed prompts and seeds)")
    kl_ax.set(xlabel="generated tokens", ylabel="KL to the starting model (nats / continuation)",
              title="KL to the start")
    both_ax.set(xlabel="KL to the starting model (nats / continuation)", ylabel="eval reward mean",
                title="reward against KL")
    reward_ax.legend(fontsize=8)
    fig.suptitle(f"RL on text: {results['reward']}, from a tinyshakespeare char GPT", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
