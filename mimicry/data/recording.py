"""With no dataset given, the offline algorithms (``algo=bc``, ``algo=decision_transformer``) record
one first: a mix of good and bad play in the same environment, the material they learn from.

The mix: ``random_episodes`` of a uniformly random policy, plus ``ppo_episodes`` played (sampled
actions) by the policy of a short PPO run (``ppo_env_steps``, the defaults of conf/algo/ppo.yaml),
trained through the real CLI in ``RUN_DIR/recording_ppo`` (its own log and TensorBoard files).
The dataset is kept as ``RUN_DIR/recorded_episodes.npz`` and reused when the run resumes.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from mimicry.data.environments import option_overrides
from mimicry.data.episodes import save_episodes
from mimicry.data.rollouts import run_episodes
from mimicry.errors import MimicryError

log = logging.getLogger("mimicry")

RECORDED_NAME = "recorded_episodes.npz"


def offline_dataset(algo: dict, env: str, run_dir: Path | None, seed: int, env_options: dict | None = None) -> Path:
    """The episode dataset an offline algorithm trains on: ``algo.dataset`` if given, else the one
    recorded in the run directory (recorded now if it is not there yet)."""
    if algo.get("dataset"):
        return Path(algo["dataset"]).expanduser()
    if run_dir is None:
        raise MimicryError(f"algo.dataset is not set and there is no run directory to record one into; "
                           f"give algo.dataset=PATH.npz or train with `mimicry train task=rl algo=... env={env}`")
    path = Path(run_dir) / RECORDED_NAME
    if path.is_file():
        log.info(f"no algo.dataset given: reusing the episodes recorded earlier in this run, {path}")
        return path
    record_mixed_dataset(env, path, seed, **algo["record"], env_options=env_options)
    return path


def record_mixed_dataset(env: str, path: Path, seed: int, random_episodes: int, ppo_env_steps: int,
                         ppo_episodes: int, env_options: dict | None = None) -> Path:
    """Random-policy episodes (seeds seed, seed+1, ...) plus episodes of a short PPO run's policy
    (the seeds after those), written as one episode dataset at ``path``; in ``env`` made with
    ``env_options`` (conf/env/<env>.yaml's settings, e.g. show_key)."""
    if random_episodes < 0 or ppo_episodes < 0 or ppo_env_steps < 0 or random_episodes + ppo_episodes * bool(ppo_env_steps) < 1:
        raise MimicryError(f"algo.record: random_episodes={random_episodes}, ppo_env_steps={ppo_env_steps}, "
                           f"ppo_episodes={ppo_episodes} records no episodes; raise random_episodes")
    log.info(f"no algo.dataset given: recording a mixed episode dataset first ({random_episodes} random-policy "
             f"episodes" + (f" + {ppo_episodes} episodes of a {ppo_env_steps}-env-step PPO run" if ppo_env_steps
                            and ppo_episodes else "") + f") into {path}")
    parts: list[tuple[str, dict]] = []
    if random_episodes:
        n_actions = _n_actions(env, env_options)
        random_policy = lambda obs: torch.randint(0, n_actions, (len(obs),))  # noqa: E731
        parts.append(("random", run_episodes(env, random_policy, random_episodes, seed, record=True,
                                               env_options=env_options)))
    if ppo_env_steps and ppo_episodes:
        ppo = train_short_ppo(env, path.parent / "recording_ppo", seed, ppo_env_steps, env_options)
        parts.append(("ppo", ppo.play(ppo_episodes, seed + random_episodes, greedy=False, record=True)))
    merged = {key: np.concatenate([played[key] for _, played in parts])
              for key in ("observations", "actions", "rewards", "terminations", "truncations", "lengths")}
    save_episodes(path, env, merged)
    log.info("recorded " + "; ".join(f"{len(played['returns'])} {name} episodes, return mean "
                                      f"{np.mean(played['returns']):.2f} (max {np.max(played['returns']):.2f})"
                                      for name, played in parts) + f": {path}")
    return path


def train_short_ppo(env: str, run_dir: Path, seed: int, env_steps: int, env_options: dict | None = None):
    """``mimicry train task=rl algo=ppo env=ENV env.OPTION=...`` for ``env_steps`` env steps, in its
    own run directory; returns the trained task (its last checkpoint)."""
    from mimicry.checkpoints import load_task

    log.info(f"recording: training PPO for {env_steps} env steps in {run_dir} (its log is there)")
    args = [sys.executable, "-m", "mimicry.cli", "train", "task=rl", "algo=ppo", f"env={env}", f"seed={seed}",
            *option_overrides(env_options),
            f"task.total_env_steps={env_steps}", f"task.eval_every_env_steps={env_steps}", "callbacks.progress=null",
            "hydra.run.dir='" + str(run_dir).replace("\\", "\\\\").replace("'", "\\'") + "'"]  # quoted: run dirs hold = and ,
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if result.returncode != 0 or not checkpoint.is_file():
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
        raise MimicryError(f"the PPO run that records episodes failed ({lines[-1] if lines else 'no output'}); see {run_dir}, or set "
                           f"algo.record.ppo_env_steps=0 to record random-policy episodes only")
    return load_task(checkpoint)


def _n_actions(env: str, env_options: dict | None) -> int:
    from mimicry.data.environments import env_spec

    return env_spec(env, env_options).n_actions
