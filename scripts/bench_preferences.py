"""Benchmark: one preference set, three ways to learn from it, judged by the reward that labelled it.

    flock /tmp/mimicry_bench.lock .venv/bin/python scripts/bench_preferences.py [--lm RUN_DIR] [--pairs 1024]
        [--tokens 92160]

1. The starting model: `mimicry train experiment=lm_baby_gpt` (nanoGPT's CPU baby GPT on tinyshakespeare)
   unless --lm gives a run of it.
2. Pairs: `mimicry sample LM pairs=N judge=sentence_length judge.temperature=0.1` on the RL-on-text prompts,
   48 characters each: the hidden reward is sentence_length (target 30), the labels carry Bradley–Terry noise.
3. A reward model on them (`task=reward_model`): held-out preference accuracy.
4. Three routes from the same pairs, each evaluated on the same fixed prompts and seeds with the hidden reward
   (`env.true_reward=sentence_length`) and the KL to the start:
   - `algo=dpo` on the pairs (no reward model, no sampling);
   - `algo=ppo` and `algo=filtered_bc` against the learned reward (`reward=model`), for --tokens generated
     tokens: the learned reward they climb, and the true one, at every evaluation (over-optimisation shows as
     the two parting).
Writes scripts/results/bench_preferences.json, scripts/results/bench_preferences_samples.md and
docs/preferences_routes.png (true and learned reward against KL to the start, and against training).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_rl_text import DATA, child_cpu_seconds, mimicry, samples, scalars, val_loss  # noqa: E402

RESULTS = REPO / "scripts" / "results"
WORK = RESULTS / "bench_preferences_runs_cpu"
PROMPTS = ["ROMEO:\n", "JULIET:\n", "MENENIUS:\n", "First Citizen:\n"]
JUDGE = ["judge=sentence_length", "judge.target=30", "judge.tolerance=20"]
TRUE_REWARD = ["reward=sentence_length", "reward.target=30", "reward.tolerance=20"]
ROUTES = ("dpo", "ppo_on_reward_model", "filtered_bc_on_reward_model")


def mimicry_sample(*args: str) -> tuple[float, float]:
    """`mimicry sample ARGS` (one thread; no training callbacks to switch off); (wall, CPU) seconds."""
    import subprocess
    import time

    cpu, started = child_cpu_seconds(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mimicry.cli", "sample", *args], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MIMICRY_DATA": str(DATA)})
    if result.returncode != 0:
        raise SystemExit(f"mimicry sample {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    print(result.stdout.split("wrote")[0], flush=True)
    return time.perf_counter() - started, child_cpu_seconds() - cpu


def evaluations(run_dir: Path, x_tag: str) -> list[dict]:
    """Each evaluation (the start's at step 0 included): x, learned and true reward, KL."""
    found = scalars(run_dir)
    x_at = dict(found[x_tag]) if x_tag != "step" else None
    kl_at = dict(found["eval/kl"])
    true_at = dict(found.get("eval/true_return_mean", []))
    rows = []
    for step, value in sorted(found["eval/return_mean"]):
        if x_at is not None and step not in x_at:
            continue
        rows.append({"x": int(x_at[step]) if x_at is not None else step, "reward": value, "kl": kl_at[step],
                     "true_reward": true_at.get(step, value)})
    return rows


def peak(evals: list[dict]) -> dict:
    best = max(evals, key=lambda e: e["true_reward"])
    return {"true_reward": round(best["true_reward"], 4), "at_x": best["x"], "kl": round(best["kl"], 2),
            "learned_reward_there": round(best["reward"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lm", help="a trained lm run (default: train experiment=lm_baby_gpt first)")
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=92160, help="generated tokens for the online routes")
    parser.add_argument("--eval-every", type=int, default=6144)
    parser.add_argument("--dpo-epochs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "bench_preferences.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict = {"benchmark": "preferences: reward model, DPO, RL against the learned reward",
                     "hidden_reward": " ".join(TRUE_REWARD), "judge_temperature": 0.1, "pairs": args.pairs,
                     "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                                 "threads": 1, "note": "2 CPU cores shared with other engineers' jobs"}}
    lm_dir = Path(args.lm).resolve() if args.lm else WORK / "lm_baby_gpt"
    if not args.lm:
        wall, cpu = mimicry(WORK, "train", "experiment=lm_baby_gpt", f"data.root={DATA}", f"hydra.run.dir={lm_dir}")
        results["lm"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    results["lm"] = {**results.get("lm", {}), "run_dir": str(lm_dir),
                     "val_loss": json.loads((lm_dir / "summary.json").read_text())["metrics"].get("val/loss")}
    print(f"lm: {results['lm']}", flush=True)

    pairs_dir = WORK / "pairs"
    shutil.rmtree(pairs_dir, ignore_errors=True)
    wall, cpu = mimicry_sample(str(lm_dir), f"pairs={args.pairs}", *JUDGE, "judge.temperature=0.1",
                        "prompts=" + json.dumps(PROMPTS), "length=48", f"out={pairs_dir}")
    pairs = pairs_dir / "preferences_seed0.jsonl"
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    differ = [r for r in rows if r["chosen_reward"] != r["rejected_reward"]]
    results["pairs_made"] = {
        "file": str(pairs), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "mean_reward_chosen": round(sum(r["chosen_reward"] for r in rows) / len(rows), 4),
        "mean_reward_rejected": round(sum(r["rejected_reward"] for r in rows) / len(rows), 4),
        "pairs_with_different_rewards": len(differ),
        "higher_reward_chosen_share": round(sum(r["chosen_reward"] > r["rejected_reward"] for r in differ)
                                            / max(1, len(differ)), 4)}
    print(f"pairs: {results['pairs_made']}", flush=True)

    rm_dir = WORK / "reward_model"
    shutil.rmtree(rm_dir, ignore_errors=True)
    wall, cpu = mimicry(WORK, "train", "task=reward_model", f"init_from={lm_dir}", f"data.path={pairs}",
                        f"hydra.run.dir={rm_dir}")
    accuracy = [v for _, v in sorted(scalars(rm_dir)["val/preference_accuracy"])]
    results["reward_model"] = {"val_preference_accuracy": [round(a, 4) for a in accuracy], "wall_s": round(wall, 1),
                               "cpu_s": round(cpu, 1), "run_dir": str(rm_dir)}
    print(f"reward model: {results['reward_model']}", flush=True)

    from mimicry.checkpoints import load_task

    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    online = [f"task.total_env_steps={args.tokens}", f"task.eval_every_env_steps={args.eval_every}",
              "reward=model", f"reward.from_run={rm_dir}", "env.true_reward=sentence_length"]
    commands = {
        "dpo": (["algo=dpo", "data=preferences", f"data.path={pairs}", *TRUE_REWARD,
                 f"trainer.max_epochs={args.dpo_epochs}", "trainer.val_check_interval=0.25"], "step"),
        "ppo_on_reward_model": (["algo=ppo", *online], "rollout/generated_tokens"),
        "filtered_bc_on_reward_model": (["algo=filtered_bc", *online], "rollout/generated_tokens"),
    }
    routes = {}
    for name, (overrides, x_tag) in commands.items():
        run_dir = WORK / name
        shutil.rmtree(run_dir, ignore_errors=True)
        wall, cpu = mimicry(WORK, "train", "task=rl", "env=text", f"init_from={lm_dir}", *overrides,
                            f"hydra.run.dir={run_dir}")
        evals = evaluations(run_dir, x_tag)
        task = load_task(run_dir, prefer="last")
        from mimicry.rewards import build_reward

        task._reward = build_reward({"_target_": "mimicry.rewards.text.sentence_length", "target": 30,
                                     "tolerance": 20})  # the samples are scored with the hidden reward
        end = evals[-1]
        routes[name] = {
            "x": "updates" if x_tag == "step" else "generated tokens",
            "true_reward_before": round(evals[0]["true_reward"], 4), "true_reward_end": round(end["true_reward"], 4),
            "learned_reward_end": round(end["reward"], 4) if name != "dpo" else None,
            "kl_end": round(end["kl"], 2), "true_reward_peak": peak(evals),
            "val_loss_before": round(val_loss(task.reference, task.tokenizer, text), 4),
            "val_loss_after": round(val_loss(task.gpt, task.tokenizer, text), 4),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "evals": evals, "run_dir": str(run_dir),
            "samples_after": samples(task, ["ROMEO:\n", "JULIET:\n"], 2, seed=1)}
        if "samples_before" not in results:
            task.gpt.load_state_dict(task.reference.state_dict())
            results["samples_before"] = samples(task, ["ROMEO:\n", "JULIET:\n"], 2, seed=1)
        print(f"{name}: " + json.dumps({k: v for k, v in routes[name].items() if k not in ("evals", "samples_after")}),
              flush=True)
    results["routes"] = routes
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    write_samples(results, RESULTS / "bench_preferences_samples.md")
    plot(results, REPO / "docs" / "preferences_routes.png")


def write_samples(results: dict, path: Path) -> None:
    cell = lambda s: f"`{(s['prompt'] + s['text'])!r}`<br>true reward {s['reward']:.2f}"  # noqa: E731
    lines = ["| start | " + " | ".join(ROUTES) + " |", "|---" * (len(ROUTES) + 1) + "|"]
    for i, before in enumerate(results["samples_before"]):
        lines.append("| " + cell(before) + " | " + " | ".join(cell(results["routes"][r]["samples_after"][i])
                                                          for r in ROUTES) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, name in zip(axes[:2], ("ppo_on_reward_model", "filtered_bc_on_reward_model")):
        evals = results["routes"][name]["evals"]
        x = [e["x"] for e in evals]
        ax.plot(x, [e["true_reward"] for e in evals], marker="o", ms=3, label="true (hidden) reward")
        ax.plot(x, [e["reward"] for e in evals], marker="o", ms=3, label="learned reward (what it climbs)")
        kl_ax = ax.twinx()
        kl_ax.plot(x, [e["kl"] for e in evals], color="grey", ls="--", lw=1, label="KL to the start")
        kl_ax.set_ylabel("KL to the start (nats / continuation)")
        ax.set(xlabel="generated tokens", ylabel="eval reward mean", title=f"{name.replace('_', ' ')}")
        ax.legend(fontsize=8, loc="upper left")
        kl_ax.legend(fontsize=8, loc="lower right")
    ax = axes[2]
    for name, route in results["routes"].items():
        ax.plot([e["kl"] for e in route["evals"]], [e["true_reward"] for e in route["evals"]], marker="o", ms=3,
                label=name.replace("_", " "))
    ax.set(xlabel="KL to the start (nats / continuation)", ylabel="true reward (eval mean)",
           title="true reward against KL, each route")
    ax.legend(fontsize=8)
    fig.suptitle(f"{results['pairs']} preference pairs labelled by {results['hidden_reward']} "
                 f"(Bradley–Terry T={results['judge_temperature']}), baby GPT on tinyshakespeare", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
