"""RL on text: each route (ppo, grpo, rloo, filtered_bc, reward_conditioned) raises a reward given only at the end
of a continuation, starting from a tiny trained GPT; the KL to the starting model is zero for the
unchanged model; bad input fails in one line; one real run through the CLI logs what people look
at, samples, resumes, and its checkpoint builds nothing foreign."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.checkpoints import load_task
from mimicry.errors import MimicryError
from mimicry.models.gpt import GPT
from mimicry.rewards import build_reward, check_reward
from mimicry.tasks.rl.text import read_lm_run
from mimicry.tasks.rl.text_filtered_bc import TextFilteredBC
from mimicry.tasks.rl.text_group import TextGRPO, TextRLOO
from mimicry.tasks.rl.text_ppo import TextPPO
from mimicry.tasks.rl.text_reward_conditioned import TextRewardConditioned

# the in-process tests call training_step without a Trainer, where self.log only warns
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to")

VOCAB = " \nab"
SETTINGS = {"block_size": 24, "n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.0, "bias": False}
LM = {"model": SETTINGS, "tokenizer": {"kind": "char", "vocab": VOCAB}, "vocab_size": len(VOCAB), "run": "in-process"}
# the reward: the share of letters that are not "a" (here: the share of b's); the tiny LM writes about half
REWARD = {"_target_": "mimicry.rewards.text.avoid_letter", "letter": "a"}
PROMPTS = ["a", "b a"]
ROUTES = {
    "ppo": (TextPPO, {"num_envs": 32, "batch_size": 128, "update_epochs": 2, "gamma": 1.0, "gae_lambda": 0.95,
                      "clip_range": 0.2, "clip_anneal": False, "normalize_advantage": True, "ent_coef": 0.0,
                      "vf_coef": 0.5, "kl_coef": 0.01},
            {"_target_": "torch.nn.MSELoss"}),
    # 2 prompts × 16: 32 continuations per rollout, as ppo's num_envs
    "grpo": (TextGRPO, {"group_size": 16, "batch_size": 128, "update_epochs": 2, "clip_range": 0.2, "kl_coef": 0.01},
             {"objective": "clipped_surrogate"}),
    "rloo": (TextRLOO, {"group_size": 16, "batch_size": 128, "update_epochs": 2, "clip_range": 0.2, "kl_coef": 0.01},
             {"objective": "clipped_surrogate"}),
    "filtered_bc": (TextFilteredBC, {"episodes_per_iteration": 32, "keep_fraction": 0.25, "batch_size": 128,
                                     "update_epochs": 2},
                    {"_target_": "torch.nn.CrossEntropyLoss"}),
    "reward_conditioned": (TextRewardConditioned, {"episodes_per_iteration": 32, "buckets": 2,
                                                   "pool_size": 256, "batch_size": 128, "update_epochs": 1.0,
                                                   "return_gain": 10.0, "kl_coef": 0.3},
                           {"_target_": "torch.nn.CrossEntropyLoss"}),
}


@pytest.fixture(scope="module")
def tiny_lm() -> dict[str, torch.Tensor]:
    return train_tiny_lm()


def train_tiny_lm() -> dict[str, torch.Tensor]:
    """A GPT trained for a second on random lines of a's and b's (so it writes about half of each)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    text = "".join("".join(rng.choice(list("ab "), size=rng.integers(4, 12))) + "\n" for _ in range(2000))
    ids = torch.tensor([VOCAB.index(c) for c in text])
    gpt = GPT(vocab_size=len(VOCAB), **SETTINGS)
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=3e-3)
    for _ in range(80):
        starts = torch.randint(0, len(ids) - 25, (32,))
        window = torch.stack([ids[s:s + 25] for s in starts])
        loss = torch.nn.functional.cross_entropy(gpt(window[:, :-1]).reshape(-1, len(VOCAB)), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return gpt.state_dict()


def build(route: str, state: dict[str, torch.Tensor], **changes):
    cls, algo, loss = ROUTES[route]
    task = cls(model={}, loss=loss, optim={"lr": 3e-3}, data_spec={}, algo={**algo, **changes}, env="text",
               total_env_steps=10_000, eval_every_env_steps=10_000, eval_episodes=32, prompts=PROMPTS,
               max_new_tokens=12, reward=REWARD, lm=copy.deepcopy(LM))
    task.start_from(state)
    return task


@pytest.fixture(scope="module")
def improved_reward_conditioned(tiny_lm) -> tuple[dict, dict, TextRewardConditioned]:
    """The reward-conditioned route trained once for the two tests that read it: (before, after, task).
    It must first learn what its return tokens mean (as in the benchmark): 12 iterations lift it by
    ≥ 0.2 on seeds 1-10, 8 by as little as 0.06."""
    return improve("reward_conditioned", tiny_lm, seed=1, iterations=12)


@pytest.mark.parametrize("route", list(ROUTES))
def test_each_route_raises_the_reward_of_a_tiny_trained_lm(tiny_lm, route, request):
    if route == "reward_conditioned":
        before, after, _ = request.getfixturevalue("improved_reward_conditioned")
    else:
        before, after, _ = improve(route, tiny_lm, seed=1, iterations=4)
    assert np.allclose(before["kl"], 0.0, atol=1e-4)  # the unchanged model is the reference
    assert after["rewards"].mean() > before["rewards"].mean() + 0.1, (route, before["rewards"].mean(),
                                                                       after["rewards"].mean())
    assert after["kl"].mean() > 0.01  # it moved away from the start, and the KL says so


def improve(route: str, state: dict[str, torch.Tensor], seed: int, iterations: int = 4) -> tuple[dict, dict, object]:
    """Evaluations before and after ``iterations`` of the route (act, score, learn), and the task."""
    torch.manual_seed(seed)
    task = build(route, state)
    before = task.evaluate()  # fixed prompts and seeds
    learn(task, iterations)
    return before, task.evaluate(), task


def learn(task, iterations: int) -> None:
    """``iterations`` of the route (act, score, learn) through a Lightning fit: the task's own
    optimizer, schedule and gradient clipping (configure_optimizers, step_optimizer)."""
    generated = iterations * 32 * 12  # generated tokens are the env steps
    task.hparams.total_env_steps = task.env_steps + generated
    task.hparams.eval_every_env_steps = task.env_steps + generated  # one epoch, then one evaluation
    trainer = pl.Trainer(max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task)
    assert task.env_steps == generated and trainer.global_step > 0


def test_ppo_per_token_rewards_are_only_the_final_reward_for_the_unchanged_model(tiny_lm):
    task = build("ppo", tiny_lm, kl_coef=0.5, gae_lambda=1.0)
    groups = task.collect()
    for g in groups:  # each token's KL penalty is zero: the returns (γ = λ = 1) are the final reward everywhere
        expected = g["reward"].unsqueeze(1).expand_as(g["return"])
        assert torch.allclose(g["return"], expected, atol=1e-5)
    assert float(torch.cat([task.kl_to_reference(g) for g in groups]).abs().max()) < 1e-4


def test_bad_input_fails_in_one_line(tiny_lm, trained_lm, tmp_path):
    with pytest.raises(MimicryError, match="init_from=LM_RUN_DIR"):
        read_lm_run(None)
    crafted = torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)
    crafted["mimicry"]["task"] = "mimicry.tasks.gan.GAN"  # a name compared, never imported
    torch.save(crafted, tmp_path / "gan.ckpt")
    with pytest.raises(MimicryError, match="is a GAN run; RL on text starts from a run of task=lm"):
        read_lm_run(str(tmp_path / "gan.ckpt"))
    with pytest.raises(MimicryError, match="cannot be imported"):
        build_reward({"_target_": "no_such_module.reward"})
    with pytest.raises(MimicryError, match="does not take"):
        build_reward({"_target_": "mimicry.rewards.text.avoid_letter", "words": ["x"]})
    with pytest.raises(MimicryError, match="returned 1 numbers for 2 texts"):
        check_reward(lambda texts: [1.0], "one_number")
    with pytest.raises(MimicryError, match="one number per text"):
        check_reward(lambda texts: 1.0, "a_float")
    with pytest.raises(MimicryError, match="must be at most 12 .*context is 24"):
        build("ppo", tiny_lm).__class__(model={}, loss={"_target_": "torch.nn.MSELoss"}, optim={}, data_spec={},
                                        algo=ROUTES["ppo"][1], prompts=["a" * 13], max_new_tokens=12, reward=REWARD,
                                        lm=copy.deepcopy(LM))
    with pytest.raises(MimicryError, match="needs env=text"):
        TextPPO(model={}, loss={}, optim={}, data_spec={}, algo=ROUTES["ppo"][1], env="cartpole", lm=copy.deepcopy(LM))


