"""RL benchmark, in sections that run separately (each prints a table and writes its JSON):

cartpole (the default): CartPole-v1 through the real CLI with the default settings, each algorithm
and seed run to its whole env-step budget (no early stop), with a greedy evaluation (10 episodes,
fixed seeds) every --eval-every env steps. Per run, what holds against the target mean return of
475 (scripts/what_holds.py): the first success (env steps; the "first touch"), the mean of the last
5 evaluations, the share of evaluations at or above 475 after the first success, and the worst one
after it; and wall / CPU time. → scripts/results/bench_rl.json

    python scripts/bench_rl.py                       # ppo, filtered_bc, dqn; seeds 0 1 2
    python scripts/bench_rl.py --algos ppo dqn --seeds 0 1 2
    python scripts/bench_rl.py --algos ppo --seeds 0 --eval-every 2048

dqn: "a DQN that stays solved": default `algo=dqn`, seeds 0-2 to the whole budget; per seed the first
evaluation ≥ 475, the final one and the worst one after the first. → scripts/results/bench_rl_dqn.json

    python scripts/bench_rl.py --section dqn

speed: env steps/s (acting and learning, evaluation excluded) of `algo=ppo` and `algo=dqn` through
the CLI, each next to a plain PyTorch loop of the same algorithm built from the same pieces
(rollout, network, objective, optimizer): the cost of Lightning. Measured alternately, back to back,
three times each; both sides report the median of env steps/s between consecutive rollouts (DQN:
acting phases). → scripts/results/bench_rl_speed.json

    python scripts/bench_rl.py --section speed

The other sections compare the three routes from late reward to
imitation: PPO (a critic's per-action reward), the Decision Transformer (a model of returns asked
for a high one) and filtered / plain behaviour cloning (imitate the best / all attempts):

    python scripts/bench_rl.py --section dt_cartpole   # DT on a recorded PPO + random dataset, asked for 500
    python scripts/bench_rl.py --section key_to_door   # DT (context: the whole episode), %BC, BC from 1,000 random episodes
    python scripts/bench_rl.py --section key_to_door_show_key   # the same on env.show_key=true (DT: one step of context)
    python scripts/bench_rl.py --section door_key      # MiniGrid DoorKey-5x5: PPO, and DT / %BC / BC from random episodes
    python scripts/bench_rl.py --section plot          # docs/rl_routes.png from the JSON files
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
sys.path.insert(0, str(REPO / "scripts"))
from mimicry.cuda_probe import drop_failing_nvml_probe  # noqa: E402
from mimicry.run_reading import scalar_curves  # noqa: E402
from what_holds import LAST_K, holds_row, what_holds  # noqa: E402
TARGET = 475.0


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a run logged, as (step, value) pairs."""
    return {tag: list(zip(curve.steps.astype(int).tolist(), curve.values.tolist()))
            for tag, curve in scalar_curves(run_dir).items()}


