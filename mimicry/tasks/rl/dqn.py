"""DQN: a Q-network that predicts later reward gives every action a value of its own.

Reference: the bootstrapped target r + γ·Q_target(s', a') (no bootstrap after a terminal step),
from transitions replayed out of a buffer; the Q-network imitates it under the Huber loss. The
policy is ε-greedy on the Q-values. Read top to bottom: act and store → sample → imitate. One
Lightning batch is one training phase: its ``gradient_steps`` minibatches, updated inside
``training_step`` (stepped by hand, as PPO's rollout).
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Iterator

import torch
from hydra.utils import instantiate

from mimicry.data.replay import ReplayBuffer
from mimicry.data.rollouts import VectorRollout
from mimicry.errors import MimicryError
from mimicry.losses.td import q_target
from mimicry.tasks.rl.base import ReinforcementTask

log = logging.getLogger("mimicry")


class DQN(ReinforcementTask):
    algo_name = "dqn"
    whole_number_settings = ("num_envs", "buffer_size", "learning_starts", "batch_size", "train_freq",
                             "gradient_steps", "target_update_interval")
    charts = {**ReinforcementTask.charts,
              "dqn": {"exploration ε": [r"^rollout/epsilon$"], "replay size": [r"^rollout/replay_size$"]}}

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, algo: dict, env: str = "cartpole",
                 seed: int = 0, total_env_steps: int = 50_000, eval_every_env_steps: int = 5_000,
                 eval_episodes: int = 10, eval_seed: int = 10_000, stop_at_return: float | None = None,
                 torch_threads: int | None = 1, sample_every_n_steps: int = 0,
                 env_options: dict | None = None):
        super().__init__(model, loss, optim, data_spec, algo, env, seed, total_env_steps, eval_every_env_steps,
                         eval_episodes, eval_seed, stop_at_return, torch_threads, sample_every_n_steps, env_options)
        if algo["train_freq"] % algo["num_envs"]:
            raise MimicryError(f"algo.train_freq={algo['train_freq']} is not a multiple of algo.num_envs="
                               f"{algo['num_envs']}; make it one (every vector step is num_envs env steps)")
        tau = algo.get("tau", 1.0)
        if not (isinstance(tau, (int, float)) and 0 < tau <= 1):
            raise MimicryError(f"algo.tau={tau!r}: must be in (0, 1]: 1 copies the Q-network into the target, "
                               f"e.g. 0.005 moves the target that share of the way at each update interval")
        self.model = instantiate(model, obs_dim=self.spec.obs_dim, n_actions=self.spec.n_actions)
        self.target = copy.deepcopy(self.model).requires_grad_(False)  # a slowly following copy for the targets
        self.rollout: VectorRollout | None = None
        self.buffer: ReplayBuffer | None = None
        self.automatic_optimization = False  # a batch is a whole training phase: its updates are stepped here

    # ---- acting ------------------------------------------------------------------------------
    def epsilon(self) -> float:
        a = self.algo
        progress = self.env_steps / (a["exploration_fraction"] * self.hparams.total_env_steps)
        start, end = a["exploration_initial_eps"], a["exploration_final_eps"]
        return end if progress >= 1 else start + progress * (end - start)

    def act(self, obs: torch.Tensor, greedy: bool) -> torch.Tensor:
        best = self.model(obs).argmax(-1)
        if greedy:
            return best
        explore = torch.rand(len(best), device=best.device) < self.epsilon()
        return torch.where(explore, torch.randint_like(best, self.spec.n_actions), best)

    @torch.no_grad()
    def sync_target(self) -> None:
        """target ← τ·online + (1 − τ)·target (algo.tau; 1: a copy; Polyak averaging below 1)."""
        tau = self.algo.get("tau", 1.0)
        if tau >= 1:
            self.target.load_state_dict(self.model.state_dict())
            return
        for target, online in zip(self.target.state_dict().values(), self.model.state_dict().values()):
            if target.is_floating_point():
                target.lerp_(online, tau)
            else:  # an integer buffer (a counter) has no average
                target.copy_(online)

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        a = self.algo
        if self.rollout is None:
            self.rollout = VectorRollout(self.spec.name, a["num_envs"], self.hparams.seed + self.env_steps,
                                         self.spec.options)
            self.buffer = ReplayBuffer(a["buffer_size"], self.spec.obs_dim)
        end = self.epoch_end_env_steps()
        while self.env_steps < end:
            # act: train_freq env steps, ε-greedy, every transition into the replay buffer
            for _ in range(a["train_freq"] // a["num_envs"]):
                with torch.no_grad():
                    action = self.act(torch.as_tensor(self.rollout.obs, device=self.device), greedy=False).cpu()
                t = self.rollout.step(action.numpy())
                # a truncated step is stored as non-terminal: its next state still had a future
                self.buffer.add(t["obs"], t["action"], t["reward"], t["next_obs"], t["terminated"])
                before, self.env_steps = self.env_steps, self.env_steps + a["num_envs"]
                if self.env_steps // a["target_update_interval"] > before // a["target_update_interval"]:
                    self.sync_target()
            self.episode_stats(*self.rollout.pop_episodes())
            self.rollout_stats["rollout/epsilon"] = self.epsilon()
            self.rollout_stats["rollout/replay_size"] = float(len(self.buffer))
            self.time_env_steps()
            # learn: gradient_steps minibatches replayed from the buffer, drawn together (the
            # buffer does not change between them), as one Lightning batch; nothing yet while the
            # buffer holds fewer than learning_starts transitions
            filled = len(self.buffer) >= a["learning_starts"]
            yield self.buffer.sample(a["batch_size"] * a["gradient_steps"]) if filled else {}

    def env_steps_per_batch(self) -> int:
        return self.algo["train_freq"]

    # ---- learning ----------------------------------------------------------------------------
    @torch.no_grad()
    def td_reference(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """r + γ·Q_target(s', a'): a' is the target network's best action, or with Double DQN the
        online network's (the target network still gives its value)."""
        next_online = self.model(batch["next_obs"]) if self.algo["double_dqn"] else None
        return q_target(batch["reward"], batch["terminated"], self.target(batch["next_obs"]), next_online,
                        self.algo["gamma"])

    def training_step(self, replayed: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if not replayed:
            return None  # the buffer is still filling
        for start in range(0, len(replayed["obs"]), self.algo["batch_size"]):
            batch = {k: v[start:start + self.algo["batch_size"]] for k, v in replayed.items()}
            reference = self.td_reference(batch)
            prediction = self.model(batch["obs"]).gather(1, batch["action"].unsqueeze(1)).squeeze(1)
            loss = self.compare(prediction, reference)
            self.step_optimizer(loss)
        if self.is_logging_step():  # the curves, from the phase's last minibatch
            for name, value in (("train/loss", loss), ("train/q_mean", prediction.detach().mean())):
                self.log(name, value, on_step=True, on_epoch=False, batch_size=len(prediction),
                         prog_bar=name == "train/loss")
            self.log_rollout(len(prediction))
        return loss.detach()

    def planned_updates(self) -> int:
        a = self.algo
        phases = max(0, self.hparams.total_env_steps - a["learning_starts"]) / a["train_freq"]
        return max(1, math.ceil(phases) * a["gradient_steps"])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if self._trainer is not None:
            log.info(f"the replay buffer is not saved in checkpoints: it refills with fresh play, and updates "
                     f"resume once it holds algo.learning_starts={self.algo['learning_starts']} transitions")

    def on_train_end(self) -> None:
        if self.rollout is not None:
            self.rollout.close()

