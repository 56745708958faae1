"""Episode datasets: recorded play that offline algorithms (behaviour cloning) learn from.

The file is a NumPy ``.npz`` with the steps of all episodes, one after another:

  env            ()            the environment name (``env=...``), e.g. "cartpole"
  observations   (S, obs_dim)  float32, the observation each action was taken in
  actions        (S,)          int64
  rewards        (S,)          float32, the reward that followed the action
  terminations   (S,)          bool, the episode really ended after this step
  truncations    (S,)          bool, a time limit cut it after this step
  episode_lengths (E,)         int64, steps per episode (they sum to S)

Written by ``mimicry sample RUN_DIR episodes=1000 record=PATH`` and read by ``algo=bc``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mimicry.errors import MimicryError

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "episode_lengths")


@dataclass
class Episodes:
    env: str
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_lengths: np.ndarray

    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode."""
        ends = np.cumsum(self.episode_lengths)
        return np.add.reduceat(self.rewards, ends - self.episode_lengths) if len(ends) else np.zeros(0)

    def episode_of_step(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.episode_lengths)), self.episode_lengths)


def save_episodes(path: Path, env: str, played: dict) -> Path:
    """Write what ``run_episodes(..., record=True)`` returned."""
    path = path if path.suffix == ".npz" else path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, env=np.asarray(env),
                        observations=np.asarray(played["observations"], np.float32),
                        actions=np.asarray(played["actions"], np.int64),
                        rewards=np.asarray(played["rewards"], np.float32),
                        terminations=np.asarray(played["terminations"], bool),
                        truncations=np.asarray(played["truncations"], bool),
                        episode_lengths=np.asarray(played["lengths"], np.int64))
    return path


def load_episodes(path: str | Path, env: str | None = None, obs_dim: int | None = None,
                  env_options: dict | None = None) -> Episodes:
    """Read and check an episode dataset; with ``env``/``obs_dim``, it must be from that environment
    (``env_options``, e.g. {"show_key": False}, only name the variant in the message)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MimicryError(f"episode dataset not found: {path}; record one with "
                           f"`mimicry sample RUN_DIR episodes=1000 record={path}`")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as error:  # truncated zip, not a NumPy file, an object array...
        raise MimicryError(f"cannot read episode dataset {path}: it is damaged or not a .npz file "
                           f"({type(error).__name__}); record it again") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a lone .npy array saved under a .npz name
        raise MimicryError(f"{path} is a single NumPy array, not an episode dataset (.npz with "
                           f"{', '.join(('env', *FIELDS))})")
    with data:
        missing = [k for k in ("env", *FIELDS) if k not in data]
        if missing:
            raise MimicryError(f"{path} is not an episode dataset (missing {', '.join(missing)})")
        try:
            episodes = Episodes(str(data["env"]), *(data[k] for k in FIELDS))
        except Exception as error:  # a member that is truncated or not an array
            raise MimicryError(f"cannot read episode dataset {path}: a member is damaged ({type(error).__name__}); "
                               f"record it again") from None
    shapes = {"observations": 2, "actions": 1, "rewards": 1, "terminations": 1, "truncations": 1, "episode_lengths": 1}
    wrong = [k for k, ndim in shapes.items() if getattr(episodes, k).ndim != ndim
             or getattr(episodes, k).dtype.kind not in ("biuf" if k != "observations" else "iuf")]
    if wrong:
        raise MimicryError(f"{path}: {', '.join(wrong)} have the wrong shape or type for an episode dataset; "
                           f"the file is damaged")
    if len(episodes.episode_lengths) == 0 or len(episodes.actions) == 0:
        raise MimicryError(f"{path} holds no episodes; record some with `mimicry sample RUN_DIR episodes=1000 record=...`")
    if int(episodes.episode_lengths.sum()) != len(episodes.actions) or \
            not all(len(getattr(episodes, k)) == len(episodes.actions) for k in FIELDS[:-1]):
        raise MimicryError(f"{path}: the arrays' lengths disagree (episode_lengths sum to "
                           f"{int(episodes.episode_lengths.sum())}, {len(episodes.actions)} actions); the file is damaged")
    if env is not None and episodes.env != env:
        raise MimicryError(f"{path} was recorded in env={episodes.env}, but this run uses env={env}; "
                           f"record a dataset in env={env} or choose env={episodes.env}")
    if obs_dim is not None and episodes.observations.shape[1:] != (obs_dim,):
        from mimicry.data.environments import option_overrides

        variant = "".join(" " + o for o in option_overrides(env_options))
        raise MimicryError(f"{path}: observations of shape {episodes.observations.shape[1:]}, but env={env}{variant} gives "
                           f"({obs_dim},); the dataset is from a different environment"
                           + (" or another setting of its options" if env_options else ""))
    return episodes
