"""Imitate the successful attempts.

``FilteredBC`` (expert iteration): act with the current policy, keep the top fraction of episodes
by return, fit the policy to their actions by cross-entropy, repeat. The late reward only decides
*which* attempts are imitated; the imitation itself is plain supervised learning.

``BehaviourCloning``: the same fit on a recorded episode dataset (``algo.dataset``; none given: a
mixed one is recorded first, mimicry/data/recording.py), offline; ``algo.keep_fraction`` < 1 makes
it "%BC" (the top episodes only), 1 is plain behaviour cloning.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from hydra.utils import instantiate
from torch.distributions import Categorical

from mimicry.data.rollouts import VectorRollout, top_episodes
from mimicry.errors import MimicryError
from mimicry.tasks.rl.base import OfflineUpdates, ReinforcementTask


class FilteredBC(ReinforcementTask):
    algo_name = "filtered_bc"
    whole_number_settings = ("num_envs", "episodes_per_iteration", "batch_size", "update_epochs")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, algo: dict, env: str = "cartpole",
                 seed: int = 0, total_env_steps: int = 100_000, eval_every_env_steps: int = 5_000,
                 eval_episodes: int = 10, eval_seed: int = 10_000, stop_at_return: float | None = None,
                 torch_threads: int | None = 1, sample_every_n_steps: int = 0,
                 env_options: dict | None = None):
        super().__init__(model, loss, optim, data_spec, algo, env, seed, total_env_steps, eval_every_env_steps,
                         eval_episodes, eval_seed, stop_at_return, torch_threads, sample_every_n_steps, env_options)
        if not (isinstance(algo["keep_fraction"], (int, float)) and 0 < algo["keep_fraction"] <= 1):
            raise MimicryError(f"algo.keep_fraction={algo['keep_fraction']!r}: must be in (0, 1], e.g. 0.1 "
                               f"for the top 10% of episodes")
        self.model = instantiate(model, obs_dim=self.spec.obs_dim, n_actions=self.spec.n_actions)
        self.rollout: VectorRollout | None = None

    def act(self, obs: torch.Tensor, greedy: bool) -> torch.Tensor:
        logits = self.model.logits(obs)
        return logits.argmax(-1) if greedy else Categorical(logits=logits).sample()

    # ---- the reference: actions of the best attempts ------------------------------------------
    def attempts(self) -> list[dict[str, np.ndarray]]:
        """A batch of whole episodes played with the current (sampling) policy."""
        a = self.algo
        if self.rollout is None:
            self.rollout = VectorRollout(self.spec.name, a["num_envs"], self.hparams.seed + self.env_steps,
                                         self.spec.options)
        before = self.rollout.env_steps
        episodes = self.rollout.collect_episodes(lambda obs: self.act(obs.to(self.device), greedy=False).cpu(),
                                                 a["episodes_per_iteration"])
        self.env_steps += self.rollout.env_steps - before
        self.episode_stats(*self.rollout.pop_episodes())
        self.time_env_steps()
        return episodes

    def keep_best(self, episodes: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        """The steps of the top ``keep_fraction`` of episodes by return: what the policy imitates."""
        kept = [episodes[i] for i in top_episodes([e["return"] for e in episodes], self.algo["keep_fraction"])]
        self.rollout_stats["rollout/kept_return_min"] = float(min(e["return"] for e in kept))
        self.rollout_stats["rollout/kept_episodes"] = float(len(kept))
        return {"obs": torch.as_tensor(np.concatenate([e["obs"] for e in kept]), dtype=torch.float32),
                "action": torch.as_tensor(np.concatenate([e["action"] for e in kept]), dtype=torch.long)}

    def minibatches(self, data: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        size, batch_size = len(data["action"]), self.algo["batch_size"]
        order = torch.randperm(size)
        for start in range(0, size, batch_size):
            index = order[start:start + batch_size]
            yield {k: v[index] for k, v in data.items()}

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        end = self.epoch_end_env_steps()
        while self.env_steps < end:
            kept = self.keep_best(self.attempts())
            for _ in range(self.algo["update_epochs"]):
                yield from self.minibatches(kept)

    # ---- the imitation -----------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        reference = batch["action"]                  # what the successful attempts did
        prediction = self.model.logits(batch["obs"])  # logits over the actions
        loss = self.imitate(prediction, reference)
        if self.is_logging_step():
            entropy = Categorical(logits=prediction.detach()).entropy().mean()
            self.log("train/entropy", entropy, on_step=True, on_epoch=False, batch_size=len(reference))
            self.log_rollout(len(reference))
        return loss

    def planned_updates(self) -> float:
        return math.inf  # episode lengths decide it: the learning rate stays flat (optim.decay_steps to decay)

    def on_train_end(self) -> None:
        if self.rollout is not None:
            self.rollout.close()


class BehaviourCloning(OfflineUpdates, FilteredBC):
    """Offline: the episodes come from ``algo.dataset`` (or are recorded first), read once; no env
    steps are taken except for evaluation. One epoch is ``updates_per_eval`` minibatches."""
    algo_name = "bc"
    whole_number_settings = ("batch_size", "updates", "updates_per_eval")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, algo: dict, env: str = "cartpole",
                 seed: int = 0, total_env_steps: int = 100_000, eval_every_env_steps: int = 5_000,
                 eval_episodes: int = 10, eval_seed: int = 10_000, stop_at_return: float | None = None,
                 torch_threads: int | None = 1, sample_every_n_steps: int = 0,
                 env_options: dict | None = None):
        super().__init__(model, loss, optim, data_spec, algo, env, seed, total_env_steps, eval_every_env_steps,
                         eval_episodes, eval_seed, stop_at_return, torch_threads, sample_every_n_steps, env_options)
        self.kept: dict[str, torch.Tensor] | None = None  # read when training starts; `mimicry sample` needs no dataset

    def dataset_steps(self) -> dict[str, torch.Tensor]:
        if self.kept is None:
            episodes = self.offline_episodes()
            returns = episodes.returns()
            kept = top_episodes(returns, self.algo["keep_fraction"])
            step_mask = np.isin(episodes.episode_of_step(), kept)
            self.kept = {"obs": torch.as_tensor(episodes.observations[step_mask], dtype=torch.float32),
                         "action": torch.as_tensor(episodes.actions[step_mask], dtype=torch.long)}
            self.rollout_stats.update({"dataset/return_mean": float(returns.mean()),
                                       "dataset/return_max": float(returns.max()),
                                       "dataset/kept_return_mean": float(returns[kept].mean()),
                                       "dataset/kept_episodes": float(len(kept))})
        return self.kept

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.dataset_steps()  # a bad dataset fails before any training

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        data = self.dataset_steps()
        for _ in range(self.algo["updates_per_eval"]):
            index = torch.randint(0, len(data["action"]), (self.algo["batch_size"],))
            yield {k: v[index] for k, v in data.items()}
