"""From a ``reward:`` config to a callable ``texts → one float per text``, checked before work starts.

A reward given on the command line (``reward._target_=my_module.my_reward``) is the user's own
choice and is imported as given. A run read back from a file never names one: its recipe chooses a
registered reward (an option of conf/reward/, whose ``_target_`` is ours), and ``resume=`` refuses a
saved ``reward._target_`` (mimicry/recipe.py, mimicry/saved_overrides.py).
"""
from __future__ import annotations

import functools
import importlib
import inspect
import math
from typing import Any, Callable

from mimicry.errors import MimicryError

Reward = Callable[[list[str]], list[float]]

#: texts a new reward is tried on before any work starts
PROBE_TEXTS = ["To be, or not to be: that is the question.", "My lord, I will."]


def _import(target: str) -> Callable:
    module_name, _, name = target.rpartition(".")
    if not module_name:
        raise MimicryError(f"reward._target_={target!r} cannot be imported: give module.function, "
                           f"e.g. reward._target_=my_module.my_reward")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise MimicryError(f"reward._target_={target} cannot be imported ({error}); is {module_name} on the "
                           f"Python path (run from its folder, or pip install it)?") from None
    found = getattr(module, name, None)
    if not callable(found):
        raise MimicryError(f"reward._target_={target} cannot be imported: {module_name} has no callable {name!r}")
    return found


def build_reward(spec: dict[str, Any]) -> Reward:
    """``{"_target_": "pkg.fn", **options}`` → ``texts ↦ fn(texts, **options)``."""
    target = spec.get("_target_") if isinstance(spec, dict) else None
    if not isinstance(target, str) or not target:
        raise MimicryError("env=text needs a reward: reward=contains_words|avoid_letter|sentence_length|"
                           "lm_likelihood, or your own with reward=custom reward._target_=my_module.my_reward")
    function = _import(target)
    options = {k: v for k, v in spec.items() if not k.startswith("_")}
    try:
        inspect.signature(function).bind(PROBE_TEXTS, **options)
    except TypeError as error:
        raise MimicryError(f"reward._target_={target} does not take (texts, {', '.join(f'{k}=' for k in options)}) "
                           f"({error}); start from reward=custom to pass no other options") from None
    except ValueError:  # builtins without a signature: the probe call below decides
        pass
    return functools.partial(function, **options)


def check_reward(reward: Reward, name: str, texts: list[str] = PROBE_TEXTS) -> list[float]:
    """Score ``texts`` and insist on one finite number per text; returns the scores."""
    try:
        scores = reward(list(texts))
    except MimicryError:  # already one line naming the problem (e.g. reward=model given a run of another task)
        raise
    except Exception as error:  # the user's code: say where it failed, in one line
        raise MimicryError(f"reward._target_={name} failed on a test list of {len(texts)} texts: "
                           f"{type(error).__name__}: {error}") from None
    return as_scores(scores, len(texts), name)


def as_scores(scores: Any, n: int, name: str) -> list[float]:
    """One finite float per text, or a one-line error naming the reward."""
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise MimicryError(f"reward._target_={name} must return one number per text (a list of {n} floats); "
                           f"it returned {type(scores).__name__} {str(scores)[:60]!r}") from None
    if len(values) != n:
        raise MimicryError(f"reward._target_={name} returned {len(values)} numbers for {n} texts; it must "
                           f"return one number per text")
    if not all(math.isfinite(v) for v in values):
        raise MimicryError(f"reward._target_={name} returned a non-finite number ({values[:4]}...); "
                           f"rewards must be finite")
    return values
