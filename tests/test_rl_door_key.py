"""env=door_key: the observation an MLP can read (one-hot view, direction, what is carried) and
MiniGrid's own episode end (250 steps, truncated rather than terminated)."""
import numpy as np
import pytest

pytest.importorskip("minigrid")

from minigrid.core.world_object import Key  # noqa: E402

from mimicry.data.environments import env_spec, make_env  # noqa: E402

CELLS, OBJECTS, COLOURS, STATES = 49, 11, 6, 3


def split(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    objects = obs[:CELLS * OBJECTS].reshape(CELLS, OBJECTS)
    colours = obs[CELLS * OBJECTS:CELLS * (OBJECTS + COLOURS)].reshape(CELLS, COLOURS)
    states = obs[CELLS * (OBJECTS + COLOURS):CELLS * (OBJECTS + COLOURS + STATES)].reshape(CELLS, STATES)
    return objects, colours, states, obs[-4:]


def test_door_key_observation_is_one_hot_with_direction_and_carried_key():
    env = make_env("door_key")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (CELLS * (OBJECTS + COLOURS + STATES) + 4,) == env.observation_space.shape
    assert obs.dtype == np.float32 and set(np.unique(obs)) <= {0.0, 1.0}
    objects, colours, states, direction = split(obs)
    for part in (objects, colours, states):
        np.testing.assert_array_equal(part.sum(1), 1.0)  # exactly one code per cell
    np.testing.assert_array_equal(objects.argmax(1), env.unwrapped.gen_obs()["image"][..., 0].reshape(-1))
    assert direction.argmax() == env.unwrapped.agent_dir

    obs, *_ = env.step(0)  # turn left: the direction one-hot follows
    assert split(obs)[3].argmax() == env.unwrapped.agent_dir

    # the agent's own cell (bottom centre of the egocentric view) shows what it carries
    agent_cell = 3 * 7 + 6  # MiniGrid's image is indexed [x, y]; the agent stands at x=3, y=6
    assert split(obs)[0][agent_cell].argmax() != 5
    env.unwrapped.carrying = Key("yellow")
    carried = env.observation(env.unwrapped.gen_obs())
    assert split(carried)[0][agent_cell].argmax() == 5  # OBJECT_TO_IDX["key"]


def test_door_key_ends_after_minigrids_250_steps_as_truncated():
    env = make_env("door_key")
    env.reset(seed=0)
    assert env.unwrapped.max_steps == 250
    for step in range(250):
        _, reward, terminated, truncated, _ = env.step(6)  # "done": does nothing in DoorKey
        assert not terminated and reward == 0.0
        assert truncated == (step == 249)
    assert env_spec("door_key").obs_dim == env.observation_space.shape[0]
