"""``reward=model reward.from_run=RM_RUN``: a learned reward, the score of a ``task=reward_model`` run.

The run is read as ``mimicry sample`` reads it (a checkpoint is data: its recipe composes the
installed configs, its weights are tensors) and kept in memory for the next call. It scores the
prompt + continuation, as it was trained to; the RL-on-text routes pass the prompts.
"""
from __future__ import annotations

import functools

from mimicry.errors import MimicryError

REWARD_MODEL_TASK = "mimicry.tasks.reward_model.RewardModel"


def reward_model(texts: list[str], from_run: str, prompts: list[str] | None = None) -> list[float]:
    """The reward model's score of each ``prompts[i] + texts[i]`` (prompts default to empty)."""
    return _load(str(from_run)).score_texts(list(texts), list(prompts) if prompts is not None else None)


@functools.lru_cache(maxsize=4)
def _load(run: str):
    from mimicry.checkpoints import checkpoint_task_name, find_checkpoint, load_task, read_checkpoint

    path = find_checkpoint(run)
    name = checkpoint_task_name(read_checkpoint(path))  # by name, before anything is built
    if name != REWARD_MODEL_TASK:
        raise MimicryError(f"reward.from_run={run} is a {name.rsplit('.', 1)[-1]} run; reward=model needs a run of "
                           f"task=reward_model (mimicry train task=reward_model init_from=LM_RUN data=preferences "
                           f"data.path=FILE)")
    return load_task(path)
