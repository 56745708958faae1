"""Key-to-Door: a small gymnasium environment after the Decision Transformer paper's credit-assignment
task (Chen et al. 2021, following Mesnard et al.'s TVT).

Three rooms, one after the other, each a ``size`` × ``size`` grid visited for a fixed number of steps:

  1. the key room: the key lies at a random cell; stepping on it picks it up;
  2. a distractor room: nothing to do and, unlike the paper's apples, no reward at all;
  3. the door room: the door is at a random cell; reaching it *holding the key* gives reward 1 and
     ends the episode. Without the key the door does nothing.

The only reward comes at the very end, and it depends on what was done two rooms earlier: the
late-reward problem in its plainest form. With the defaults (4 × 4 rooms, 8 steps each), a random
policy succeeds in about 7% of episodes, a good one in all of them.

Observation (10 floats): the agent's cell, the key's cell (−1, −1 once picked up or after the key
room), the door's cell (−1, −1 before the door room), all divided by ``size - 1``; the room as a
one-hot; the share of the room's time used. Actions: up, down, left, right. The time is part of the
observation, so the end of the last room is a real termination.

As in the paper, the later rooms do not show whether the key was picked up: only a memory of the key
room carries it across the distractor room. ``show_key=True`` (``env.show_key=true``) adds an 11th
float, whether the key is held, which makes the task Markov: one step of context then suffices.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

MOVES = np.array([[0, -1], [0, 1], [-1, 0], [1, 0]])  # up, down, left, right (x, y; y grows downward)
COLOURS = {"floor": (235, 235, 225), "wall": (90, 90, 100), "agent": (215, 50, 40), "key": (240, 190, 20),
           "door": (120, 70, 30), "room_on": (70, 120, 220), "room_off": (190, 190, 200)}


class KeyToDoor(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, size: int = 4, steps_per_room: tuple[int, int, int] = (8, 8, 8), show_key: bool = False,
                 render_mode: str | None = None, cell_pixels: int = 24):
        self.size, self.steps_per_room, self.show_key = size, tuple(steps_per_room), bool(show_key)
        self.render_mode, self.cell_pixels = render_mode, cell_pixels
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (11 if show_key else 10,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.start = np.array([size // 2, size - 1])  # where the agent enters each room

    # ---- the dynamics ------------------------------------------------------------------------------
    def _random_cell(self) -> np.ndarray:
        """Any cell but the entrance (so the key and the door always take at least one step)."""
        cells = [np.array([x, y]) for y in range(self.size) for x in range(self.size)
                 if (x, y) != tuple(self.start)]
        return cells[self.np_random.integers(len(cells))]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.room, self.time_in_room = 0, 0
        self.agent = self.start.copy()
        self.key, self.door = self._random_cell(), self._random_cell()
        self.has_key = False
        return self._observation(), {}

    def step(self, action: int):
        self.agent = np.clip(self.agent + MOVES[int(action)], 0, self.size - 1)
        self.time_in_room += 1
        reward, terminated = 0.0, False
        if self.room == 0 and not self.has_key and (self.agent == self.key).all():
            self.has_key = True
        if self.room == 2 and self.has_key and (self.agent == self.door).all():
            reward, terminated = 1.0, True
        if not terminated and self.time_in_room >= self.steps_per_room[self.room]:
            if self.room == 2:
                terminated = True  # out of time in the last room: the episode is over
            else:
                self.room, self.time_in_room, self.agent = self.room + 1, 0, self.start.copy()
        return self._observation(), reward, terminated, False, {"has_key": self.has_key, "room": self.room}

    def _observation(self) -> np.ndarray:
        scale = self.size - 1
        key = self.key / scale if self.room == 0 and not self.has_key else np.full(2, -1.0)
        door = self.door / scale if self.room == 2 else np.full(2, -1.0)
        room = np.eye(3)[self.room]
        used = self.time_in_room / self.steps_per_room[self.room]
        held = [float(self.has_key)] if self.show_key else []  # hidden: the paper's version, memory needed
        return np.concatenate([self.agent / scale, key, door, held, room, [used]]).astype(np.float32)

    # ---- a picture (numpy only) ---------------------------------------------------------------------
    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        c, n = self.cell_pixels, self.size + 2  # a wall all around
        image = np.empty((c + n * c, n * c, 3), np.uint8)
        image[:] = COLOURS["wall"]
        image[c + c:c + (n - 1) * c, c:(n - 1) * c] = COLOURS["floor"]

        def fill(cell: np.ndarray, colour: str, margin: int) -> None:
            x, y = int(cell[0]) + 1, int(cell[1]) + 1
            image[c + y * c + margin:c + (y + 1) * c - margin, x * c + margin:(x + 1) * c - margin] = COLOURS[colour]

        if self.room == 0 and not self.has_key:
            fill(self.key, "key", c // 4)
        if self.room == 2:
            fill(self.door, "door", 1)
        fill(self.agent, "agent", c // 6)
        # the strip above: three squares for the rooms (this one lit), and the key once held
        image[:c] = 255
        for room in range(3):
            image[c // 4:3 * c // 4, room * c + c // 4:room * c + 3 * c // 4] = \
                COLOURS["room_on" if room == self.room else "room_off"]
        if self.has_key:
            image[c // 4:3 * c // 4, (n - 1) * c + c // 4:n * c - c // 4] = COLOURS["key"]
        return image


gym.register("mimicry/KeyToDoor-v0", entry_point=KeyToDoor)