def budget_run(algo: str, seed: int, eval_every: int, workdir: Path, *overrides: str, name: str = "") -> dict:
    """One training run to the algo's whole env-step budget (no early stop), and what held in it."""
    run_dir = workdir / f"{name or algo}_seed{seed}"
    args = [sys.executable, "-m", "mimicry.cli", "train", "task=rl", f"algo={algo}", f"seed={seed}",
            "task.stop_at_return=null", f"task.eval_every_env_steps={eval_every}",
            f"hydra.run.dir={run_dir}", "callbacks.progress=null", *overrides]
    cpu, started = child_cpu_seconds(), time.perf_counter()
    result = subprocess.run(args, cwd=workdir, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall, cpu = time.perf_counter() - started, child_cpu_seconds() - cpu
    if result.returncode != 0:
        raise SystemExit(f"{algo} seed {seed} failed:\n{result.stderr[-3000:]}")
    found = scalars(run_dir)
    # the evaluation and the env-step counter are logged together at each evaluation's step
    env_steps_at = dict(found["rollout/env_steps"])
    evals = [(int(env_steps_at.get(step)), value) for step, value in sorted(found["eval/return_mean"])]
    speed = [v for _, v in found.get("rollout/env_steps_per_sec", [])]
    return {"algo": algo, "seed": seed, "overrides": list(overrides), **what_holds(evals, TARGET),
            "final_env_steps": int(max(env_steps_at.values())), "best_eval_return": max(v for _, v in evals),
            "evals": [{"env_steps": e, "return_mean": v} for e, v in evals],
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "env_steps_per_sec_median": round(statistics.median(speed), 1) if speed else None}


def median_rate(marks: list[tuple[float, int]]) -> float:
    """The median of env steps/s between consecutive (time, env steps) marks: the statistic mimicry's
    logged rollout/env_steps_per_sec gives the CLI side (cli_env_steps_per_sec), so both sides are
    measured alike (a mean over the whole run would count DQN's update-free first 1,000 steps)."""
    return statistics.median((n1 - n0) / (t1 - t0) for (t0, n0), (t1, n1) in zip(marks, marks[1:]))


def plain_ppo_env_steps_per_sec(env_steps: int, seed: int = 0) -> float:
    """The same PPO (settings of conf/algo/ppo.yaml) as a plain PyTorch loop: no Lightning, no
    logging, no evaluation. The same rollout, GAE, network, objective, optimizer and schedule code,
    so that the ratio to mimicry's speed is the cost of the framework around them."""
    import math

    import torch
    import yaml
    from torch.distributions import Categorical

    from mimicry.data.rollouts import VectorRollout, gae
    from mimicry.losses.policy import ppo_objective
    from mimicry.models.actor_critic import ActorCritic
    from mimicry.tasks.base import build_optimizer

    torch.set_num_threads(1)
    drop_failing_nvml_probe()  # what `mimicry train` does: both sides skip the same failing probe
    torch.manual_seed(seed)
    config = yaml.safe_load((REPO / "conf/algo/ppo.yaml").read_text())
    a = config["algo"]
    model = ActorCritic(4, 2, [64, 64], "tanh")
    rollout_size = a["num_envs"] * a["n_steps"]
    updates = math.ceil(env_steps / rollout_size) * a["update_epochs"] * math.ceil(rollout_size / a["batch_size"])
    built = build_optimizer(model.parameters(), config["optim"], updates)
    optimizer, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
    value_loss = torch.nn.MSELoss()
    rollout = VectorRollout("cartpole", a["num_envs"], seed)

    def policy(obs: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, value = model(obs)
        dist = Categorical(logits=logits)
        action = dist.sample()
        return {"action": action, "logprob": dist.log_prob(action), "value": value}

    steps, marks = 0, []
    while steps < env_steps:
        data = rollout.collect(policy, a["n_steps"])
        marks.append((time.perf_counter(), steps))  # where mimicry's time_env_steps marks a rollout
        with torch.no_grad():
            next_values = model.value(data["next_obs"])
        adv, ret = gae(data["reward"], data["value"], next_values, data["terminated"], data["truncated"],
                       a["gamma"], a["gae_lambda"])
        steps += rollout_size
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in
                {"obs": data["obs"], "action": data["action"], "logprob": data["logprob"], "adv": adv, "ret": ret}.items()}
        for _ in range(a["update_epochs"]):
            order = torch.randperm(rollout_size)
            for start in range(0, rollout_size, a["batch_size"]):
                b = {k: v[order[start:start + a["batch_size"]]] for k, v in flat.items()}
                logits, values = model(b["obs"])
                clip = a["clip_range"] * (max(0.0, 1.0 - steps / env_steps) if a["clip_anneal"] else 1.0)
                terms = ppo_objective(logits, values, b["action"], b["logprob"], b["adv"], b["ret"], value_loss, clip,
                                      a["vf_coef"], a["ent_coef"], a["normalize_advantage"])
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), a["max_grad_norm"])
                optimizer.step()
                schedule.step()
    rollout.close()
    assert math.isfinite(terms.loss.item())
    return median_rate(marks)


