"""`trainer.precision=bf16-mixed` on CPU: every task trains a few steps under autocast, with its
validation metrics (FID on the feature net, class coverage, the forgery map, eval episodes) run in
the same loop, and then draws samples under bf16 autocast: the dtype paths a GPU run takes
(`trainer=gpu` is bf16-mixed), checked on a machine without one."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, TINY_LM, run_dirs, summary
from mimicry.checkpoints import load_task
from mimicry.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:You are trying to")]

IMAGE_METRICS = ["task.metrics_every_n_epochs=1", "task.feature_net.width=8", "task.feature_net.steps=10"]
GAN = ["task=gan", "model.generator.latent_dim=8", "model.generator.width=8", "model.discriminator.width=8",
       "data.limit=64", "data.batch_size=16", "task.sample_every_n_steps=2", "task.num_samples=10",
       "task.metrics_samples=64", *IMAGE_METRICS]
DIFFUSION = ["task=diffusion", "model.width=8", "model.channel_mult=[1,2]", "task.timesteps=50", "task.steps=4",
             "data.limit=64", "data.batch_size=16", "task.sample_every_n_steps=2", "task.num_samples=10",
             "task.trajectory_rows=2", "task.trajectory_snapshots=3", "task.metrics_samples=32", *IMAGE_METRICS]
IMAGE_AR = ["task=image_ar", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.limit=64",
            "data.batch_size=16", "task.sample_every_n_steps=2", "task.num_samples=8", "task.completions=2",
            "task.metrics_samples=24", *IMAGE_METRICS]
RL = ["task=rl", "model.hidden=[16]", "task.eval_episodes=2"]
TEXT = ["task=rl", "env=text", "env.prompts=[def]", "env.max_new_tokens=8", "reward=contains_words",
        "reward.words=[self]", "task.total_env_steps=64", "task.eval_every_env_steps=64", "task.eval_episodes=4"]

CASES = {
    "lm": [a for a in TINY_LM if not a.startswith("trainer.max_epochs")],
    "image_ar": [*IMAGE_AR, "tokenizer.levels=4"],
    "image_ar_patches": [*IMAGE_AR, "tokenizer=patches", "tokenizer.patch_size=4", "tokenizer.codebook_size=16"],
    "diffusion": DIFFUSION,
    "diffusion_conditional": [*DIFFUSION, "task.conditional=true"],
    **{f"gan_{loss}": [*GAN, f"loss={loss}"] for loss in ("ns", "minimax", "hinge", "lsgan", "wgan_gp")},
    "gan_r1_conditional": [*GAN, "loss.r1_gamma=1.0", "task.conditional=true"],
    "classifier": ["task=classifier", "data.limit=128"],
    "ppo": [*RL, "algo.num_envs=2", "algo.n_steps=16", "algo.batch_size=16", "algo.update_epochs=2",
            "task.total_env_steps=128", "task.eval_every_env_steps=64"],
    "dqn": [*RL, "algo=dqn", "algo.learning_starts=64", "algo.train_freq=32", "algo.gradient_steps=4",
            "task.total_env_steps=192", "task.eval_every_env_steps=96"],
    "filtered_bc": [*RL, "algo=filtered_bc", "algo.num_envs=4", "algo.episodes_per_iteration=4",
                    "task.total_env_steps=200", "task.eval_every_env_steps=100"],
    "decision_transformer": ["task=rl", "algo=decision_transformer", "model.n_layer=1", "model.n_head=2",
                             "model.n_embd=32", "algo.context=4", "model.block_size=12", "algo.batch_size=16",
                             "algo.updates=10", "algo.updates_per_eval=5", "task.eval_episodes=2"],
    "text_ppo": [*TEXT, "algo=ppo", "algo.num_envs=8", "algo.batch_size=32", "algo.update_epochs=1"],
    "text_filtered_bc": [*TEXT, "algo=filtered_bc", "algo.episodes_per_iteration=16", "algo.batch_size=64"],
    "text_reward_conditioned": [*TEXT, "algo=reward_conditioned", "algo.episodes_per_iteration=16",
                                "algo.pool_size=64", "algo.batch_size=64", "optim.warmup_steps=2"],
}
# drawn after training, under bf16 autocast: each diffusion sampler, guidance, the lm's KV cache
SAMPLING = {"diffusion": [{"sampler": "ddpm"}, {"sampler": "ddim"}, {"sampler": "dpm_solver"}],
            "diffusion_conditional": [{"sampler": "ddim", "guidance": 2.0}], "lm": [{"length": 20}],
            "text_ppo": [{"length": 8}], "ppo": [{"episodes": 2}], "dqn": [{"episodes": 2}],
            "decision_transformer": [{"episodes": 2}], "classifier": []}


@pytest.fixture(scope="module")
def random_cartpole_episodes(tmp_path_factory) -> Path:
    """A small recorded dataset, so the Decision Transformer does not record its own first."""
    from mimicry.data.episodes import save_episodes
    from mimicry.data.rollouts import run_episodes

    played = run_episodes("cartpole", lambda obs: torch.randint(0, 2, (len(obs),)), 20, seed=0, record=True)
    return save_episodes(tmp_path_factory.mktemp("episodes") / "random.npz", "cartpole", played)


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_mixed_trains_validates_and_samples(case, tmp_path, monkeypatch, request, random_cartpole_episodes):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIMICRY_DATA", str(SHARED_DATA))
    extra = []
    if case.startswith("text_"):
        extra.append(f"init_from={request.getfixturevalue('trained_lm')}")
    if case == "decision_transformer":
        extra.append(f"algo.dataset={random_cartpole_episodes}")
    if not case.startswith(("ppo", "dqn", "filtered_bc", "decision", "text_")):
        extra.append("trainer.max_epochs=1")
    assert main(["train", "callbacks.progress=null", "trainer.precision=bf16-mixed", *CASES[case], *extra]) == 0
    (run_dir,) = run_dirs(tmp_path)
    record = summary(run_dir)
    assert record["status"] == "completed", record.get("error")
    numbers = {k: v for k, v in record["metrics"].items() if isinstance(v, (int, float))}
    assert numbers and all(math.isfinite(v) for v in numbers.values()), numbers
    assert "Using bfloat16 Automatic Mixed Precision" in (run_dir / "train.log").read_text()

    task = load_task(run_dir)
    (tmp_path / "samples").mkdir()
    for options in SAMPLING.get(case, [{}]):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            written = task.generate_samples(tmp_path / "samples", n=4, seed=0, **options)
        assert written and all(path.stat().st_size > 0 for path in written), (case, options)
        if hasattr(task, "draw"):  # images: finite and in range under autocast too
            with torch.autocast("cpu", dtype=torch.bfloat16):
                images = task.draw(4, seed=0, **{k: v for k, v in options.items() if k != "episodes"})
            assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1, (case, options)
