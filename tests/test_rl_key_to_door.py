"""Key-to-Door: the reward comes only on reaching the door holding the key, seeds reproduce, a
vector of them steps together, and it draws itself with numpy alone."""
from __future__ import annotations

import numpy as np
import torch

from mimicry.data.environments import env_spec, make_env, make_vector_env
from mimicry.data.key_to_door import MOVES
from mimicry.data.rollouts import run_episodes

UP, DOWN, LEFT, RIGHT = range(4)


def path(start: np.ndarray, goal: np.ndarray) -> list[int]:
    dx, dy = goal - start
    return [RIGHT if dx > 0 else LEFT] * abs(int(dx)) + [DOWN if dy > 0 else UP] * abs(int(dy))


def play(env, plan: list[int]) -> tuple[float, bool, list]:
    total, infos = 0.0, []
    for action in plan:
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        infos.append(info)
        if terminated or truncated:
            return total, True, infos
    return total, False, infos


def test_the_door_pays_only_with_the_key():
    env = make_env("key_to_door").unwrapped
    for seed in range(5):
        for fetch_key in (True, False):
            env.reset(seed=seed)
            key, door, start = env.key.copy(), env.door.copy(), env.start.copy()
            # room 1: fetch the key, or walk away from it; then wait out the room and the distractor room
            # (without it: stay at the entrance, bumping into the bottom wall; the key is never there)
            plan = path(start, key) if fetch_key else []
            plan += [DOWN] * (env.steps_per_room[0] - len(plan))
            plan += [DOWN] * env.steps_per_room[1]
            plan += path(start, door)
            total, ended, infos = play(env, plan)
            assert infos[env.steps_per_room[0] - 1]["has_key"] is fetch_key
            assert total == (1.0 if fetch_key else 0.0)
            assert ended is fetch_key  # with the key the door ends the episode; without it, time runs on
            if not fetch_key:  # and waiting out the last room gives nothing either
                total, ended, _ = play(env, [DOWN] * env.steps_per_room[2])
                assert total == 0.0 and ended


def test_seeds_reproduce_and_the_random_policy_rarely_succeeds():
    random_policy = lambda obs: torch.randint(0, 4, (len(obs),))  # noqa: E731
    torch.manual_seed(0)
    first = run_episodes("key_to_door", random_policy, 200, seed=3, record=True)
    torch.manual_seed(0)
    again = run_episodes("key_to_door", random_policy, 200, seed=3, record=True)
    assert np.array_equal(first["observations"], again["observations"])
    assert np.array_equal(first["returns"], again["returns"])
    assert 0.0 < first["returns"].mean() < 0.2        # about 7%: a few successes to learn from
    assert set(np.unique(first["rewards"])) <= {0.0, 1.0}
    assert first["lengths"].max() == 24                 # 3 rooms × 8 steps, at most
    envs, obs = make_vector_env("key_to_door", 4, seed=3)
    other, other_obs = make_vector_env("key_to_door", 4, seed=4)
    assert obs.shape == (4, env_spec("key_to_door").obs_dim) and not np.array_equal(obs, other_obs)
    envs.close(), other.close()


def test_it_renders_an_rgb_array_with_numpy():
    env = make_env("key_to_door", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    env.step(UP)
    assert not np.array_equal(env.render(), frame)  # the agent moved
    assert len(MOVES) == env.action_space.n
