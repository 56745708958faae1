"""Decision Transformer: a model of returns, states and actions, asked what comes next.

The GPT of ``lm`` (the same code, fed embeddings through ``trunk``) reads an episode window as
tokens (R̂₁, s₁, a₁, R̂₂, s₂, a₂, ...), where R̂ₜ is the return still to come from step t. Reference:
the action that was taken; prediction: logits read at each state token; loss: cross-entropy. To
act, it is given a high target return and asked for the action; after each step the target falls
by the reward received. Offline: trained on a recorded episode dataset (``algo.dataset``; none
given: a mixed one is recorded first, mimicry/data/recording.py).
"""
from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from hydra.utils import instantiate

from mimicry.data.rollouts import returns_to_go
from mimicry.errors import MimicryError
from mimicry.tasks.rl.base import OfflineUpdates, ReinforcementTask

log = logging.getLogger("mimicry")


class DecisionTransformer(OfflineUpdates, ReinforcementTask):
    algo_name = "decision_transformer"
    whole_number_settings = ("context", "batch_size", "updates", "updates_per_eval", "max_timestep")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, algo: dict, env: str = "cartpole",
                 seed: int = 0, total_env_steps: int = 100_000, eval_every_env_steps: int = 5_000,
                 eval_episodes: int = 10, eval_seed: int = 10_000, stop_at_return: float | None = None,
                 torch_threads: int | None = 1, sample_every_n_steps: int = 0,
                 env_options: dict | None = None):
        super().__init__(model, loss, optim, data_spec, algo, env, seed, total_env_steps, eval_every_env_steps,
                         eval_episodes, eval_seed, stop_at_return, torch_threads, sample_every_n_steps, env_options)
        if model["block_size"] < 3 * algo["context"]:
            raise MimicryError(f"model.block_size={model['block_size']} is shorter than 3 × algo.context = "
                               f"{3 * algo['context']} tokens (return, state, action per step); raise it")
        self.gpt = instantiate(model, vocab_size=1)  # fed embeddings through trunk(); its token table is unused
        width = model["n_embd"]
        self.embed_return = nn.Linear(1, width)
        self.embed_state = nn.Linear(self.spec.obs_dim, width)
        self.embed_action = nn.Embedding(self.spec.n_actions, width)
        self.embed_time = nn.Embedding(algo["max_timestep"], width)  # step within the episode
        self.embed_norm = nn.LayerNorm(width)
        self.action_head = nn.Linear(width, self.spec.n_actions)
        self.steps: dict[str, torch.Tensor] | None = None  # the dataset, read when training starts
        # the return asked for and the returns' scale; null settings are read from the dataset, and
        # kept with the weights so that `mimicry sample` acts the same without it
        self.register_buffer("conditioning", torch.tensor([_or_nan(algo["target_return"]),
                                                           _or_nan(algo["return_scale"])]))

    # ---- the model ---------------------------------------------------------------------------
    def forward(self, returns: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        """Windows of K steps (B, K[, obs_dim]) → action logits (B, K, n_actions), read at each
        state token, which sees that step's return-to-go and state and everything before, never its action."""
        B, K = actions.shape
        time = self.embed_time(timesteps.clamp(max=self.algo["max_timestep"] - 1))
        r = self.embed_return(returns.unsqueeze(-1) / self.conditioning[1]) + time
        s = self.embed_state(obs) + time
        a = self.embed_action(actions.clamp(min=0)) + time
        tokens = torch.stack([r, s, a], dim=2).reshape(B, 3 * K, -1)  # R̂₁ s₁ a₁ R̂₂ s₂ a₂ ...
        hidden = self.gpt.trunk(self.gpt.drop(self.embed_norm(tokens)))
        return self.action_head(hidden.reshape(B, K, 3, -1)[:, :, 1])

    # ---- the dataset: windows of episodes ----------------------------------------------------
    def dataset_steps(self) -> dict[str, torch.Tensor]:
        if self.steps is None:
            episodes = self.offline_episodes()
            lengths = episodes.episode_lengths
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            returns = episodes.returns()
            self.steps = {"obs": torch.as_tensor(episodes.observations, dtype=torch.float32),
                          "action": torch.as_tensor(episodes.actions, dtype=torch.long),
                          "rtg": torch.as_tensor(returns_to_go(episodes.rewards, lengths), dtype=torch.float32),
                          "timestep": torch.as_tensor(np.arange(len(starts)) - starts, dtype=torch.long),
                          "start": torch.as_tensor(starts, dtype=torch.long)}
            top = np.sort(returns)[-max(1, len(returns) // 10):]
            self.rollout_stats.update({"dataset/return_mean": float(returns.mean()),
                                       "dataset/return_max": float(returns.max()),
                                       "dataset/top10_return_mean": float(top.mean())})
            target, scale = self.algo["target_return"], self.algo["return_scale"]
            if target is None:
                target = float(returns.max())
                log.info(f"algo.target_return=null: asking for the dataset's best return, {target:g}")
            if scale is None:
                scale = float(max(np.abs(returns).max(), 1e-6))
            self.conditioning.copy_(torch.tensor([target, scale]))
            if not returns.min() - 1e-6 <= target <= 1.5 * max(returns.max(), 1e-6):
                log.warning(f"algo.target_return={target} is far outside the dataset's returns "
                            f"({returns.min():.1f} to {returns.max():.1f}); the model has never seen such a return")
        return self.steps

    def windows(self, ends: torch.Tensor) -> dict[str, torch.Tensor]:
        """The K steps up to and including each step in ``ends``, within its episode, left-padded."""
        data, K = self.dataset_steps(), self.algo["context"]
        index = ends.unsqueeze(1) + torch.arange(1 - K, 1)           # (B, K)
        valid = index >= data["start"][ends].unsqueeze(1)            # not before the episode's start
        index = index.clamp(min=0)
        pad = lambda x: torch.where(valid.view(*valid.shape, *[1] * (x.dim() - 2)), x, torch.zeros_like(x))  # noqa: E731
        return {"rtg": pad(data["rtg"][index]), "obs": pad(data["obs"][index]),
                "action": pad(data["action"][index]), "timestep": pad(data["timestep"][index]),
                "reference": torch.where(valid, data["action"][index], torch.full_like(index, -100))}

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.dataset_steps()  # a bad dataset fails before any training

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        size = len(self.dataset_steps()["action"])
        for _ in range(self.algo["updates_per_eval"]):
            yield self.windows(torch.randint(0, size, (self.algo["batch_size"],)))

    # ---- the imitation -----------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        reference = batch["reference"]   # the actions taken (-100: padding, ignored)
        prediction = self(batch["rtg"], batch["obs"], batch["action"], batch["timestep"])
        loss = self.imitate(prediction.reshape(-1, prediction.size(-1)), reference.reshape(-1))
        if self.is_logging_step():
            self.log_rollout(len(reference))
        return loss

    # ---- acting: condition on a high return, ask for the action ------------------------------
    def acting_policy(self, greedy: bool) -> "ReturnConditionedActor":
        target = float(self.conditioning[0])
        if math.isnan(target):
            raise MimicryError("the Decision Transformer has not read its dataset yet (algo.target_return=null "
                               "is taken from it); train it first, or set algo.target_return")
        return ReturnConditionedActor(self, target, greedy)

    def act(self, obs: torch.Tensor, greedy: bool) -> torch.Tensor:
        raise MimicryError("the Decision Transformer acts on a history of returns, states and actions; "
                           "use play() (mimicry sample RUN_DIR episodes=N)")


class ReturnConditionedActor:
    """Keeps each env's episode so far (target return still to come, states, actions) and asks the
    model for the next action, given the last K steps."""

    def __init__(self, task: DecisionTransformer, target_return: float, greedy: bool):
        self.task, self.target, self.greedy = task, float(target_return), greedy

    def reset(self) -> None:
        self.rtg: list[list[float]] = []
        self.obs: list[torch.Tensor] = []
        self.actions: list[torch.Tensor] = []

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        task, K = self.task, self.task.algo["context"]
        n = len(obs)
        self.rtg.append(torch.full((n,), self.target) if not self.rtg else self.rtg[-1] - self._last_reward)
        self.obs.append(obs.float())
        self.actions.append(torch.zeros(n, dtype=torch.long))  # the action being asked for (not seen by its state)
        t = len(self.obs)
        window = min(t, K)
        pad = K - window
        device = task.device
        stack = lambda xs: torch.stack(xs[-window:], dim=1)  # noqa: E731
        rtg, states, actions = stack(self.rtg), stack(self.obs), stack(self.actions)
        timesteps = torch.arange(t - window, t).expand(n, window)
        if pad:  # left-pad as in training
            rtg = torch.cat([torch.zeros(n, pad), rtg], 1)
            states = torch.cat([torch.zeros(n, pad, states.size(-1)), states], 1)
            actions = torch.cat([torch.zeros(n, pad, dtype=torch.long), actions], 1)
            timesteps = torch.cat([torch.zeros(n, pad, dtype=torch.long), timesteps], 1)
        logits = task(rtg.to(device), states.to(device), actions.to(device), timesteps.to(device))[:, -1].cpu()
        action = logits.argmax(-1) if self.greedy else torch.distributions.Categorical(logits=logits).sample()
        self.actions[-1] = action
        return action

    def observe(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        self._last_reward = torch.as_tensor(rewards, dtype=torch.float32)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
