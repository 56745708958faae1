"""RL benchmark: CartPole-v1, environment steps (and wall / CPU time) until the greedy evaluation
(10 episodes, fixed seeds) reaches a mean return of 475, for each algorithm and seed, through the
real CLI with the default settings; and env steps/s of `algo=ppo` next to a plain PyTorch loop of
the same PPO (the Lightning overhead).

    python scripts/bench_rl.py                       # ppo, filtered_bc, dqn; seeds 0 1 2
    python scripts/bench_rl.py --algos ppo --seeds 0 --eval-every 2048

Prints a table and writes scripts/results/bench_rl.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGET = 475.0


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for event_file in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


def solve_run(algo: str, seed: int, eval_every: int, workdir: Path) -> dict:
    """One training run that stops at eval/return_mean ≥ 475 (or at the algo's env-step budget)."""
    run_dir = workdir / f"{algo}_seed{seed}"
    args = [sys.executable, "-m", "mimicry.cli", "train", "task=rl", f"algo={algo}", f"seed={seed}",
            f"task.stop_at_return={TARGET}", f"task.eval_every_env_steps={eval_every}",
            f"hydra.run.dir={run_dir}", "callbacks.progress=null"]
    cpu, started = child_cpu_seconds(), time.perf_counter()
    result = subprocess.run(args, cwd=workdir, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall, cpu = time.perf_counter() - started, child_cpu_seconds() - cpu
    if result.returncode != 0:
        raise SystemExit(f"{algo} seed {seed} failed:\n{result.stderr[-3000:]}")
    found = scalars(run_dir)
    # the evaluation and the env-step counter are logged together at each evaluation's step
    env_steps_at = dict(found["rollout/env_steps"])
    evals = [(step, value, env_steps_at.get(step)) for step, value in sorted(found["eval/return_mean"])]
    solved = next(((s, v, e) for s, v, e in evals if v >= TARGET), None)
    speed = [v for _, v in found.get("rollout/env_steps_per_sec", [])]
    return {"algo": algo, "seed": seed, "solved": solved is not None,
            "env_steps_to_solve": int(solved[2]) if solved else None,
            "final_env_steps": int(max(env_steps_at.values())), "best_eval_return": max(v for _, v, _ in evals),
            "evals": [{"env_steps": int(e), "return_mean": v} for _, v, e in evals],
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "env_steps_per_sec_median": round(statistics.median(speed), 1) if speed else None}


def plain_ppo_env_steps_per_sec(env_steps: int, seed: int = 0) -> float:
    """The same PPO (settings of conf/algo/ppo.yaml) as a plain PyTorch loop: no Lightning, no
    logging, no evaluation. Same rollout, GAE and network code."""
    import math

    import torch
    import yaml
    from torch.distributions import Categorical

    from mimicry.data.rollouts import VectorRollout, gae
    from mimicry.models.actor_critic import ActorCritic

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    a = yaml.safe_load((REPO / "conf/algo/ppo.yaml").read_text())["algo"]
    model = ActorCritic(4, 2, [64, 64], "tanh")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rollout = VectorRollout("cartpole", a["num_envs"], seed)

    def policy(obs: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, value = model(obs)
        dist = Categorical(logits=logits)
        action = dist.sample()
        return {"action": action, "logprob": dist.log_prob(action), "value": value}

    started, steps = time.perf_counter(), 0
    while steps < env_steps:
        data = rollout.collect(policy, a["n_steps"])
        with torch.no_grad():
            next_values = model.value(data["next_obs"])
        adv, ret = gae(data["reward"], data["value"], next_values, data["terminated"], data["truncated"],
                       a["gamma"], a["gae_lambda"])
        steps += a["num_envs"] * a["n_steps"]
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in
                {"obs": data["obs"], "action": data["action"], "logprob": data["logprob"], "adv": adv, "ret": ret}.items()}
        size = len(flat["obs"])
        for _ in range(a["update_epochs"]):
            order = torch.randperm(size)
            for start in range(0, size, a["batch_size"]):
                b = {k: v[order[start:start + a["batch_size"]]] for k, v in flat.items()}
                logits, values = model(b["obs"])
                dist = Categorical(logits=logits)
                ratio = (dist.log_prob(b["action"]) - b["logprob"]).exp()
                advantage = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
                clip = a["clip_range"]
                policy_loss = -torch.min(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage).mean()
                loss = policy_loss + a["vf_coef"] * (values - b["ret"]).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                optimizer.step()
    rollout.close()
    assert math.isfinite(loss.item())
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["ppo", "filtered_bc", "dqn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=2500, help="env steps between evaluations")
    parser.add_argument("--speed-steps", type=int, default=20480, help="env steps for the plain-loop speed check")
    parser.add_argument("--out", default=str(REPO / "scripts/results/bench_rl.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_rl_"))
    runs = []
    for algo in args.algos:
        for seed in args.seeds:
            run = solve_run(algo, seed, args.eval_every, workdir)
            runs.append(run)
            write(args.out, {"partial": True, "runs": runs})  # a killed benchmark keeps the runs it finished
            print(f"{algo:12s} seed {seed}: " + (f"solved at {run['env_steps_to_solve']:,} env steps" if run["solved"]
                  else f"not solved in {run['final_env_steps']:,} env steps (best {run['best_eval_return']:.0f})")
                  + f", {run['wall_s']} s wall, {run['cpu_s']} CPU-s, {run['env_steps_per_sec_median']} env steps/s",
                  flush=True)
    summary = {}
    for algo in args.algos:
        mine = [r for r in runs if r["algo"] == algo]
        steps = [r["env_steps_to_solve"] for r in mine if r["solved"]]
        summary[algo] = {"solved": f"{len(steps)}/{len(mine)}",
                         "median_env_steps_to_solve": statistics.median(steps) if len(steps) == len(mine) else None,
                         "median_wall_s": statistics.median(r["wall_s"] for r in mine)}
    speed = {}
    if "ppo" in args.algos:
        plain = plain_ppo_env_steps_per_sec(args.speed_steps)
        lightning = statistics.median(r["env_steps_per_sec_median"] for r in runs if r["algo"] == "ppo")
        speed = {"plain_pytorch_ppo_env_steps_per_sec": round(plain, 1),
                 "mimicry_ppo_env_steps_per_sec": lightning, "ratio": round(lightning / plain, 3)}
    print("\nalgo          solved  median env steps to 475   median wall s")
    for algo, s in summary.items():
        print(f"{algo:12s}  {s['solved']:6s}  {str(s['median_env_steps_to_solve']):24s}  {s['median_wall_s']}")
    if speed:
        print(f"\nPPO env steps/s (acting + learning): mimicry {speed['mimicry_ppo_env_steps_per_sec']}, "
              f"plain PyTorch loop {speed['plain_pytorch_ppo_env_steps_per_sec']} (ratio {speed['ratio']})")
    write(args.out, {"target_return": TARGET, "env": "cartpole (CartPole-v1)", "eval_every": args.eval_every,
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared, loaded)",
                     "summary": summary, "speed": speed, "runs": runs})
    print(f"wrote {args.out}")


def write(path: str, results: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
