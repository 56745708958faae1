"""Generalization lab benchmark: an n-gram lookup table against the baby GPT on tinyshakespeare
(char level), trained on 1%, 10% and 100% of the training text, through the real CLI
(``experiment=generalization_lm``). Train and validation loss for each; the sharpness curves of
the best table and of the GPT side by side.

- Table: one run per share with ``model.n=6`` (one pass of counting). n = 1…6 and add-k for k in
  K_VALUES are then scored from that run's checkpoint: lower orders are the very counts a smaller
  table would have made, so no recount is needed. Every loss is the lm task's own ``loss(batch)``
  on the run's own validation loaders: ``val_batches`` fixed held-out windows and as many fixed
  training windows (``val/train_loss``), the numbers the CLI logs. The best (n, k) per share is
  picked on the validation loss (said so in the README: it is a choice made on held-out text).
- GPT: the baby GPT of ``experiment=lm_baby_gpt`` (4 layers, 128 wide, block 64, batch 12), for
  ``--gpt-steps`` iterations (default 2000, lm_baby_gpt's budget; less with ``--gpt-steps``).
- Sharpness: ``mimicry.probes.sharpness`` on the same 4 batches of training windows for the best
  table at 100% and for the GPT at 100% (and at 1%).

    flock /tmp/mimicry_bench.lock .venv/bin/python scripts/bench_generalization.py [--gpt-steps 2000]

Writes scripts/results/bench_generalization.json and docs/generalization_*.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
FRACTIONS = (0.01, 0.1, 1.0)
ORDERS = (1, 2, 3, 4, 5, 6)
K_VALUES = (0.01, 0.03, 0.1, 0.3, 1.0)
EPS = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1]


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(name: str, overrides: list[str], workdir: Path) -> tuple[Path, float]:
    """One `mimicry train experiment=generalization_lm ...` run; (run dir, CPU seconds)."""
    run_dir = workdir / name
    if (run_dir / "summary.json").is_file() and json.loads((run_dir / "summary.json").read_text())["status"] == "completed":
        return run_dir, float("nan")  # --reuse
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIMICRY_DATA": str(DATA)}
    before = child_cpu_seconds()
    result = subprocess.run([sys.executable, "-m", "mimicry.cli", "train", "experiment=generalization_lm", *overrides,
                             f"hydra.run.dir={run_dir}", "callbacks.progress_log.when=never"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return run_dir, child_cpu_seconds() - before


def losses(task, loaders) -> tuple[float, float]:
    """(validation loss, training-window loss): the task's own loss on the run's validation loaders."""
    import torch

    with torch.no_grad():
        return tuple(torch.stack([task.loss(batch) for batch in loader]).mean().item() for loader in loaders)


def score_table(run_dir: Path) -> dict:
    """Train and validation loss of the counted table for every n ≤ 6 and k, from one checkpoint."""
    from mimicry.probes.common import open_run

    run = open_run(run_dir)
    loaders = run.datamodule().val_dataloader()
    table = run.task.model
    grid = []
    for n in ORDERS:
        for k in K_VALUES:
            table.n, table.k = n, k
            val, train_loss = losses(run.task, loaders)
            grid.append({"n": n, "k": k, "val_loss": val, "train_loss": train_loss})
    table.n, table.k = 6, run.task.hparams.model["k"]
    logged = json.loads((run_dir / "summary.json").read_text())["metrics"]
    check = losses(run.task, loaders)
    return {"grid": grid, "entries": table.num_entries(),
            "cli_val_loss": logged["val/loss"], "recomputed_val_loss": check[0]}


def best(grid: list[dict], n: int | None = None) -> dict:
    rows = [r for r in grid if n is None or r["n"] == n]
    return min(rows, key=lambda r: r["val_loss"])


def table_sharpness(run_dir: Path, n: int, k: float) -> dict:
    from mimicry.probes.common import batches_of, open_run
    from mimicry.probes.sharpness import sharpness

    run = open_run(run_dir)
    run.task.model.n, run.task.model.k = n, k
    return sharpness(run.task, batches_of(run.datamodule().train_dataloader(), 4), EPS, draws=5, ascent_steps=5)


def gpt_sharpness(run_dir: Path) -> dict:
    from mimicry.probes.common import batches_of, open_run
    from mimicry.probes.sharpness import sharpness

    run = open_run(run_dir, prefer="last")  # the weights at the end of the budget, as the losses reported
    return sharpness(run.task, batches_of(run.datamodule().train_dataloader(), 4), EPS, draws=5, ascent_steps=5)


def plots(result: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mimicry.probes.sharpness import plot as plot_sharpness

    docs = REPO / "docs"
    written = []
    shares = [f["fraction"] for f in result["fractions"]]
    # 1. table (best n, k per share) vs GPT: train and validation loss against the share of training text
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for who, color in (("table", "tab:orange"), ("gpt", "tab:blue")):
        ax.plot(shares, [f[who]["val_loss"] for f in result["fractions"]], "o-", color=color, label=f"{who}: validation")
        ax.plot(shares, [f[who]["train_loss"] for f in result["fractions"]], "s--", color=color, label=f"{who}: training")
    ax.set_xscale("log")
    ax.set_xticks(shares, [f"{s:.0%}" for s in shares])
    ax.set_xlabel("share of tinyshakespeare's training text")
    ax.set_ylabel("loss (nats per character)")
    ax.set_title("lookup table (best n, k) vs baby GPT")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(docs / "generalization_table_vs_gpt.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    # 2. the table's order: training loss falls with n, validation loss turns up (best k per n)
    fig, axes = plt.subplots(1, len(shares), figsize=(12, 3.8), sharey=True)
    for ax, f in zip(axes, result["fractions"]):
        rows = [best(f["table_grid"], n) for n in ORDERS]
        ax.plot(ORDERS, [r["val_loss"] for r in rows], "o-", color="tab:orange", label="table: validation")
        ax.plot(ORDERS, [r["train_loss"] for r in rows], "s--", color="tab:orange", label="table: training")
        ax.axhline(f["gpt"]["val_loss"], color="tab:blue", label="GPT: validation")
        ax.axhline(f["gpt"]["train_loss"], color="tab:blue", linestyle="--", label="GPT: training")
        ax.set_title(f"{f['fraction']:.0%} of the training text")
        ax.set_xlabel("n (n-1 characters of context)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("loss (nats per character)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    written.append(docs / "generalization_ngram_order.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    # 3. sharpness side by side
    s = result["sharpness"]
    written.append(plot_sharpness({f"table n={s['table_n']} k={s['table_k']} (100%)": s["table"],
                                   "GPT (100%)": s["gpt"], "GPT (1%, memorized)": s["gpt_1pct"]},
                                  docs / "generalization_sharpness.png",
                                  "Δ training loss under relative perturbations (4 training batches)"))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt-steps", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mimicry_bench_generalization"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNGs from the JSON")
    args = parser.parse_args()
    out = REPO / "scripts" / "results" / "bench_generalization.json"
    if args.plot_only:
        for path in plots(json.loads(out.read_text())):
            print(f"wrote {path}")
        return
    import torch

    torch.set_num_threads(1)
    os.environ["MIMICRY_DATA"] = str(DATA)  # the in-process scoring reads the same data as the runs
    started, cpu_started = time.time(), time.process_time()
    epochs = max(1, round(args.gpt_steps / 250))
    fractions, gpt_runs = [], {}
    # a reused run (already completed in --workdir) keeps the CPU-seconds measured when it ran
    previous = {f["fraction"]: f for f in json.loads(out.read_text())["fractions"]} if out.is_file() else {}

    def measured(cpu: float, fraction: float, who: str) -> float | None:
        if cpu == cpu:
            return cpu
        earlier = previous.get(fraction, {}).get(who, {}).get("cpu_s")
        return earlier if earlier is not None and earlier == earlier else None

    for fraction in FRACTIONS:
        table_dir, table_cpu = train(f"table_{fraction:g}", ["model=lookup", "model.n=6", f"data.train_fraction={fraction}"],
                                     args.workdir)
        scored = score_table(table_dir)
        gpt_dir, gpt_cpu = train(f"gpt_{fraction:g}_{args.gpt_steps}", [
            "model=gpt", f"data.train_fraction={fraction}", f"trainer.max_epochs={epochs}",
            f"optim.decay_steps={epochs * 250}"], args.workdir)
        gpt_runs[fraction] = gpt_dir
        summary = json.loads((gpt_dir / "summary.json").read_text())
        top = best(scored["grid"])
        entry = {
            "fraction": fraction,
            "table": {"n": top["n"], "k": top["k"], "val_loss": top["val_loss"], "train_loss": top["train_loss"],
                      "entries_n6": scored["entries"], "cpu_s": measured(table_cpu, fraction, "table"),
                      "cli_val_loss_n6": scored["cli_val_loss"], "recomputed_val_loss_n6": scored["recomputed_val_loss"]},
            "table_grid": scored["grid"],
            "gpt": {"val_loss": summary["metrics"]["val/loss"], "train_loss": summary["metrics"]["val/train_loss"],
                    "best_val_loss": summary.get("best", {}).get("val/loss"), "steps": summary["steps"],
                    "cpu_s": measured(gpt_cpu, fraction, "gpt")},
        }
        fractions.append(entry)
        print(f"{fraction:>5.0%}  table n={top['n']} k={top['k']:<5} train {top['train_loss']:.3f} val {top['val_loss']:.3f}"
              f"   GPT ({summary['steps']} steps) train {entry['gpt']['train_loss']:.3f} val {entry['gpt']['val_loss']:.3f}"
              f" (best val {entry['gpt']['best_val_loss']:.3f})", flush=True)
    full = fractions[-1]
    sharp = {"table_n": full["table"]["n"], "table_k": full["table"]["k"],
             "table": table_sharpness(args.workdir / "table_1", full["table"]["n"], full["table"]["k"]),
             "gpt": gpt_sharpness(gpt_runs[1.0]), "gpt_1pct": gpt_sharpness(gpt_runs[0.01])}
    result = {
        "conditions": {"data": "tinyshakespeare, char level, 90/10 split; validation = 20 fixed batches of 12 windows "
                               "of 64 characters (15,360 targets); training loss = 20 fixed batches of training windows",
                       "gpt": f"baby GPT (4 layers, 4 heads, 128 wide, block 64), batch 12, {args.gpt_steps} iterations",
                       "table": "n-gram, one sequential pass of windows of 64, add-k with back-off; n, k picked on "
                                "the validation loss", "k_values": K_VALUES, "orders": ORDERS, "eps": EPS,
                       "threads": 1, "machine": platform.processor() or platform.machine(),
                       "note": "timed runs under flock /tmp/mimicry_bench.lock; the 2-core machine was shared"},
        "fractions": fractions,
        "sharpness": sharp,
        "wall_s": time.time() - started,
        "cpu_s_this_invocation": time.process_time() - cpu_started + child_cpu_seconds(),
        "cpu_s_training": sum(f[who]["cpu_s"] or 0.0 for f in fractions for who in ("table", "gpt")),
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"sharpness (Δ training loss, worst direction): " + ", ".join(
        f"eps {t['eps']:g}: table {t['worst']:.3f} / GPT {g['worst']:.3f}"
        for t, g in zip(sharp["table"]["rows"], sharp["gpt"]["rows"])))
    for path in plots(result):
        print(f"wrote {path}")
    print(f"wrote {out}; {result['cpu_s_this_invocation']:.0f} CPU-s, {result['wall_s']:.0f} s wall in this invocation")


if __name__ == "__main__":
    main()
