"""What every RL algorithm shares: the environment, the rollout dataset that Lightning iterates,
the env-step counter (the x-axis people look at), greedy evaluation on fixed seeds (the monitored
``eval/return_mean``), and ``mimicry sample`` playing episodes.

One Lightning "epoch" is ``eval_every_env_steps`` environment steps of acting and learning; the
validation at its end is the evaluation. Training stops after ``total_env_steps`` (or once the
evaluation reaches ``stop_at_return``). Each algorithm file implements ``batches`` (act, build the
reference, yield minibatches), ``training_step`` and ``act``.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from mimicry.data.environments import env_spec, require_discrete
from mimicry.data.episodes import Episodes, load_episodes
from mimicry.data.recording import offline_dataset
from mimicry.data.rollouts import RolloutDataset, run_episodes
from mimicry.errors import MimicryError
from mimicry.lightning_internals import advance_global_step, single_device_unscaled
from mimicry.tasks.base import ImitationTask, build_optimizer, gradient_norm

log = logging.getLogger("mimicry")


class ReinforcementTask(ImitationTask):
    #: algo.* settings that count something (steps, envs, batch sizes): each must be a whole number ≥ 1
    whole_number_settings: tuple[str, ...] = ()
    #: algo name, for messages
    algo_name = "?"
    #: TensorBoard's x-axis is env steps (Lightning writes a logged "step" as the points' step), so
    #: that every algorithm's curves share one axis; an offline algorithm keeps its update count
    step_is_env_steps = True
    sample_options = ("episodes", "record", "greedy", "video")
    charts = {
        **ImitationTask.charts,
        "rl": {
            "return (rollout, eval)": [r"^rollout/return_mean$", r"^eval/return_mean$"],
            "episode length": [r"^rollout/length_mean$", r"^eval/length_mean$"],
            "env steps/s": [r"^rollout/env_steps_per_sec$"],
        },
    }

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, algo: dict, env: str = "cartpole",
                 seed: int = 0, total_env_steps: int = 100_000, eval_every_env_steps: int = 5_000,
                 eval_episodes: int = 10, eval_seed: int = 10_000, stop_at_return: float | None = None,
                 torch_threads: int | None = 1, sample_every_n_steps: int = 0, env_options: dict | None = None):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)
        for name, value in (("total_env_steps", total_env_steps), ("eval_every_env_steps", eval_every_env_steps),
                            ("eval_episodes", eval_episodes)):
            if not isinstance(value, int) or value < 1:
                raise MimicryError(f"task.{name}={value!r}: must be a whole number ≥ 1, e.g. task.{name}=10000")
        for key in self.whole_number_settings:
            if not isinstance(algo[key], int) or algo[key] < 1:
                raise MimicryError(f"algo.{key}={algo[key]!r}: must be a whole number ≥ 1")
        self.algo = algo
        self.env_options = dict(env_options or {})  # the env's own settings (conf/env/<env>.yaml), e.g. show_key
        self.spec = self.environment(env)
        self.env_steps = 0  # environment steps taken so far (saved in checkpoints)
        self.start_env_steps = 0  # where this fit started (the checkpoint's count when resuming)
        self.rollout_stats: dict[str, float] = {}  # the latest rollout's numbers, logged at logging steps
        self._clock: tuple[float, int] | None = None  # (time, env steps) at the previous rollout
        self._update_handles: tuple | None = None  # step_optimizer's, looked up once per fit

    def environment(self, env: str) -> Any:
        """What the networks need to know of ``env`` (a task whose environment is not a gymnasium
        one, e.g. text generation, describes its own)."""
        spec = env_spec(env, self.env_options)
        require_discrete(spec, self.algo_name)
        return spec

    def on_fit_start(self) -> None:
        super().on_fit_start()
        threads = self.hparams.torch_threads
        if threads and self.device.type == "cpu":
            # Small networks, one observation batch at a time: splitting each matrix product over
            # threads costs more than it saves (measured here: 1 thread took 1/10 the CPU time of 2).
            torch.set_num_threads(threads)

    # ---- data: the rollout dataset and the evaluation ------------------------------------------------
    def batches(self) -> Iterator[Any]:
        """One epoch's worth of acting and learning (each algorithm writes its own)."""
        raise NotImplementedError

    def epoch_end_env_steps(self) -> int:
        """Where this epoch stops acting: the next multiple of eval_every_env_steps, or the run's end."""
        every = self.hparams.eval_every_env_steps
        return min((self.env_steps // every + 1) * every, self.hparams.total_env_steps)

    def env_steps_per_batch(self) -> int | None:
        """Env steps behind each batch, for an algorithm whose batch is a whole rollout or training
        phase (ppo, dqn); None where batches are minibatches of unknown number."""
        return None

    def train_dataloader(self) -> DataLoader:
        # Rebuilt every epoch (trainer.reload_dataloaders_every_n_epochs=1 in conf/task/rl.yaml), so
        # that its length is this epoch's count of rollouts (see RolloutDataset).
        per_batch = self.env_steps_per_batch()
        length = math.ceil((self.epoch_end_env_steps() - self.env_steps) / per_batch) if per_batch else None
        return DataLoader(RolloutDataset(self.batches, length), batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=None)  # one "batch": the evaluation episodes

    def act(self, obs: torch.Tensor, greedy: bool) -> torch.Tensor:
        """Actions for a batch of observations (greedy: the most likely / best-valued one)."""
        raise NotImplementedError

    def acting_policy(self, greedy: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        """What plays whole episodes: observations (CPU) → actions (CPU)."""
        return lambda obs: self.act(obs.to(self.device), greedy).cpu()

    def play(self, episodes: int, seed: int, greedy: bool = True, record: bool = False, render: bool = False) -> dict:
        was_training = self.training
        self.eval()
        try:
            return run_episodes(self.spec.name, self.acting_policy(greedy), episodes, seed, record=record, render=render,
                                env_options=self.spec.options)
        finally:
            self.train(was_training)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        result = self.play(self.hparams.eval_episodes, self.hparams.eval_seed, greedy=True)
        self.log("eval/return_mean", float(np.mean(result["returns"])), prog_bar=True, batch_size=1)
        self.log("eval/return_std", float(np.std(result["returns"])), batch_size=1)
        self.log("eval/length_mean", float(np.mean(result["lengths"])), batch_size=1)
        self.log("rollout/env_steps", float(self.env_steps), batch_size=1)
        if self.step_is_env_steps:
            self.log("step", float(self.env_steps), batch_size=1)

    def finished(self) -> bool:
        """The run's end (an offline algorithm counts updates instead of env steps)."""
        return self.env_steps >= self.hparams.total_env_steps

    def remaining_epochs(self) -> int:
        """Evaluations still to come from this fit's start: each epoch acts up to the next multiple
        of eval_every_env_steps. (Counted from the start: Lightning fetches the first batch, so acts,
        before on_train_start.)"""
        every = self.hparams.eval_every_env_steps
        return max(0, math.ceil(self.hparams.total_env_steps / every) - self.start_env_steps // every)

    def on_train_start(self) -> None:
        self._update_handles = None  # this fit's optimizer and schedule
        # With max_epochs=-1 (the run ends on env steps), the progress bar would show "Epoch 1/-2":
        # give it the planned count instead. An upper bound: the run still stops on finished().
        loop = self.trainer.fit_loop
        if loop.max_epochs is None or loop.max_epochs < 0:
            loop.max_epochs = self.current_epoch + self.remaining_epochs()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        done = self.finished()
        target = self.hparams.stop_at_return
        score = self.trainer.callback_metrics.get("eval/return_mean")
        if target is not None and score is not None and float(score) >= target:
            log.info(f"eval/return_mean {float(score):.4g} ≥ stop_at_return={target} after {self.env_steps} env steps")
            done = True
        if done:
            self.trainer.should_stop = True

    # ---- logging ---------------------------------------------------------------------------------
    def log_rollout(self, batch_size: int) -> None:
        """At logging steps: env steps (the x-axis), the latest rollout's numbers, env steps/s."""
        if not self.is_logging_step():
            return
        values = {"rollout/env_steps": float(self.env_steps), **self.rollout_stats}
        if self.step_is_env_steps:  # this batch's points are written at x = env steps
            values["step"] = float(self.env_steps)
        if self._trainer is not None and self.trainer.optimizers:  # here, not Lightning's monitor: on the same axis
            values["train/lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        for name, value in values.items():
            self.log(name, value, on_step=True, on_epoch=False, batch_size=batch_size)

    def episode_stats(self, returns: list[float], lengths: list[int]) -> None:
        """Episodes finished in the latest rollout, kept for the next logging step."""
        if returns:
            self.rollout_stats["rollout/return_mean"] = float(np.mean(returns))
            self.rollout_stats["rollout/length_mean"] = float(np.mean(lengths))
            self.rollout_stats["rollout/episodes"] = float(len(returns))

    def time_env_steps(self) -> None:
        """After each rollout: env steps per second of acting and learning together, since the previous one."""
        now = time.perf_counter()
        if self._clock is not None and now > self._clock[0]:
            self.rollout_stats["rollout/env_steps_per_sec"] = (self.env_steps - self._clock[1]) / (now - self._clock[0])
        self._clock = (now, self.env_steps)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._clock = None  # the evaluation before this epoch does not count against env steps/s

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return len(next(iter(batch.values()))) if batch else 0

    # ---- offline algorithms: the episode dataset ---------------------------------------------------
    def offline_episodes(self) -> Episodes:
        """``algo.dataset``, or with none given, a mixed dataset recorded into the run directory
        first (mimicry/data/recording.py); checked against this environment."""
        run_dir = Path(self.trainer.default_root_dir) if self._trainer is not None else None
        path = offline_dataset(self.algo, self.spec.name, run_dir, self.hparams.seed, self.spec.options)
        episodes = load_episodes(path, env=self.spec.name, obs_dim=self.spec.obs_dim, env_options=self.spec.options)
        if episodes.actions.max() >= self.spec.n_actions or episodes.actions.min() < 0:
            raise MimicryError(f"{path}: actions outside 0..{self.spec.n_actions - 1}; "
                               f"the dataset is from a different environment")
        return episodes

    # ---- optimization ----------------------------------------------------------------------------
    def planned_updates(self) -> int:
        """Optimizer steps in the whole run (the learning-rate schedule decays over them)."""
        raise NotImplementedError

    def step_optimizer(self, loss: torch.Tensor) -> None:
        """One update, stepped by hand, for an algorithm whose Lightning batch is a whole rollout or
        replay phase (ppo, dqn) and whose minibatch updates run inside ``training_step``: Lightning's
        bookkeeping around a batch costs about as long as a small network's update on CPU, so it is
        paid once per rollout instead of once per minibatch (scripts/bench_rl.py measures it).
        Gradients are clipped to ``algo.max_grad_norm`` (null: not clipped).

        On one device without loss scaling, the update is plain PyTorch on the wrapped optimizer:
        Lightning's manual_backward and optimizer.step would only add its per-call callback hooks
        (on_before_backward, on_after_backward, on_before_optimizer_step: about 10% of a CartPole
        DQN's time), which no mimicry callback uses; the step still counts in ``global_step``. Under
        DDP or fp16 loss scaling, Lightning's own calls do the work they exist for."""
        optimizer, schedule, params, by_hand = self.update_handles()
        optimizer.zero_grad(set_to_none=True)  # (no hook here)
        if by_hand:
            loss.backward()
        else:
            self.manual_backward(loss)
        if self.algo.get("max_grad_norm"):  # (it returns the norm before clipping: log_rollout logs the last one)
            self.rollout_stats["train/grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.algo["max_grad_norm"])
        elif self.is_logging_step():
            self.rollout_stats["train/grad_norm"] = gradient_norm(params)
        if by_hand:
            optimizer.optimizer.step()
            advance_global_step(self.trainer)  # what Lightning's optimizer.step counts
        else:
            optimizer.step()
        schedule.step()

    def update_handles(self) -> tuple[Any, Any, list[torch.nn.Parameter], bool]:
        """The optimizer (Lightning's wrapper), its schedule, the parameters it updates (a target network's
        are not among them) and whether the update may be plain PyTorch: looked up once per fit, not at
        each of thousands of small updates (the lookups cost about 3% of a CartPole DQN's time)."""
        if self._update_handles is None:
            optimizer = self.optimizers()
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self._update_handles = (optimizer, self.lr_schedulers(), params, self.plain_updates())
        return self._update_handles

    def plain_updates(self) -> bool:
        """True where an update needs nothing of Lightning: one device, no gradient scaler."""
        return single_device_unscaled(self.trainer)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.automatic_optimization:  # stepped by hand, step_optimizer takes the norm (once per batch logged)
            super().on_before_optimizer_step(optimizer)

    def configure_optimizers(self):
        optim = dict(self.hparams.optim)
        total = self.planned_updates()
        if not optim.get("decay_steps"):
            optim["decay_steps"] = total
        return build_optimizer(self.parameters(), optim, total)

    # ---- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["mimicry"]["env_steps"] = self.env_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.env_steps = self.start_env_steps = int(checkpoint.get("mimicry", {}).get("env_steps", 0))
        if self._trainer is not None:
            log.info(f"resumed at {self.env_steps} env steps; the environments start fresh episodes")

    # ---- mimicry sample ------------------------------------------------------------------------
    def film(self, path: Path, episodes: int, seed: int, greedy: bool) -> tuple[Path | None, str]:
        """The first ``episodes`` episodes played again, drawn, as a GIF; (path or None, a one-line note)."""
        from mimicry.data.environments import make_env
        from mimicry.data.video import RenderingUnavailable, save_gif

        env = make_env(self.spec.name, options=self.spec.options)
        fps = float(env.metadata.get("render_fps") or 30)  # the environment's own speed
        env.close()
        try:
            played = self.play(episodes, seed, greedy=greedy, render=True)
        except RenderingUnavailable as why:
            return None, f"no video: env={self.spec.name}: {why}"
        return save_gif(played["frames"], path, fps), f"video of the first {episodes} episode(s): {path}"

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """Play ``episodes`` episodes (default n), write their returns and a video of the first
        ``video`` of them (default 1; 0: none); ``record=PATH`` saves them as an episode dataset."""
        episodes = int(options.get("episodes") or n)
        if episodes < 1:
            raise MimicryError(f"episodes={episodes}: ask for at least one episode")
        greedy = bool(options.get("greedy", True))
        record = options.get("record")
        result = self.play(episodes, seed, greedy=greedy, record=record is not None)
        returns = np.asarray(result["returns"])
        lines = [f"{self.spec.name}, {episodes} episodes ({'greedy' if greedy else 'sampled'} actions, seeds "
                 f"{seed}..{seed + episodes - 1}): return mean {returns.mean():.2f} ± {returns.std():.2f}, "
                 f"min {returns.min():.2f}, max {returns.max():.2f}, length mean {np.mean(result['lengths']):.1f}"]
        lines += [f"episode {i}: return {r:.2f}, length {n_steps}"
                  for i, (r, n_steps) in enumerate(zip(returns, result["lengths"]))]
        written: list[Path] = []
        if record is not None:
            from mimicry.data.episodes import save_episodes

            written.append(save_episodes(Path(record), self.spec.name, result))
        video = int(options.get("video", 1))
        if video > 0:
            video_path, note = self.film(out_dir / f"episodes_seed{seed}.gif", min(video, episodes), seed, greedy)
            lines.append(note)
            written += [video_path] if video_path is not None else []
        text_path = out_dir / f"episodes_seed{seed}.txt"
        text_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return [text_path, *written]


class OfflineUpdates:
    """For an algorithm that learns from a fixed dataset (bc, decision_transformer): the run is
    ``algo.updates`` minibatch updates, ``algo.updates_per_eval`` of them per epoch, instead of env steps."""

    step_is_env_steps = False  # no env steps are taken while learning: TensorBoard's x-axis is the update count

    def finished(self) -> bool:
        return self.global_step >= self.algo["updates"]

    def remaining_epochs(self) -> int:
        return max(0, math.ceil((self.algo["updates"] - self.global_step) / self.algo["updates_per_eval"]))

    def planned_updates(self) -> int:
        return self.algo["updates"]