def plain_dqn_env_steps_per_sec(env_steps: int, seed: int = 0) -> float:
    """The same DQN (settings of conf/algo/dqn.yaml) as a plain PyTorch loop: no Lightning, no
    logging, no evaluation. The same environments, replay buffer, network, target, loss and optimizer code."""
    import copy
    import math

    import torch
    import yaml

    from mimicry.data.replay import ReplayBuffer
    from mimicry.data.rollouts import VectorRollout
    from mimicry.losses.td import Huber, q_target
    from mimicry.models.q_network import QNetwork
    from mimicry.tasks.base import build_optimizer

    torch.set_num_threads(1)
    drop_failing_nvml_probe()  # what `mimicry train` does: both sides skip the same failing probe
    torch.manual_seed(seed)
    config = yaml.safe_load((REPO / "conf/algo/dqn.yaml").read_text())
    a = config["algo"]
    model = QNetwork(4, 2, [256, 256], "relu")
    target = copy.deepcopy(model).requires_grad_(False)
    updates = max(1, math.ceil(max(0, env_steps - a["learning_starts"]) / a["train_freq"]) * a["gradient_steps"])
    built = build_optimizer(model.parameters(), config["optim"], updates)
    optimizer, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
    huber = Huber()
    rollout = VectorRollout("cartpole", a["num_envs"], seed)
    buffer = ReplayBuffer(a["buffer_size"], 4)

    steps, marks = 0, []
    while steps < env_steps:
        for _ in range(a["train_freq"] // a["num_envs"]):
            progress = steps / (a["exploration_fraction"] * env_steps)
            epsilon = a["exploration_final_eps"] if progress >= 1 else \
                a["exploration_initial_eps"] + progress * (a["exploration_final_eps"] - a["exploration_initial_eps"])
            with torch.no_grad():
                best = model(torch.as_tensor(rollout.obs)).argmax(-1)
            explore = torch.rand(len(best)) < epsilon
            action = torch.where(explore, torch.randint_like(best, 2), best)
            t = rollout.step(action.numpy())
            buffer.add(t["obs"], t["action"], t["reward"], t["next_obs"], t["terminated"])
            before, steps = steps, steps + a["num_envs"]
            if steps // a["target_update_interval"] > before // a["target_update_interval"]:
                target.load_state_dict(model.state_dict())
        rollout.pop_episodes()
        marks.append((time.perf_counter(), steps))  # where mimicry's time_env_steps marks a phase
        if len(buffer) >= a["learning_starts"]:
            for _ in range(a["gradient_steps"]):
                b = buffer.sample(a["batch_size"])
                with torch.no_grad():
                    reference = q_target(b["reward"], b["terminated"], target(b["next_obs"]), None, a["gamma"])
                prediction = model(b["obs"]).gather(1, b["action"].unsqueeze(1)).squeeze(1)
                loss = huber(prediction, reference)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), a["max_grad_norm"])
                optimizer.step()
                schedule.step()
    rollout.close()
    return median_rate(marks)


def cli_env_steps_per_sec(algo: str, env_steps: int, workdir: Path, name: str) -> float:
    """Median env steps/s that a run of ``algo`` through the CLI logs (evaluation excluded)."""
    run_dir = workdir / name
    args = [sys.executable, "-m", "mimicry.cli", "train", "task=rl", f"algo={algo}", f"task.total_env_steps={env_steps}",
            f"task.eval_every_env_steps={env_steps}", f"hydra.run.dir={run_dir}", "callbacks.progress=null"]
    result = subprocess.run(args, cwd=workdir, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise SystemExit(f"{algo} speed run failed:\n{result.stderr[-3000:]}")
    return statistics.median(v for _, v in scalars(run_dir)["rollout/env_steps_per_sec"])


def section_speed(workdir: Path, repeats: int = 3) -> None:
    plain = {"ppo": plain_ppo_env_steps_per_sec, "dqn": plain_dqn_env_steps_per_sec}
    env_steps = {"ppo": 20480, "dqn": 20480}
    results = {}
    for algo in ("ppo", "dqn"):
        cli, loop = [], []
        for r in range(repeats):  # alternately, so that a change in the machine's load hits both
            cli.append(cli_env_steps_per_sec(algo, env_steps[algo], workdir, f"{algo}_{r}"))
            loop.append(plain[algo](env_steps[algo], seed=r))
            print(f"{algo} repeat {r}: mimicry {cli[-1]:.0f}, plain PyTorch loop {loop[-1]:.0f} env steps/s", flush=True)
        results[algo] = {"env_steps": env_steps[algo], "mimicry_env_steps_per_sec": [round(v, 1) for v in cli],
                         "plain_pytorch_env_steps_per_sec": [round(v, 1) for v in loop],
                         "ratio_of_medians": round(statistics.median(cli) / statistics.median(loop), 3)}
        print(f"{algo}: ratio {results[algo]['ratio_of_medians']} (median mimicry / median plain loop)", flush=True)
    write(str(REPO / "scripts/results/bench_rl_speed.json"),
          {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, one thread per process", **results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["ppo", "filtered_bc", "dqn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=2500, help="env steps between evaluations")
    parser.add_argument("--out", default=str(REPO / "scripts/results/bench_rl.json"))
    parser.add_argument("--section", default="cartpole",
                        choices=["cartpole", "dqn", "speed", "dt_cartpole", "key_to_door", "key_to_door_show_key", "door_key",
                                 "plot"])
    parser.add_argument("--routes", nargs="+", help="key_to_door sections: these routes only (decision_transformer, "
                        "filtered_bc_top10, bc); runs completed in --workdir are read, not rerun")
    parser.add_argument("--workdir", help="the sections' run folder (default: a new temporary one); runs "
                        "already completed there are read, not rerun")
    args = parser.parse_args()
    if args.section != "cartpole":
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"bench_rl_{args.section}_"))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.section.startswith("key_to_door"):
            section_key_to_door(workdir, show_key=args.section.endswith("show_key"), routes=args.routes,
                                run_seeds=args.seeds)
        else:
            SECTIONS[args.section](workdir)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench_rl_"))
    runs = []
    for algo in args.algos:
        for seed in args.seeds:
            run = budget_run(algo, seed, args.eval_every, workdir)
            runs.append(run)
            write(args.out, {"partial": True, "runs": runs})  # a killed benchmark keeps the runs it finished
            print(holds_row(f"{algo} seed {seed}", run) + f"   {run['final_env_steps']:,} env steps, "
                  f"{run['wall_s']} s wall, {run['cpu_s']} CPU-s", flush=True)
    summary = {}
    for algo in args.algos:
        mine = [r for r in runs if r["algo"] == algo]
        touched = [r["first_success"] for r in mine if r["first_success"] is not None]
        summary[algo] = {"touched_target": f"{len(touched)}/{len(mine)}",
                         "median_first_success": statistics.median(touched) if len(touched) == len(mine) else None,
                         f"median_last_{LAST_K}_mean": statistics.median(r["last_k_mean"] for r in mine),
                         "median_wall_s": statistics.median(r["wall_s"] for r in mine)}
    print(f"\nalgo          touched 475  median first success  median last-{LAST_K} mean  median wall s")
    for algo, s in summary.items():
        print(f"{algo:12s}  {s['touched_target']:11s}  {str(s['median_first_success']):20s}  "
              f"{s[f'median_last_{LAST_K}_mean']:18.1f}  {s['median_wall_s']}")
    write(args.out, {"target_return": TARGET, "env": "cartpole (CartPole-v1)", "eval_every": args.eval_every,
                     "budget": "each algo's task.total_env_steps (conf/algo/*.yaml), no early stop",
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared, loaded)",
                     "summary": summary, "runs": runs})
    print(f"wrote {args.out}")


