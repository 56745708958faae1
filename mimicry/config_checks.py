"""Every number a user is likely to get wrong, checked before any work starts.

A wrong value (``data.batch_size=0``, ``optim.lr=-1``, ``model.dropout=1.5``) should fail in one
line that names the key, what it must be, and an example, not ten frames deep in a DataLoader.
Rules go by the key's last name, wherever it appears in the config, so a new task's
``batch_size`` or ``warmup_steps`` is checked without new code here.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from mimicry.errors import MimicryError


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole_at_least(low: int, nullable: bool = False) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: (nullable and v is None) or (_whole(v) and v >= low),
            f"a whole number ≥ {low}" + (" (or null)" if nullable else ""))


def number_in(low: float, high: float, low_open: bool = False, high_open: bool = False,
              nullable: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        if nullable and v is None:
            return True
        return _number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if math.isinf(high):
        meaning = f"a number {'>' if low_open else '≥'} {low:g}"
    else:
        meaning = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return ok, meaning + (" (or null)" if nullable else "")


def _count_or_share(v: Any) -> bool:  # Lightning's limit_*_batches / val_check_interval
    return v is None or (_whole(v) and v >= 0) or (_number(v) and 0.0 <= v <= 1.0)


def _betas(v: Any) -> bool:
    return v is None or (isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v))


def _duration(v: Any) -> bool:  # Lightning's max_time as DD:HH:MM:SS
    return v is None or (isinstance(v, str) and re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", v) is not None)


POSITIVE = whole_at_least(1)
POSITIVE_OR_NULL = whole_at_least(1, nullable=True)
COUNT = whole_at_least(0)
COUNT_OR_NULL = whole_at_least(0, nullable=True)
RATE = number_in(0, math.inf, low_open=True, high_open=True)
NON_NEGATIVE = number_in(0, math.inf, high_open=True)
NON_NEGATIVE_OR_NULL = number_in(0, math.inf, high_open=True, nullable=True)
SHARE = number_in(0, 1, high_open=True)  # dropout, val_fraction: 1 would leave nothing

#: last key name → (test, what it must be, an example of a good value)
RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    # sizes
    "batch_size": (*POSITIVE, "32"), "block_size": (*POSITIVE, "64"), "n_layer": (*POSITIVE, "4"),
    "n_head": (*POSITIVE, "4"), "n_embd": (*POSITIVE, "128"), "width": (*POSITIVE, "32"),
    "latent_dim": (*POSITIVE, "64"), "levels": (*whole_at_least(2), "16"), "image_size": (*POSITIVE_OR_NULL, "16"),
    "num_workers": (*COUNT, "0"), "limit": (*POSITIVE_OR_NULL, "1000"),
    # counts
    "num_samples": (*POSITIVE, "64"), "sample_tokens": (*POSITIVE, "200"), "steps_per_epoch": (*POSITIVE, "100"),
    "val_batches": (*POSITIVE, "10"), "completions": (*COUNT, "8"), "metrics_samples": (*whole_at_least(2), "500"),
    "d_steps": (*POSITIVE_OR_NULL, "1"), "top_k": (*POSITIVE_OR_NULL, "40"), "save_top_k": (*whole_at_least(-1), "1"),
    "accumulate_grad_batches": (*POSITIVE, "4"), "num_nodes": (*POSITIVE, "1"),
    # steps and cadences
    "max_epochs": (*whole_at_least(-1, nullable=True), "10"), "max_steps": (*whole_at_least(-1, nullable=True), "1000"),
    "min_epochs": (*COUNT_OR_NULL, "1"), "min_steps": (*COUNT_OR_NULL, "100"),
    "warmup_steps": (*COUNT, "100"), "decay_steps": (*POSITIVE_OR_NULL, "5000"),
    "log_every_n_steps": (*POSITIVE, "10"), "sample_every_n_steps": (*COUNT, "200"),
    "metrics_every_n_epochs": (*COUNT, "5"), "every_n_steps": (*COUNT_OR_NULL, "200"),
    "check_val_every_n_epoch": (*POSITIVE_OR_NULL, "1"), "num_sanity_val_steps": (*whole_at_least(-1), "1"),
    "val_check_interval": (_count_or_share, "a number of batches, or a share of an epoch in [0, 1]", "0.5"),
    "limit_train_batches": (_count_or_share, "a number of batches, or a share in [0, 1]", "0.25"),
    "limit_val_batches": (_count_or_share, "a number of batches, or a share in [0, 1]", "0.25"),
    "limit_test_batches": (_count_or_share, "a number of batches, or a share in [0, 1]", "0.25"),
    "max_time": (_duration, "a duration DD:HH:MM:SS (or null)", "00:01:30:00"),
    # rates and fractions
    "lr": (*NON_NEGATIVE, "3e-4"), "d_lr": (*NON_NEGATIVE, "2e-4"), "min_lr": (*NON_NEGATIVE, "1e-4"),
    "weight_decay": (*NON_NEGATIVE, "0.1"), "gradient_clip_val": (*NON_NEGATIVE_OR_NULL, "1.0"),
    "max_grad_norm": (*NON_NEGATIVE_OR_NULL, "0.5"),
    "betas": (_betas, "two numbers in [0, 1)", "[0.9,0.99]"),
    "dropout": (*SHARE, "0.1"), "val_fraction": (*SHARE, "0.1"), "test_fraction": (*SHARE, "0.1"), "label_smoothing": (*SHARE, "0.1"),
    "temperature": (*RATE, "0.8"), "top_p": (*number_in(0, 1, low_open=True, nullable=True), "0.9"),
    "ema_decay": (*number_in(0, 1, high_open=True), "0.999"),
    "balance_threshold": (*number_in(0, 1, low_open=True), "0.85"),
    "coverage_drop_warning": (*number_in(0, 1, low_open=True, high_open=True), "0.25"),
    "gp_weight": (*NON_NEGATIVE, "10"),
    # rl: discounts, probabilities and shares in [0, 1]; counts of envs, steps and updates
    "gamma": (*number_in(0, 1), "0.99"), "gae_lambda": (*number_in(0, 1), "0.95"),
    "clip_range": (*number_in(0, 1, low_open=True), "0.2"), "keep_fraction": (*number_in(0, 1, low_open=True), "0.25"),
    "exploration_fraction": (*number_in(0, 1), "0.1"), "exploration_initial_eps": (*number_in(0, 1), "1.0"),
    "exploration_final_eps": (*number_in(0, 1), "0.05"),
    "ent_coef": (*NON_NEGATIVE, "0.01"), "vf_coef": (*NON_NEGATIVE, "0.5"), "kl_coef": (*NON_NEGATIVE, "0.1"),
    "num_envs": (*POSITIVE, "8"), "n_steps": (*POSITIVE, "128"),
    # passes over the data per iteration: whole for ppo and filtered_bc (their whole_number_settings), a
    # share of a pass allowed for reward_conditioned on text
    "update_epochs": (*RATE, "4"),
    "buffer_size": (*POSITIVE, "100000"), "learning_starts": (*COUNT, "1000"), "train_freq": (*POSITIVE, "4"),
    "gradient_steps": (*POSITIVE, "1"), "target_update_interval": (*POSITIVE, "500"),
    "episodes_per_iteration": (*POSITIVE, "16"), "updates": (*POSITIVE, "2000"), "updates_per_eval": (*POSITIVE, "200"),
    "context": (*POSITIVE, "20"), "max_timestep": (*POSITIVE, "1000"), "pool_size": (*POSITIVE, "64"),
    "total_env_steps": (*POSITIVE, "100000"), "eval_every_env_steps": (*POSITIVE, "5000"),
    "eval_episodes": (*POSITIVE, "10"), "max_new_tokens": (*POSITIVE, "48"),
    "random_episodes": (*COUNT, "500"), "ppo_env_steps": (*COUNT, "10000"), "ppo_episodes": (*COUNT, "500"),
    # diffusion: noise levels, sampling steps, shares
    "timesteps": (*whole_at_least(2), "1000"), "steps": (*POSITIVE_OR_NULL, "50"), "eta": (*number_in(0, 1), "0.0"),
    "label_dropout": (*SHARE, "0.1"), "guidance": (*NON_NEGATIVE_OR_NULL, "2.0"), "loss_buckets": (*POSITIVE, "5"),
    "trajectory_rows": (*COUNT, "8"), "trajectory_snapshots": (*whole_at_least(2), "8"),
}


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf; a list of plain values (betas) counts as one leaf."""
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in leaves(value, f"{prefix}{key}.")]
    if isinstance(node, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in node):
        return [leaf for index, value in enumerate(node) for leaf in leaves(value, f"{prefix}{index}.")]
    return [(prefix.rstrip("."), node)]


def check_settings(cfg: DictConfig) -> None:
    """Raise one MimicryError for the first setting whose value cannot work."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    problems = []
    for key, value in leaves({k: v for k, v in plain.items() if k != "hydra"}):
        rule = RULES.get(key.rsplit(".", 1)[-1])
        if rule is None:
            continue
        test, meaning, example = rule
        if not test(value):
            problems.append(f"{key}={value!r} must be {meaning}; e.g. {key}={example}")
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise MimicryError(problems[0] + more)

