"""Key-to-Door: the reward comes only on reaching the door holding the key, the later rooms hide
whether it is held (env.show_key=true shows it), seeds reproduce, a vector of them steps together,
and it draws itself with numpy alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import run_dirs, run_mimicry
from mimicry.checkpoints import load_task
from mimicry.data.environments import env_spec, make_env, make_vector_env
from mimicry.data.episodes import load_episodes, save_episodes
from mimicry.data.key_to_door import MOVES
from mimicry.data.rollouts import run_episodes
from mimicry.errors import MimicryError

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


def test_the_later_rooms_do_not_show_the_key_unless_asked():
    """The paper's version (the default): after the key room, fetching the key or not leaves the same
    observations, so only a memory of the key room tells them apart; env.show_key=true adds the flag."""
    seen = {}
    for show_key in (False, True):
        env = make_env("key_to_door", options={"show_key": show_key}).unwrapped
        assert env.observation_space.shape == ((11,) if show_key else (10,))
        for fetch_key in (True, False):
            obs, _ = env.reset(seed=1)
            plan = path(env.start, env.key) if fetch_key else []
            plan += [DOWN] * (env.steps_per_room[0] - len(plan)) + [DOWN] * env.steps_per_room[1]
            observations = [env.step(action)[0] for action in plan]
            assert observations[-1].shape == env.observation_space.shape
            seen[show_key, fetch_key] = np.stack(observations[env.steps_per_room[0]:])  # rooms 2 and 3
    assert np.array_equal(seen[False, True], seen[False, False])
    assert not np.array_equal(seen[True, True], seen[True, False])
    assert env_spec("key_to_door").obs_dim == 10 and env_spec("key_to_door", {"show_key": True}).obs_dim == 11


def test_an_option_the_environment_does_not_have_is_refused():
    with pytest.raises(MimicryError, match="env=cartpole has no option show_key; it takes none"):
        make_env("cartpole", options={"show_key": True})
    with pytest.raises(MimicryError, match="env=key_to_door has no option colour; its options: show_key"):
        make_vector_env("key_to_door", 2, seed=0, options={"colour": "red"})


def test_show_key_reaches_the_recorded_dataset_and_the_sampled_run(tmp_path):
    """`env.show_key=true` from the command line: the episodes a bc run records, and the task rebuilt
    from its checkpoint's recipe (what `mimicry sample` plays), see 11 floats; a dataset of the
    default version (10 floats) is refused by name."""
    run_mimicry(tmp_path, "train", "task=rl", "algo=bc", "env=key_to_door", "env.show_key=true", "model.hidden=[8]",
                "algo.record.random_episodes=20", "algo.record.ppo_env_steps=0", "algo.updates=4",
                "algo.updates_per_eval=4", "task.eval_episodes=2")
    (run_dir,) = run_dirs(tmp_path)
    recorded = load_episodes(run_dir / "recorded_episodes.npz")
    assert recorded.env == "key_to_door" and recorded.observations.shape[1] == 11
    assert (recorded.observations[:, 6] == 1.0).any()  # the held-key flag: some random episodes pick the key up
    task = load_task(run_dir)
    assert task.spec.options == {"show_key": True} and task.play(2, seed=0, record=True)["observations"].shape[1] == 11
    hidden = save_episodes(tmp_path / "hidden.npz", "key_to_door",
                           run_episodes("key_to_door", lambda obs: torch.randint(0, 4, (len(obs),)), 5, seed=0,
                                        record=True))
    task.algo["dataset"] = str(hidden)
    with pytest.raises(MimicryError, match=r"observations of shape \(10,\), but env=key_to_door env.show_key=true "
                                           r"gives \(11,\); the dataset is from a different environment or another"):
        task.offline_episodes()
