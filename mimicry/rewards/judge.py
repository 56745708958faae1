"""A judge that labels preference pairs with a hidden reward and Bradley–Terry noise.

Shown two continuations with rewards r_a and r_b, the judge prefers a with probability
σ((r_a − r_b) / temperature) (Bradley & Terry 1952; the model behind RLHF's preference data):
a large gap is almost always judged right, a small one is a coin flip. temperature 0 always
prefers the higher reward (ties by a coin). The judge is a registered reward (an option of
conf/reward/, read from the installed configs) with the options typed on the command line.
"""
from __future__ import annotations

import inspect
from importlib.resources import files
from typing import Any, Callable

import numpy as np
import yaml

from mimicry.errors import MimicryError
from mimicry.rewards.loading import build_reward, check_reward


def registered_rewards() -> list[str]:
    folder = files("mimicry.conf") / "reward"
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def build_judge(name: Any, options: dict[str, Any], setting: str = "judge") -> Callable[[list[str]], list[float]]:
    """The reward ``conf/reward/<name>.yaml`` with ``options`` (judge.KEY=VALUE) over its own;
    ``setting`` names where it was chosen, for messages."""
    names = registered_rewards()
    if not isinstance(name, str) or name not in names:
        how = " (its options as judge.KEY=VALUE, e.g. judge=sentence_length judge.target=30)" if setting == "judge" \
            else " (with the options of conf/reward/<name>.yaml)"
        raise MimicryError(f"{setting}={name}: not a reward; choose one of: {', '.join(names)}{how}")
    spec = yaml.safe_load((files("mimicry.conf") / "reward" / f"{name}.yaml").read_text()) or {}
    unknown = sorted(set(options) - set(spec) - ({"_target_"} if name == "custom" else set()))
    if unknown:
        raise MimicryError(f"judge.{unknown[0]}: reward {name} has no option {unknown[0]!r}; its options: "
                           f"{', '.join(k for k in spec if not k.startswith('_')) or 'none'}")
    spec.update(options)
    missing = [key for key, value in spec.items() if value == "???"]
    if missing:
        raise MimicryError(f"judge={name} needs judge.{missing[0]}=... (e.g. judge.{missing[0]}=RUN_DIR)")
    reward = build_reward(spec)
    check_reward(reward, f"{setting}={name}")
    return reward


def takes_prompts(reward: Callable) -> bool:
    """True for a reward that reads the prompts too (``prompts=``), e.g. a learned reward model."""
    try:
        return "prompts" in inspect.signature(reward).parameters
    except (TypeError, ValueError):
        return False


def score_with_prompts(reward: Callable, texts: list[str], prompts: list[str]) -> list[float]:
    """The reward of continuations; a reward that reads prompts is given them."""
    return reward(texts, prompts=prompts) if takes_prompts(reward) else reward(texts)


def bradley_terry_prefers_first(first: np.ndarray, second: np.ndarray, temperature: float,
                                rng: np.random.Generator) -> np.ndarray:
    """For each pair, True when the judge prefers the first: with probability σ((r1 − r2) / temperature)."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
        raise MimicryError(f"judge.temperature={temperature!r}: must be a number ≥ 0 (0: always the higher reward; "
                           f"larger: noisier labels), e.g. judge.temperature=0.1")
    gap = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    if temperature == 0:
        probability = np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, 0.5))
    else:
        probability = 1.0 / (1.0 + np.exp(-np.clip(gap / temperature, -60, 60)))
    return rng.random(len(gap)) < probability