def section_dqn(workdir: Path, seeds: tuple[int, ...] = (0, 1, 2), eval_every: int = 2500) -> None:
    """DQN that stays solved: default `task=rl algo=dqn`, each seed run to its whole budget (no early
    stop), a greedy evaluation (10 episodes) every 2,500 env steps. Per seed: the first evaluation
    ≥ 475 (env steps), the final one, and the worst one after the first. Passes when the final one is
    ≥ 475 on every seed and none after the first 475 is below 400."""
    out = str(REPO / "scripts/results/bench_rl_dqn.json")
    runs = []
    for seed in seeds:
        run = budget_run("dqn", seed, eval_every, workdir)
        run["holds"] = run["final"] >= TARGET and (run["worst_after_first"] is None or run["worst_after_first"] >= 400)
        runs.append(run)
        write(out, {"partial": True, "runs": runs})
        print(f"dqn seed {seed}: first solve {run['first_success']}, final {run['final']:.1f}, worst after first "
              f"solve {run['worst_after_first']}, {run['wall_s']} s wall, {run['cpu_s']} CPU-s", flush=True)
    passed = all(r["holds"] for r in runs)
    results = {"target_return": TARGET, "criterion": "final ≥ 475 on every seed; no evaluation after the first "
               "≥ 475 below 400", "passed": passed, "eval_every": eval_every, "machine": machine(),
               "per_seed": [{k: r[k] for k in ("seed", "first_success", "final", "worst_after_first", "holds")}
                            for r in runs], "runs": runs}
    write(out, results)
    print(f"{'PASSED' if passed else 'FAILED'}: {results['criterion']}; wrote {out}")


def write(path: str, results: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))



# ---- the three routes: PPO, Decision Transformer, filtered / plain behaviour cloning ----------------