def test_text_ppo_runs_end_to_end_samples_resumes_and_stays_safe(trained_lm, tmp_path):
    args = ["task=rl", "env=text", "algo=ppo", f"init_from={trained_lm}", "env.prompts=[def]", "env.max_new_tokens=8",
            "reward=contains_words", "reward.words=[self]", "algo.num_envs=8", "algo.batch_size=32",
            "algo.update_epochs=1", "task.total_env_steps=128", "task.eval_every_env_steps=96", "task.eval_episodes=4",
            "trainer.log_every_n_steps=1"]
    run_mimicry(tmp_path, "train", *args)
    (run_dir,) = run_dirs(tmp_path)
    result = summary(run_dir)
    assert result["status"] == "completed" and result["metrics"]["rollout/generated_tokens"] == 128
    events = read_events(run_dir)
    for tag in ("rollout/return_mean", "rollout/kl", "rollout/generated_tokens", "eval/return_mean", "eval/kl",
                "train/policy_loss", "train/value_loss", "train/approx_kl"):
        assert tag in events["scalars"], tag
    assert events["scalars"]["eval/kl"][0] == (0, pytest.approx(0.0, abs=1e-4))  # before: the start itself
    text_steps = [step for step, _ in events["text"]["samples/text/text_summary"]]
    assert text_steps[0] == 0 and len(text_steps) >= 2 and "    def" in events["text"]["samples/text/text_summary"][0][1]

    # sampling needs no lm run on disk (the checkpoint carries its settings) and scores with the built-in reward
    task = load_task(run_dir)
    (written,) = task.generate_samples(tmp_path, n=2, seed=0)
    assert written.read_text().count("[reward ") == 2 and "def" in written.read_text()

    # a checkpoint whose recipe names a reward function by its dotted path builds nothing
    crafted = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert crafted["mimicry"]["recipe"]["choices"]["reward"] == "contains_words"  # a registered name
    crafted["mimicry"]["recipe"]["values"]["reward._target_"] = "os.system"
    torch.save(crafted, tmp_path / "crafted.ckpt")
    with pytest.raises(MimicryError, match="refusing reward._target_='os.system'"):
        load_task(tmp_path / "crafted.ckpt")

    # resume: the checkpoint carries the lm run's settings and tokenizer, so the saved init_from (a path,
    # the sender's) is not followed; the generated-token counter continues
    run_mimicry(tmp_path, "train", f"resume={run_dir}", "task.total_env_steps=192",
                env={"MIMICRY_DATA": str(tmp_path / "nowhere")})
    assert summary(run_dir)["metrics"]["rollout/generated_tokens"] == 192


