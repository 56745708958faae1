"""PPO: a critic that predicts later reward gives every action a reward of its own.

Reference: the critic imitates the returns; the advantage (how much better an action did than the
critic predicted, by GAE) is the per-action "fake reward" the policy climbs, inside a trust region
(the clipped ratio). Read top to bottom: act → advantages → minibatch updates. One Lightning batch
is one rollout; its ``update_epochs`` passes of minibatch updates run inside ``training_step``
(``ppo_updates``, stepped by hand). The objective itself (mimicry/losses/policy.py) and
``ppo_updates`` are shared with PPO on text (text_ppo.py).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import torch
from hydra.utils import instantiate
from torch.distributions import Categorical

from mimicry.data.rollouts import VectorRollout, gae
from mimicry.errors import MimicryError
from mimicry.losses.policy import PPOTerms, policy_shift, ppo_objective
from mimicry.tasks.rl.base import ReinforcementTask


class PPO(ReinforcementTask):
    algo_name = "ppo"
    whole_number_settings = ("num_envs", "n_steps", "batch_size", "update_epochs")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, algo: dict, env: str = "cartpole",
                 seed: int = 0, total_env_steps: int = 100_000, eval_every_env_steps: int = 5_000,
                 eval_episodes: int = 10, eval_seed: int = 10_000, stop_at_return: float | None = None,
                 torch_threads: int | None = 1, sample_every_n_steps: int = 0,
                 env_options: dict | None = None):
        super().__init__(model, loss, optim, data_spec, algo, env, seed, total_env_steps, eval_every_env_steps,
                         eval_episodes, eval_seed, stop_at_return, torch_threads, sample_every_n_steps, env_options)
        if algo["batch_size"] > algo["num_envs"] * algo["n_steps"]:
            raise MimicryError(f"algo.batch_size={algo['batch_size']} is larger than a rollout "
                               f"(num_envs × n_steps = {algo['num_envs'] * algo['n_steps']}); lower it or raise n_steps")
        self.model = instantiate(model, obs_dim=self.spec.obs_dim, n_actions=self.spec.n_actions)
        self.rollout: VectorRollout | None = None  # started on the first batch, so that `mimicry sample` runs no env
        self.automatic_optimization = False  # a batch is a whole rollout: its minibatch updates are stepped here

    # ---- acting ------------------------------------------------------------------------------
    def policy_step(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, value = self.model(obs.to(self.device))
        dist = Categorical(logits=logits)
        action = dist.sample()
        return {"action": action.cpu(), "logprob": dist.log_prob(action).cpu(), "value": value.cpu()}

    def act(self, obs: torch.Tensor, greedy: bool) -> torch.Tensor:
        logits = self.model.logits(obs)
        return logits.argmax(-1) if greedy else Categorical(logits=logits).sample()

    def collect(self) -> dict[str, torch.Tensor]:
        """One rollout with the current policy, turned into a reference: advantages and returns."""
        a = self.algo
        if self.rollout is None:
            self.rollout = VectorRollout(self.spec.name, a["num_envs"], self.hparams.seed + self.env_steps,
                                         self.spec.options)
        data = self.rollout.collect(self.policy_step, a["n_steps"])   # (T, N, ...)
        with torch.no_grad():
            next_values = self.model.value(data["next_obs"].to(self.device)).cpu()
        advantages, returns = gae(data["reward"], data["value"], next_values, data["terminated"], data["truncated"],
                                  a["gamma"], a["gae_lambda"])
        self.env_steps += a["num_envs"] * a["n_steps"]

        # what the logs show of this rollout
        self.episode_stats(*self.rollout.pop_episodes())
        variance = returns.var()
        self.rollout_stats["rollout/explained_variance"] = float(1 - (returns - data["value"]).var() / variance) \
            if variance > 0 else 0.0
        self.time_env_steps()

        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  (T, N, ...) → (T·N, ...)
        return {"obs": flat(data["obs"]), "action": flat(data["action"]), "logprob": flat(data["logprob"]),
                "value": flat(data["value"]), "advantage": flat(advantages), "return": flat(returns)}

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        end = self.epoch_end_env_steps()
        while self.env_steps < end:
            yield self.collect()  # one Lightning batch = one rollout

    def env_steps_per_batch(self) -> int:
        return self.algo["num_envs"] * self.algo["n_steps"]

    def minibatches(self, rollout: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        """``update_epochs`` passes over the rollout, each in a fresh random order."""
        a = self.algo
        size = len(rollout["obs"])
        for _ in range(a["update_epochs"]):
            order = torch.randperm(size)
            for start in range(0, size, a["batch_size"]):
                index = order[start:start + a["batch_size"]]
                yield {k: v[index] for k, v in rollout.items()}

    # ---- learning ----------------------------------------------------------------------------
    def policy_and_value(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(batch["obs"])

    def training_step(self, rollout: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return ppo_updates(self, self.minibatches(rollout))

    def planned_updates(self) -> int:
        a, rollout = self.algo, self.env_steps_per_batch()
        return math.ceil(self.hparams.total_env_steps / rollout) * a["update_epochs"] * math.ceil(rollout / a["batch_size"])

    def on_train_end(self) -> None:
        if self.rollout is not None:
            self.rollout.close()


def annealed_clip_range(algo: dict, env_steps: int, total_env_steps: int) -> float:
    """algo.clip_range, decaying linearly to 0 over the run when algo.clip_anneal is set."""
    if not algo["clip_anneal"]:
        return algo["clip_range"]
    return algo["clip_range"] * max(0.0, 1.0 - env_steps / total_env_steps)


def ppo_terms(task: ReinforcementTask, batch: dict[str, Any], clip: float) -> PPOTerms:
    """PPO's objective on one minibatch, for any task with ``policy_and_value(batch)`` (action logits
    (..., A) and the critic's values (...), one per action taken) and a batch holding each action's
    "action" | "logprob" | "advantage" | "return" in the same shape. A pure function: no step, no log."""
    a = task.algo
    logits, values = task.policy_and_value(batch)
    action, logprob, advantage, returns = (batch[k].reshape(-1) for k in ("action", "logprob", "advantage", "return"))
    return ppo_objective(logits.reshape(-1, logits.size(-1)), values.reshape(-1), action, logprob, advantage, returns,
                         task.compare, clip, a["vf_coef"], a["ent_coef"], a["normalize_advantage"])


def ppo_updates(task: ReinforcementTask, minibatches: Iterable[dict[str, Any]]) -> torch.Tensor:
    """PPO's learning phase on one rollout: one update per minibatch (``ppo_terms``), inside the clip
    range of this point of the run; the curves people read, from the last one. Returns its loss (what
    the divergence guard watches)."""
    clip = annealed_clip_range(task.algo, task.env_steps, task.hparams.total_env_steps)
    for batch in minibatches:
        terms = ppo_terms(task, batch, clip)
        task.step_optimizer(terms.loss)
    if task.is_logging_step():
        approx_kl, clip_fraction = policy_shift(terms.log_ratio, clip)
        n = len(terms.log_ratio)
        for name, value in (("train/loss", terms.loss), ("train/policy_loss", terms.policy_loss),
                            ("train/value_loss", terms.value_loss), ("train/entropy", terms.entropy),
                            ("train/approx_kl", approx_kl), ("train/clip_fraction", clip_fraction),
                            ("train/clip_range", clip)):
            task.log(name, value, on_step=True, on_epoch=False, batch_size=n, prog_bar=name == "train/loss")
        task.log_rollout(n)
    return terms.loss.detach()