def train(workdir: Path, name: str, *overrides: str) -> dict:
    """One `mimicry train task=rl ...` run; its summary, its TensorBoard scalars, wall and CPU seconds.
    A run already completed in ``workdir`` (an interrupted benchmark given the same --workdir) is read, not rerun."""
    run_dir = workdir / name
    timing = workdir / f"{name}.timing.json"
    done = (run_dir / "summary.json").is_file() and json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    if not done:
        cpu, started = child_cpu_seconds(), time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "mimicry.cli", "train", "task=rl", *overrides,
                                 f"hydra.run.dir={run_dir}", "callbacks.progress=null"], cwd=workdir,
                                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall, cpu = time.perf_counter() - started, child_cpu_seconds() - cpu
        if result.returncode != 0:
            raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
        timing.write_text(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}))
    times = json.loads(timing.read_text()) if timing.is_file() else {"wall_s": None, "cpu_s": None}
    summary = json.loads((run_dir / "summary.json").read_text())
    found = scalars(run_dir)
    env_steps_at = dict(found.get("rollout/env_steps", []))
    evals = [{"step": step, "env_steps": env_steps_at.get(step), "return_mean": value}
             for step, value in sorted(found["eval/return_mean"])]
    return {"name": name, "overrides": list(overrides), "metrics": summary["metrics"], "evals": evals,
            "final_eval_return": evals[-1]["return_mean"], "best_eval_return": max(e["return_mean"] for e in evals),
            **times, "run_dir": str(run_dir)}