def test_grpo_and_rloo_through_the_cli_in_one_sweep(trained_lm, tmp_path):
    # ++: Hydra checks a sweep's overrides against the default algo (ppo) first, which has no group_size
    run_mimicry(tmp_path, "train", "-m", "task=rl", "env=text", "algo=grpo,rloo", f"init_from={trained_lm}",
                "env.prompts=[def,class]", "env.max_new_tokens=8", "reward=contains_words", "reward.words=[self]",
                "++algo.group_size=4", "algo.batch_size=32", "algo.update_epochs=1", "task.total_env_steps=128",
                "task.eval_every_env_steps=64", "task.eval_episodes=2", "trainer.log_every_n_steps=1")
    runs = run_dirs(tmp_path)
    assert len(runs) == 2
    for run_dir in runs:
        result = summary(run_dir)
        assert result["status"] == "completed" and result["metrics"]["rollout/generated_tokens"] == 128
        scalars = read_events(run_dir)["scalars"]
        for tag in ("train/loss", "train/kl_to_start", "train/clip_fraction", "rollout/groups_all_equal",
                    "eval/return_mean", "eval/kl"):
            assert tag in scalars, (run_dir, tag)
        assert "train/value_loss" not in scalars  # no critic
        (written,) = load_task(run_dir).generate_samples(tmp_path, n=2, seed=0)
        assert written.read_text().count("[reward ") == 4  # two prompts, two continuations each


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_group_routes_refuse_what_cannot_work(tiny_lm, algo):
    with pytest.raises(MimicryError, match="at least 2 continuations"):
        build(algo, tiny_lm, group_size=1)
    with pytest.raises(MimicryError, match="kl_coef"):
        build(algo, tiny_lm, kl_coef=-0.1)
    with pytest.raises(MimicryError, match="needs env=text"):
        cls, settings, loss = ROUTES[algo]
        cls(model={}, loss=loss, optim={"lr": 1e-3}, data_spec={}, algo=settings, env="cartpole", prompts=PROMPTS,
            reward=REWARD, lm=copy.deepcopy(LM))


