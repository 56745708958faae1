"""Rewards for RL on text: callables that take a list of texts and return one number per text.
The built-in ones live in ``mimicry.rewards.text``; ``build_reward`` turns a ``reward:`` config
(``_target_`` + keyword arguments) into such a callable and checks it before any work starts."""
from mimicry.rewards.loading import build_reward, check_reward

__all__ = ["build_reward", "check_reward"]
