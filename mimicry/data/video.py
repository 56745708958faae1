"""Videos of played episodes for ``mimicry sample RUN_DIR episodes=N``: an animated GIF written with
Pillow (a dependency already), from the environments' ``rgb_array`` frames.

Some environments draw with pygame (CartPole, Acrobot, MountainCar, FrozenLake), an optional extra
(``pip install 'mimicry[video]'``); without it, ``frames`` raises ``RenderingUnavailable`` with a
one-line note, and the episodes are still played and reported. Key-to-Door draws with numpy alone.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from gymnasium.error import DependencyNotInstalled
from PIL import Image

# pygame draws off-screen here; without these, SDL prints warnings about displays and sound devices
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

MAX_WIDTH = 320  # frames are shrunk to this width: a 500-step CartPole GIF stays a few MB


class RenderingUnavailable(Exception):
    """The environment cannot draw itself here (its drawing package is missing)."""


def frames(envs) -> tuple[np.ndarray, ...]:
    """One ``rgb_array`` frame per env of a vector env made with ``render_mode="rgb_array"``."""
    try:
        return envs.render()
    except (DependencyNotInstalled, ImportError) as error:
        raise RenderingUnavailable(f"this environment draws with a package that is not installed ({error}); "
                                   f"pip install 'mimicry[video]'") from None


def save_gif(episodes: list[list[np.ndarray]], path: Path, fps: float) -> Path:
    """The episodes one after another (each one's last frame held for half a second) as one GIF."""
    fps = min(max(float(fps), 1.0), 50.0)  # GIF viewers slow down anything faster than 20 ms a frame
    pictures: list[Image.Image] = []
    durations: list[int] = []
    for episode in episodes:
        for i, frame in enumerate(episode):
            picture = Image.fromarray(np.asarray(frame, np.uint8))
            if picture.width > MAX_WIDTH:
                picture = picture.resize((MAX_WIDTH, round(picture.height * MAX_WIDTH / picture.width)))
            elif picture.width < MAX_WIDTH // 2:  # tiny grids: nearest-neighbour up-scaling keeps them crisp
                scale = MAX_WIDTH // (2 * picture.width) + 1
                picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
            pictures.append(picture)
            durations.append(max(500, round(1000 / fps)) if i == len(episode) - 1 else round(1000 / fps))
    if not pictures:
        raise RenderingUnavailable("the environment gave no frames")
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0, optimize=False)
    return path
