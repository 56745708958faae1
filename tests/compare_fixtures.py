"""Fixture run directories for `mimicry compare`, written file by file as a real run writes them
(summary.json, .hydra/{overrides,config,hydra}.yaml, tb/ events through torch's SummaryWriter).
Used by tests/test_compare.py and scripts/bench_compare.py."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import yaml

BASE_CONFIG = {
    "seed": 0, "monitor": "val/loss", "monitor_mode": "min",
    "optim": {"lr": 1.0e-3, "weight_decay": 0.1},
    "model": {"_target_": "mimicry.models.gpt.GPT", "n_layer": 2, "n_embd": 64, "block_size": 64},
    "data": {"_target_": "mimicry.data.text.TextDataModule", "batch_size": 16, "block_size": "${model.block_size}"},
}
BASE_CHOICES = {"task": "lm", "model": "gpt", "loss": "next_token", "data": "pydoc", "trainer": "cpu"}


def write_run(run_dir: Path, overrides: list[str], curves: dict[str, list[tuple[int, float]]], *,
              status: str = "completed", config: dict | None = None, hydra: dict | None = None,
              seconds_per_step: float = 0.01) -> Path:
    """A run directory whose config is BASE_CONFIG (or `config`) with the overrides applied, and whose
    events hold `curves` ({tag: [(step, value)]}); summary.json's metrics are the curves' last values.
    `hydra`: a full `hydra` node for hydra.yaml (a composed one is as large as a real run's)."""
    from torch.utils.tensorboard import SummaryWriter

    config = copy.deepcopy(config or BASE_CONFIG)
    hydra = copy.deepcopy(hydra or {"runtime": {"choices": BASE_CHOICES}})
    choices = hydra["runtime"]["choices"] = dict(hydra["runtime"]["choices"])
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        if key in choices:
            choices[key] = value
            continue
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)

    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}, sort_keys=False))

    start = time.time()
    writer = SummaryWriter(log_dir=str(run_dir / "tb"))
    for tag, points in curves.items():
        for step, value in points:
            writer.add_scalar(tag, value, step, walltime=start + step * seconds_per_step)
    writer.close()

    monitor, mode = config["monitor"], config["monitor_mode"]
    steps = max((s for points in curves.values() for s, _ in points), default=0)
    summary = {
        "status": status, "task": choices["task"], "overrides": overrides, "steps": steps,
        "wall_time_s": round(steps * seconds_per_step, 2),
        "metrics": {tag: points[-1][1] for tag, points in curves.items() if points},
        "best": ({monitor: (min if mode == "min" else max)(v for _, v in curves[monitor])} if curves.get(monitor) else {}),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir


def loss_curve(final: float, steps: int = 100, every: int = 10, start: float = 4.0) -> list[tuple[int, float]]:
    """A loss falling from `start` towards `final`, logged every `every` steps (last point = final)."""
    points = range(every, steps + 1, every)
    return [(s, final + (start - final) * (1 - s / steps) ** 2) for s in points]