def test_group_advantages_of_a_rollout_sum_to_zero_per_prompt(tiny_lm):
    for algo in ("grpo", "rloo"):
        groups = build(algo, tiny_lm, kl_coef=0.0).collect()
        assert [len(g["reward"]) for g in groups] == [16, 16]  # group_size continuations of each prompt
        for g in groups:  # the group is the baseline: what one continuation gains, the others lose
            assert abs(float(g["advantage"].sum())) < 1e-4
            assert torch.allclose(g["logprob"], g["start_logprob"], atol=1e-5)  # the unchanged model is the start


def test_reward_conditioned_return_tokens_mean_their_returns(improved_reward_conditioned):
    # fine-tuned on continuations labelled with the return they reached, the model asked for the lowest
    # return token writes worse ones than asked for the highest (by ≥ 0.17 on seeds 1-10)
    _, after, trained = improved_reward_conditioned
    task = copy.deepcopy(trained)  # the fixture's task stays as it was
    asked_high = after["rewards"].mean()
    task.condition = lambda n: {"bucket": torch.zeros(n, dtype=torch.long)}
    asked_low = task.evaluate()["rewards"].mean()
    assert asked_high > asked_low + 0.1, (asked_high, asked_low)


def test_reward_conditioned_guidance_and_absolute_buckets(tiny_lm):
    task = build("reward_conditioned", tiny_lm, buckets=4, return_range=[0.0, 1.0])
    # absolute buckets: equal slices of the reward's range, whatever the other rewards are
    assert task.buckets_of(torch.tensor([0.0, 0.24, 0.25, 0.99, 1.0])).tolist() == [0, 0, 1, 3, 3]
    assert task.buckets_of(torch.tensor([0.9, 0.95])).tolist() == [3, 3]  # quantiles would say [0, 2]
    # classifier-free guidance: w = 1 is plain conditioning, w = 0 the untold model, and the KL is measured
    # on the guided logits that generate() samples from
    task = build("reward_conditioned", tiny_lm, label_dropout=0.2, guidance=1.0)
    torch.nn.init.normal_(task.return_embedding.weight, std=0.05)
    (group,) = task.continue_prompts([4, 0], torch.Generator().manual_seed(0))
    assert torch.allclose(task.sampling_logits(group), task.action_logits(group), atol=1e-5)
    task.algo["guidance"] = 0.0
    untold = task.action_logits({**group, "bucket": torch.full_like(group["bucket"], task.null_bucket)})
    assert torch.allclose(task.sampling_logits(group), untold, atol=1e-5)
    task.algo["guidance"] = 3.0
    assert float(task.kl_to_reference(group).mean()) > 0.0
    with pytest.raises(MimicryError, match="needs algo.label_dropout > 0"):
        build("reward_conditioned", tiny_lm, guidance=3.0)