def random_dataset(env: str, episodes: int, path: Path, seed: int = 0, env_options: dict | None = None) -> dict:
    """``episodes`` random-policy episodes, recorded by the same code a dataset-less bc/DT run uses."""
    import numpy as np
    import torch

    from mimicry.data.episodes import load_episodes
    from mimicry.data.recording import record_mixed_dataset

    torch.manual_seed(seed)
    cpu = time.process_time()
    if not path.is_file():  # (kept in --workdir)
        record_mixed_dataset(env, path, seed, random_episodes=episodes, ppo_env_steps=0, ppo_episodes=0,
                             env_options=env_options)
    returns = load_episodes(path).returns()
    top = np.sort(returns)[-max(1, len(returns) // 10):]
    return {"path": str(path), "episodes": len(returns), "env_steps": int(load_episodes(path).episode_lengths.sum()),
            "return_mean": float(returns.mean()), "return_max": float(returns.max()),
            "top10_return_mean": float(top.mean()), "success_rate": float((returns > 0).mean()),
            "cpu_s": round(time.process_time() - cpu, 1)}


def offline_routes(env: str, dataset: Path, seeds: dict[str, list[int]], dt: list[str], bc: list[str],
                   eval_episodes: int, workdir: Path, extra: list[str] = (), name: str = "") -> list[dict]:
    """DT, %BC (top 10%) and BC, each trained on ``dataset`` and evaluated greedily on eval_episodes episodes."""
    routes = {"decision_transformer": ["algo=decision_transformer", *dt],
              "filtered_bc_top10": ["algo=bc", "algo.keep_fraction=0.1", *bc],
              "bc": ["algo=bc", "algo.keep_fraction=1.0", *bc]}
    runs = []
    for route, overrides in routes.items():
        for seed in seeds.get(route, []):
            run = train(workdir, f"{name or env}_{route}_seed{seed}", f"env={env}", *extra, f"seed={seed}",
                        f"algo.dataset={dataset}", f"task.eval_episodes={eval_episodes}", *overrides)
            run.update(route=route, seed=seed)
            runs.append(run)
            print(f"{name or env} {route:22s} seed {seed}: final eval return {run['final_eval_return']:.3f} "
                  f"(best {run['best_eval_return']:.3f}), {run['cpu_s']} CPU-s, {run['wall_s']} s wall", flush=True)
    return runs


def route_summary(runs: list[dict]) -> dict:
    import statistics

    out = {}
    for route in dict.fromkeys(r["route"] for r in runs):
        finals = [r["final_eval_return"] for r in runs if r["route"] == route]
        out[route] = {"final_eval_return_mean": round(statistics.mean(finals), 4), "per_seed": [round(f, 4) for f in finals],
                      "cpu_s": [r["cpu_s"] for r in runs if r["route"] == route]}  # None: not measured
    return out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other engineers' jobs (load varied)"


def section_dt_cartpole(workdir: Path) -> None:
    """DT with no dataset given: it records 500 random-policy episodes + a 10k-env-step PPO run's 500
    (sampled-action) episodes, then trains on them, asked for 500. Its final greedy eval return
    (10 episodes) next to the dataset's mean, best and top-10% mean (target: ≥ 90% of the latter)."""
    runs = []
    for seed in (0,):
        run = train(workdir, f"cartpole_dt_seed{seed}", "algo=decision_transformer", "algo.target_return=500",
                    f"seed={seed}")
        m = run["metrics"]
        run.update(seed=seed, dataset={k: m[f"dataset/{k}"] for k in ("return_mean", "return_max", "top10_return_mean")})
        run["ratio_to_top10"] = round(run["final_eval_return"] / m["dataset/top10_return_mean"], 3)
        from mimicry.data.episodes import load_episodes

        recorded = load_episodes(Path(run["run_dir"]) / "recorded_episodes.npz")
        # env steps behind the dataset: PPO's training (conf/algo/decision_transformer.yaml: 10,000) + the episodes
        run["dataset_env_steps"] = int(recorded.episode_lengths.sum()) + 10_000
        run["dataset"]["episodes"] = len(recorded.episode_lengths)
        runs.append(run)
        print(f"cartpole DT seed {seed}: final eval return {run['final_eval_return']:.1f} (best "
              f"{run['best_eval_return']:.1f}); dataset mean {m['dataset/return_mean']:.1f}, best "
              f"{m['dataset/return_max']:.1f}, top-10% mean {m['dataset/top10_return_mean']:.1f}: "
              f"{100 * run['ratio_to_top10']:.0f}% of it (target ≥ 90%); {run['cpu_s']} CPU-s (recording included)",
              flush=True)
    write(str(REPO / "scripts/results/bench_rl_dt_cartpole.json"),
          {"env": "cartpole", "target_return": 500, "machine": machine(), "runs": runs})


# env.show_key=true (the Markov version): the observation holds all that matters (the key held, the room,
# the cells), so one step of context suffices; a small GPT with large batches: only ~7% of random
# episodes succeed, and the return-conditioned difference is learned from those windows alone (tried
# here: the paper-size DT with 24 steps of context at batch 64 stayed at the random policy's 1-6% after
# 500 updates).
KEY_TO_DOOR_SHOWN_DT = ["algo.context=1", "model.block_size=3", "model.n_layer=2", "model.n_embd=64", "model.n_head=2",
                        "model.dropout=0.0", "algo.batch_size=2048", "algo.updates=2000", "algo.updates_per_eval=500",
                        "optim.lr=2e-3", "optim.min_lr=2e-4", "algo.max_timestep=64"]
# the default (the paper's version: the later rooms hide whether the key is held): a context spanning
# the whole episode (3 rooms × 8 steps = 24 steps, 72 tokens), so the key room is in every window that
# ends at the door; the same small GPT, fewer windows a batch (each carries up to 24 actions)
KEY_TO_DOOR_DT = ["algo.context=24", "model.block_size=72", "model.n_layer=2", "model.n_embd=64", "model.n_head=2",
                  "model.dropout=0.0", "algo.batch_size=64", "algo.updates=1500", "algo.updates_per_eval=500",
                  "optim.lr=2e-3", "optim.min_lr=2e-4", "algo.max_timestep=64"]
# behaviour cloning: 3,000 minibatches of 256 (fewer underfit: top-10% BC reached 27% after 1,000)
OFFLINE_BC = ["algo.updates=3000", "algo.updates_per_eval=1000"]
PAPER_KEY_TO_DOOR = {"decision_transformer": 0.718, "filtered_bc_top10": 0.699, "bc": 0.014}


def section_key_to_door(workdir: Path, show_key: bool = False, routes: list[str] | None = None,
                        run_seeds: list[int] = (0, 1, 2)) -> None:
    """Key-to-Door from 1,000 random-policy episodes: success rate (eval return mean over 100 greedy
    episodes) of DT, %BC (top 10%) and BC, seeds 0-2 each. The paper (1,000 random trajectories):
    71.8%, 69.9%, 1.4%. Default: the later rooms hide the key (DT with a context spanning the episode);
    show_key: today's Markov version (env.show_key=true, DT with one step of context)."""
    # (--routes, --seeds: some only, e.g. in a second process; a last run of all of them writes the whole JSON)
    seeds = {route: list(run_seeds) for route in routes or PAPER_KEY_TO_DOOR}
    name = "key_to_door_show_key" if show_key else "key_to_door"
    options = {"show_key": show_key}
    dataset = random_dataset("key_to_door", 1000, workdir / f"{name}_random_1000.npz", env_options=options)
    print(f"{name} dataset: {dataset['episodes']} random episodes, success rate {dataset['success_rate']:.3f}",
          flush=True)
    runs = offline_routes("key_to_door", Path(dataset["path"]), seeds, KEY_TO_DOOR_SHOWN_DT if show_key else KEY_TO_DOOR_DT,
                          OFFLINE_BC, 100, workdir, extra=[f"env.show_key={str(show_key).lower()}"], name=name)
    results = {"env": f"key_to_door env.show_key={str(show_key).lower()}", "dataset": dataset, "eval_episodes": 100,
               "machine": machine(), "paper_success": PAPER_KEY_TO_DOOR, "summary": route_summary(runs), "runs": runs}
    write(str(REPO / f"scripts/results/bench_rl_{name}.json"), results)
    print(json.dumps(results["summary"], indent=1))


def section_key_to_door_show_key(workdir: Path) -> None:
    section_key_to_door(workdir, show_key=True)


# PPO on MiniGrid-DoorKey-5x5 with RL Zoo's settings, kept in conf/algo_env/ppo_door_key.yaml (8 envs ×
# 128 steps, minibatch 64, 10 epochs, lr 2.5e-4); run to its whole budget here (no stop at 0.9), so
# that what holds after the first success shows
DOOR_KEY_PPO = ["algo=ppo", "env=door_key", "task.stop_at_return=null"]


def section_door_key(workdir: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    """MiniGrid DoorKey-5x5: DT / %BC / BC from 1,000 random-policy episodes; then PPO to its whole
    budget, and what held against a greedy eval return of 0.9 (MiniGrid's reward is 1 − 0.9 · steps/250
    at the goal, 0 otherwise): first success, the last evaluations' mean, the share at 0.9 after it, the worst."""
    out = str(REPO / "scripts/results/bench_rl_door_key.json")
    dataset = random_dataset("door_key", 1000, workdir / "random_1000.npz")
    print(f"door_key dataset: {dataset['episodes']} random episodes, success rate {dataset['success_rate']:.3f}",
          flush=True)
    dt = ["algo.context=4", "model.block_size=12", "model.n_layer=2", "model.n_embd=64", "model.n_head=2",
          "model.dropout=0.0", "algo.batch_size=512", "algo.updates=1500", "algo.updates_per_eval=500",
          "optim.lr=2e-3", "optim.min_lr=2e-4", "algo.max_timestep=256"]
    runs = offline_routes("door_key", Path(dataset["path"]), {"decision_transformer": [0], "filtered_bc_top10": [0],
                                                              "bc": [0]}, dt, OFFLINE_BC, 20, workdir)
    results = {"env": "door_key (MiniGrid-DoorKey-5x5-v0)", "dataset": dataset, "eval_episodes": 20,
               "machine": machine(), "summary": route_summary(runs), "runs": runs, "ppo_overrides": DOOR_KEY_PPO, "ppo": []}
    write(out, results)  # the offline part stands on its own if PPO is cut short
    print(json.dumps(results["summary"], indent=1))
    for seed in seeds:
        run = train(workdir, f"door_key_ppo_seed{seed}", *DOOR_KEY_PPO, f"seed={seed}")
        run.update(route="ppo", seed=seed, **what_holds([(e["env_steps"], e["return_mean"]) for e in run["evals"]], 0.9))
        results["ppo"].append(run)
        touched = [r["first_success"] for r in results["ppo"] if r["first_success"] is not None]
        results["ppo_summary"] = {"touched_target": f"{len(touched)}/{len(results['ppo'])}", "median_first_success":
                                  statistics.median(touched) if len(touched) == len(results["ppo"]) else None,
                                  f"median_last_{LAST_K}_mean": statistics.median(r["last_k_mean"] for r in results["ppo"])}
        write(out, results)
        print(holds_row(f"door_key ppo seed {seed}", run) + f", {run['cpu_s']} CPU-s", flush=True)


def section_plot(workdir: Path) -> None:
    """docs/rl_routes.png: per environment, greedy eval return against the env steps behind it: the
    online routes as curves (each seed), the offline ones (trained on a recorded dataset) as a
    marker at the env steps that recorded their dataset (mean over seeds, min-max bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = REPO / "scripts/results"
    load = lambda name: json.loads((results / name).read_text()) if (results / name).is_file() else None  # noqa: E731
    colours = {"ppo": "tab:blue", "dqn": "tab:orange", "filtered_bc": "tab:green", "decision_transformer": "tab:red",
               "filtered_bc_top10": "tab:purple", "bc": "tab:gray"}
    labels = {"ppo": "PPO (critic → per-action reward)", "dqn": "DQN", "filtered_bc": "filtered BC, online (top 25%)",
              "decision_transformer": "Decision Transformer (offline)", "filtered_bc_top10": "%BC, top 10% (offline)",
              "bc": "BC, all episodes (offline)"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))

    def offline(ax, runs: list[dict], x: float) -> None:
        for i, route in enumerate(dict.fromkeys(r["route"] for r in runs)):
            finals = [r["final_eval_return"] for r in runs if r["route"] == route]
            mean = sum(finals) / len(finals)
            ax.errorbar([x * (1 + 0.08 * (i - 1))], [mean], yerr=[[mean - min(finals)], [max(finals) - mean]],
                        fmt="D", ms=8, capsize=4, color=colours[route], label=f"{labels[route]}: {mean:.3f}")

    def online(ax, runs: list[dict], route: str, solved_at: str = "env_steps") -> None:
        for j, run in enumerate(r for r in runs if r.get("route", r.get("algo")) == route):
            xs = [e[solved_at] for e in run["evals"] if e[solved_at] is not None]
            ys = [e["return_mean"] for e in run["evals"] if e[solved_at] is not None]
            ax.plot(xs, ys, "-o", ms=3, color=colours[route], alpha=0.8, label=labels[route] if j == 0 else None)

    cart, dt = load("bench_rl.json"), load("bench_rl_dt_cartpole.json")
    ax = axes[0]
    if cart:
        for algo in ("ppo", "dqn", "filtered_bc"):
            online(ax, cart["runs"], algo)
    if dt:
        for run in dt["runs"]:
            ax.errorbar([run["dataset_env_steps"]], [run["final_eval_return"]], fmt="D", ms=8,
                        color=colours["decision_transformer"],
                        label=f"{labels['decision_transformer']}, asked for 500: {run['final_eval_return']:.0f}")
            ax.axhline(run["dataset"]["top10_return_mean"], ls=":", color="tab:red", lw=1,
                       label=f"its dataset: top-10% mean {run['dataset']['top10_return_mean']:.0f}, "
                             f"mean {run['dataset']['return_mean']:.0f}")
    ax.set(title="CartPole-v1", xlabel="env steps", ylabel="greedy eval return (10 episodes)", xscale="log")

    k2d = load("bench_rl_key_to_door.json")
    ax = axes[1]
    if k2d:  # offline only: one bar per route (mean over seeds, each seed a dot), the paper's number beside it
        for i, (route, paper) in enumerate(k2d["paper_success"].items()):
            finals = [r["final_eval_return"] for r in k2d["runs"] if r["route"] == route]
            mean = sum(finals) / len(finals)
            ax.bar(i - 0.18, mean, width=0.36, color=colours[route], label=f"{labels[route]}: {mean:.3f} "
                   f"({len(finals)} seed{'s' if len(finals) > 1 else ''})")
            ax.plot([i - 0.18] * len(finals), finals, "k.", ms=6)
            ax.bar(i + 0.18, paper, width=0.36, color=colours[route], alpha=0.35, hatch="//",
                   label="the paper (Chen et al. 2021)" if i == 0 else None)
            ax.text(i - 0.18, mean + 0.02, f"{mean:.2f}", ha="center", fontsize=8)
            ax.text(i + 0.18, paper + 0.02, f"{paper:.2f}", ha="center", fontsize=8, color="dimgray")
        ax.axhline(k2d["dataset"]["success_rate"], ls=":", color="black", lw=1,
                   label=f"the random policy that recorded it: {k2d['dataset']['success_rate']:.3f}")
        ax.set_xticks(range(3), ["DT", "%BC (top 10%)", "BC"])
    ax.set(title="Key-to-Door (key hidden after its room), 1,000 random episodes",
           ylabel="success rate (100 greedy episodes)", ylim=(0, 1.4), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0])

    door = load("bench_rl_door_key.json")
    ax = axes[2]
    if door:
        online(ax, door["ppo"], "ppo")
        offline(ax, door["runs"], door["dataset"]["env_steps"])
        ax.axhline(door["dataset"]["return_mean"], ls=":", color="black", lw=1,
                   label=f"random policy: {door['dataset']['return_mean']:.3f}")
    ax.set(title="MiniGrid DoorKey-5x5", xlabel="env steps", ylabel="greedy eval return", xscale="log",
           ylim=(-0.03, 1.05))
    from matplotlib.ticker import NullFormatter

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper right" if ax is axes[1] else "upper left")
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle("Three routes from late reward to imitation: a critic's per-action reward (PPO, DQN), "
                 "a model of returns asked for a high one (DT), imitating the best attempts (filtered BC)", fontsize=10)
    fig.tight_layout()
    out = REPO / "docs/rl_routes.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


SECTIONS = {"dqn": section_dqn, "speed": section_speed, "dt_cartpole": section_dt_cartpole, "key_to_door": section_key_to_door,
            "key_to_door_show_key": section_key_to_door_show_key, "door_key": section_door_key, "plot": section_plot}


if __name__ == "__main__":
    main()
