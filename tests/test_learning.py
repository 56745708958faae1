"""Learning tests: each model family, trained briefly through the real `mimicry train` path (its own
optimizer, schedule and clipping), beats a baseline that has learned nothing: noise images, a
unigram model, a random policy. Each test also asserts that the baseline fails the same bound (the
negative control), so the bound means something. scripts/check_learning_tests.py runs the suite
with every optimizer step a no-op and checks that each family has a test that then fails.

Runs go through `mimicry.cli.main` in-process (a subprocess start costs seconds of CPU).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import read_events, run_dirs, summary
from image_fixtures import digits_fixture, feature_net_fixture  # noqa: F401  (pytest fixtures)
from mimicry.checkpoints import load_task
from mimicry.cli import main
from mimicry.data.image_tokenizers import PixelTokenizer
from mimicry.data.images import DigitsDataModule, to_unit
from mimicry.data.rollouts import run_episodes
from mimicry.data.text import TextDataModule
from mimicry.metrics.image_quality import extract, fid_kid

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")


def train(tmp_path, monkeypatch, *overrides: str):
    """`mimicry train OVERRIDES` in-process, in tmp_path; the run directory."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "callbacks.progress=null", *overrides]) == 0
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "completed"
    return run_dir


def curve(run_dir, tag: str) -> list[float]:
    return [value for _, value in sorted(read_events(run_dir)["scalars"][tag])]


# ---- images: FID on the shared feature net (tests/image_fixtures.py), against the training digits ----------
@pytest.fixture(scope="module")
def fid_to_digits(digits, feature_net):
    """FID of images in [0, 1] to the training digits, and that of uniform noise (the baseline)."""
    real, _ = extract(digits.train_images(), feature_net, "signed")

    def fid(images: torch.Tensor) -> float:
        return fid_kid(real, extract(images, feature_net, "unit")[0], kid_subsets=2)[0]

    noise = torch.rand(1000, *digits.train_images().shape[1:], generator=torch.Generator().manual_seed(0))
    return fid, fid(noise)


# The bound on FID to the training digits, on the shared feature net's scale: 300 generator steps
# land at 9-20 here (wgan_gp at 6 after 150 steps of 5 critic steps each); uniform noise scores ~36,
# an untrained generator ~460.
GAN_FID_BOUND = 25.0
GAN = ["task=gan", "model=mlp_gan", "model.generator.latent_dim=32", "model.generator.width=64",
       "model.discriminator.width=64", "optim.lr=5e-4", "optim.d_lr=5e-4", "task.ema_decay=0",
       "task.metrics_every_n_epochs=0", "task.sample_every_n_steps=1000", "trainer.max_steps=300"]
GAN_LOSSES = {"ns": ["loss=ns"], "minimax": ["loss=minimax"], "hinge": ["loss=hinge"], "lsgan": ["loss=lsgan"],
              "wgan_gp": ["loss=wgan_gp", "model.discriminator.norm=none", "trainer.max_steps=150"],
              "ns_r1": ["loss=ns", "loss.r1_gamma=1.0"]}  # R1 on real images


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(GAN_LOSSES))
def test_gan_learning_beats_noise_under_a_fixed_fid_bound(loss, fid_to_digits, tmp_path, monkeypatch):
    fid, noise_fid = fid_to_digits
    assert noise_fid > GAN_FID_BOUND  # the negative control: a generator of noise fails the bound
    run_dir = train(tmp_path, monkeypatch, *GAN, *GAN_LOSSES[loss])
    fakes = load_task(run_dir).draw(1000, seed=0)
    fake_fid = fid(fakes)
    assert fake_fid < GAN_FID_BOUND and fake_fid < 0.75 * noise_fid, (loss, fake_fid, noise_fid)


DIFFUSION = ["task=diffusion", "model.width=8", "model.channel_mult=[1,2]", "model.attention=false",
             "task.timesteps=100", "task.ema_decay=0", "task.metrics_every_n_epochs=0",
             "task.sample_every_n_steps=1000", "task.trajectory_rows=0", "trainer.max_epochs=5",
             "optim.warmup_steps=10"]


