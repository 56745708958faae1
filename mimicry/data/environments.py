"""The environments of the `rl` task, in one place: gymnasium makers, vectorized and seeded.

Every environment here gives flat float32 observations (a discrete state becomes a one-hot, a
MiniGrid view one-hots of its cells) so that one MLP fits them all. Vector envs run with gymnasium
1.x's ``SAME_STEP`` autoreset: when an episode ends, ``step`` already returns the next episode's first
observation and ``info["final_obs"]`` holds the true last one, which a truncated episode needs to
bootstrap its value from.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from mimicry.errors import MimicryError


class OneHotObservation(gym.ObservationWrapper):
    """A discrete state (FrozenLake's cell index) as a one-hot float vector."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.n = int(env.observation_space.n)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.n,), np.float32)

    def observation(self, observation: int) -> np.ndarray:
        one_hot = np.zeros(self.n, np.float32)
        one_hot[int(observation)] = 1.0
        return one_hot


class FloatObservation(gym.ObservationWrapper):
    """Observations as flat float32 vectors (what the networks take)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        size = int(np.prod(env.observation_space.shape))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, np.float32).reshape(-1)


# Every maker takes gymnasium's ``render_mode`` (None, or "rgb_array" for `mimicry sample`'s video).
def _gym(env_id: str, **kwargs) -> Callable[..., gym.Env]:
    return lambda render_mode=None: FloatObservation(gym.make(env_id, render_mode=render_mode, **kwargs))


def _frozen_lake(render_mode: str | None = None) -> gym.Env:
    # deterministic 4x4 lake: the reward (1) comes only on reaching the goal
    return OneHotObservation(gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False, max_episode_steps=100,
                                      render_mode=render_mode))


class MiniGridOneHot(gym.ObservationWrapper):
    """MiniGrid's egocentric 7x7 view as one-hots (object type, colour, door state per cell) plus the
    agent's direction. The raw view holds small integer codes (object 0-10, colour 0-5, state 0-2) that
    an MLP would read as magnitudes (a goal = 8 "is more" than a key = 5); ImgObsWrapper also drops the
    direction. What the agent carries shows in its own cell of the view (MiniGrid draws it there)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

        self.sizes = (len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX))  # 11, 6, 3
        view = env.observation_space["image"].shape[:2]
        self.cells = int(np.prod(view))
        size = self.cells * sum(self.sizes) + 4
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), np.float32)

    def observation(self, observation: dict) -> np.ndarray:
        image = observation["image"].reshape(self.cells, 3)
        parts = [np.eye(n, dtype=np.float32)[image[:, channel]].reshape(-1) for channel, n in enumerate(self.sizes)]
        return np.concatenate([*parts, np.eye(4, dtype=np.float32)[observation["direction"]]])


def _door_key(render_mode: str | None = None) -> gym.Env:
    import minigrid  # noqa: F401  (registers the MiniGrid environments)

    # MiniGrid's own limit: 250 steps (10 · 5²); the only reward, 1 − 0.9 · steps/250, comes at the goal
    return MiniGridOneHot(gym.make("MiniGrid-DoorKey-5x5-v0", render_mode=render_mode))


def _key_to_door(render_mode: str | None = None, show_key: bool = False) -> gym.Env:
    import mimicry.data.key_to_door  # noqa: F401  (registers mimicry/KeyToDoor-v0)

    # three rooms: a key, a distractor, a door that pays 1 only with the key (mimicry/data/key_to_door.py);
    # show_key: the observation also says whether the key is held (then no memory is needed)
    return gym.make("mimicry/KeyToDoor-v0", render_mode=render_mode, show_key=show_key)


#: name → maker of one (unwrapped-vector) environment; a maker's keyword arguments beyond
#: ``render_mode`` are the environment's options (conf/env/<name>.yaml, e.g. ``env.show_key``)
ENVIRONMENTS: dict[str, Callable[..., gym.Env]] = {
    "cartpole": _gym("CartPole-v1"),
    "acrobot": _gym("Acrobot-v1"),
    "mountain_car": _gym("MountainCar-v0"),
    "mountain_car_continuous": _gym("MountainCarContinuous-v0"),
    "pendulum": _gym("Pendulum-v1"),
    "frozen_lake": _frozen_lake,
    "door_key": _door_key,
    "key_to_door": _key_to_door,
}


@dataclass(frozen=True)
class EnvSpec:
    """What a network needs to know of an environment (and the options that made it)."""
    name: str
    obs_dim: int
    n_actions: int | None  # None: continuous actions
    max_episode_steps: int | None
    options: dict = field(default_factory=dict)  # the maker's settings, e.g. {"show_key": False}

    @property
    def discrete(self) -> bool:
        return self.n_actions is not None


def check_env_name(name: str) -> None:
    if name not in ENVIRONMENTS:
        raise MimicryError(f"unknown environment {name!r}; known: {', '.join(sorted(ENVIRONMENTS))} "
                           f"(e.g. env=cartpole)")


def check_env_options(name: str, options: dict | None) -> dict:
    """``options`` as the maker of ``name`` takes them; one that it does not know → MimicryError."""
    check_env_name(name)
    known = [p for p in inspect.signature(ENVIRONMENTS[name]).parameters if p != "render_mode"]
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise MimicryError(f"env={name} has no option {', '.join(unknown)}; "
                           + (f"its options: {', '.join(known)}" if known else "it takes none"))
    return dict(options or {})


def option_overrides(options: dict | None) -> list[str]:
    """Environment options as the command line sets them, e.g. ["env.show_key=false"]."""
    return [f"env.{key}={str(value).lower() if isinstance(value, bool) else value}"
            for key, value in (options or {}).items()]


def make_env(name: str, render_mode: str | None = None, options: dict | None = None) -> gym.Env:
    """One environment by name and options (unknown name or option → MimicryError listing the known ones)."""
    options = check_env_options(name, options)
    try:
        return ENVIRONMENTS[name](render_mode=render_mode, **options)
    except ImportError as error:
        raise MimicryError(f"env={name} needs a package that is not installed ({error.name}); "
                           f"install it with: pip install {error.name}") from None


def env_spec(name: str, options: dict | None = None) -> EnvSpec:
    env = make_env(name, options=options)
    try:
        space = env.action_space
        n_actions = int(space.n) if isinstance(space, gym.spaces.Discrete) else None
        return EnvSpec(name, int(env.observation_space.shape[0]), n_actions,
                       env.spec.max_episode_steps if env.spec is not None else None, dict(options or {}))
    finally:
        env.close()


def require_discrete(spec: EnvSpec, algo: str) -> None:
    """The algorithms here pick one of N actions; a continuous-action environment is refused before work starts."""
    if not spec.discrete:
        discrete = ", ".join(n for n in sorted(ENVIRONMENTS) if n not in ("mountain_car_continuous", "pendulum"))
        raise MimicryError(f"env={spec.name} has continuous actions, but algo={algo} handles discrete actions only; "
                           f"choose a discrete environment: {discrete}")


def make_vector_env(name: str, num_envs: int, seed: int, render_mode: str | None = None,
                    options: dict | None = None) -> tuple[SyncVectorEnv, np.ndarray]:
    """``num_envs`` copies in one process, reset with seeds seed, seed+1, ...; returns (envs, first observations)."""
    make_env(name, options=options).close()  # a missing package or an unknown option fails here, with its message
    maker = partial(ENVIRONMENTS[name], render_mode=render_mode, **(options or {}))
    envs = SyncVectorEnv([maker for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    observations, _ = envs.reset(seed=seed)
    return envs, observations