@pytest.mark.slow
def test_diffusion_val_loss_falls_and_samples_beat_noise(fid_to_digits, tmp_path, monkeypatch):
    fid, noise_fid = fid_to_digits
    run_dir = train(tmp_path, monkeypatch, *DIFFUSION)
    val = curve(run_dir, "val/loss")
    assert val[-1] < 0.8 * val[0], val  # after the first epoch it still falls
    samples = load_task(run_dir).draw(500, seed=0, sampler="ddim", steps=10)
    sample_fid = fid(samples)
    assert sample_fid < 0.6 * noise_fid, (sample_fid, noise_fid)  # ~13 against noise's ~36


# ---- sequences: cross-entropy against a unigram model of the same training tokens ---------------------------
def unigram_cross_entropy(train_tokens: torch.Tensor, val_tokens: torch.Tensor, vocab: int) -> float:
    """Nats per token of the training tokens' frequencies (add-one smoothed) on the validation tokens."""
    counts = torch.bincount(train_tokens.flatten(), minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[val_tokens.flatten()].mean())


IMAGE_AR = ["task=image_ar", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "tokenizer.levels=4",
            "data.batch_size=32", "trainer.max_steps=50", "task.metrics_every_n_epochs=0",
            "task.sample_every_n_steps=1000", "task.completions=0", "optim.warmup_steps=10"]


def test_image_ar_beats_the_unigram_bits_per_dim(tmp_path, monkeypatch):
    data = DigitsDataModule(value_range="unit")
    data.setup()
    tokenizer = PixelTokenizer(levels=4)
    unigram = unigram_cross_entropy(tokenizer.encode(data.train_images()), tokenizer.encode(data.val_images()), 4)
    unigram_bits = unigram / math.log(2)
    assert unigram_bits < math.log2(4) - 0.2  # the baseline is a real one: below uniform's 2 bits
    run_dir = train(tmp_path, monkeypatch, *IMAGE_AR)
    bits = summary(run_dir)["metrics"]["val/bits_per_dim"]
    assert bits < unigram_bits - 0.5, (bits, unigram_bits)  # ~0.8 against the unigram's 1.74


LM = ["task=lm", "model.n_layer=1", "model.n_head=2", "model.n_embd=48", "model.block_size=32",
      "data.batch_size=16", "data.steps_per_epoch=60", "data.val_batches=4", "trainer.max_epochs=2",
      "task.sample_every_n_steps=1000", "task.sample_tokens=10", "optim.warmup_steps=10", "optim.lr=3e-3"]


def test_lm_beats_a_unigram_model(tmp_path, monkeypatch):
    data = TextDataModule("pydoc", block_size=32)
    data.setup()
    unigram = unigram_cross_entropy(data.train_tokens, data.val_tokens, data.tokenizer.vocab_size)
    assert unigram < math.log(data.tokenizer.vocab_size) - 0.5  # a real baseline, far below uniform
    run_dir = train(tmp_path, monkeypatch, *LM)
    val_loss = summary(run_dir)["metrics"]["val/loss"]
    assert val_loss < unigram - 0.3, (val_loss, unigram)  # ~2.77 against the unigram's 3.24


# ---- rl: CartPole's greedy evaluation return against a random policy's ---------------------------------------
@pytest.fixture(scope="module")
def random_cartpole_return() -> float:
    """Mean return of a uniformly random policy on the evaluation's seeds (about 22)."""
    played = run_episodes("cartpole", lambda obs: torch.randint(0, 2, (len(obs),)), 10, seed=10_000)
    return float(np.mean(played["returns"]))


RL_RUNS = {
    # a few thousand env steps each; the bound is 3× random's return (~66)
    "ppo": ["algo=ppo", "task.total_env_steps=3072", "task.eval_every_env_steps=1024"],
    "dqn": ["algo=dqn", "task.total_env_steps=3000", "task.eval_every_env_steps=1000", "model.hidden=[64,64]"],
    "filtered_bc": ["algo=filtered_bc", "task.total_env_steps=4000", "task.eval_every_env_steps=2000"],
}


@pytest.mark.parametrize("algo", list(RL_RUNS))
def test_rl_reaches_a_cartpole_return_well_above_random(algo, random_cartpole_return, tmp_path, monkeypatch):
    bound = 3 * random_cartpole_return
    assert random_cartpole_return < bound  # the negative control: random play fails the bound
    run_dir = train(tmp_path, monkeypatch, "task=rl", *RL_RUNS[algo], "task.eval_episodes=5")
    best = max(curve(run_dir, "eval/return_mean"))
    assert best > bound, (algo, best, random_cartpole_return)
