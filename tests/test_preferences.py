"""Preferences (issue 22, "Text II"): pairs labelled by a hidden reward with Bradley–Terry noise, a
preference file read as data only (one line per malformed row), a reward model that learns the
hidden reward from pairs, and DPO that raises the hidden reward from the same pairs with no
sampling; bad combinations refused in one line; one real run of each through the CLI."""
from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import read_events, run_dirs, run_mimicry, summary
from mimicry.checkpoints import load_task
from mimicry.data.preferences import PreferenceDataModule, read_preferences, write_preferences
from mimicry.errors import MimicryError
from mimicry.rewards.judge import bradley_terry_prefers_first, build_judge
from mimicry.rewards.learned import reward_model
from mimicry.rewards.text import avoid_letter
from mimicry.tasks.reward_model import RewardModel
from mimicry.tasks.rl.text_dpo import TextDPO
from mimicry.tasks.rl.text_ppo import TextPPO
from test_rl_text import LM, PROMPTS, REWARD, ROUTES, train_tiny_lm

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to", "ignore:.*does not have many workers")

ROW = {"prompt": "a", "chosen": "bb", "rejected": "aa"}


# ---- the file: plain data, one line per bad row --------------------------------------------------
def write_lines(path, *lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


@pytest.mark.parametrize("line, named", [
    ("{not json", "line 2: not JSON"),
    ('["a", "b", "c"]', "line 2: a JSON list, not an object"),
    ('{"prompt": "a", "chosen": "b"}', "line 2: no 'rejected'"),
    ('{"prompt": "a", "chosen": 3, "rejected": "b"}', "line 2: 'chosen' is a int, not text"),
    ('{"prompt": "", "chosen": "b", "rejected": "a"}', "line 2: 'prompt' is empty"),
    ("[" * 100_000 + "]" * 100_000, "line 2: not JSON"),          # nested past the parser's limit
    (b"\x80\x04\x95 binary", "not UTF-8 text"),
])
def test_malformed_rows_fail_in_one_line_naming_file_and_line(tmp_path, line, named):
    path = write_lines(tmp_path / "pairs.jsonl", json.dumps(ROW), line)
    with pytest.raises(MimicryError, match=named) as caught:
        read_preferences(path)
    assert str(path) in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_a_preference_file_is_only_ever_data(tmp_path):
    # keys that would name code elsewhere are ignored; a pickle under a .jsonl name is refused, never loaded
    crafted = {**ROW, "_target_": "os.system", "__reduce__": ["os.system", ["touch pwned"]]}
    rows = read_preferences(write_lines(tmp_path / "pairs.jsonl", json.dumps(crafted)))
    assert rows == [ROW]
    (tmp_path / "pickled.jsonl").write_bytes(pickle.dumps(ROW))
    with pytest.raises(MimicryError, match="not UTF-8|not JSON"):
        read_preferences(tmp_path / "pickled.jsonl")
    with pytest.raises(MimicryError, match="no preference pairs"):
        read_preferences(write_lines(tmp_path / "empty.jsonl", "", "  "))
    with pytest.raises(MimicryError, match="preference file not found.*mimicry sample"):
        read_preferences(tmp_path / "missing.jsonl")
    assert not (tmp_path / "pwned").exists()


def test_bradley_terry_judge_noise_follows_the_reward_gap():
    rng = np.random.default_rng(0)
    gaps = np.full(20_000, 0.1)
    # σ(0.1 / 0.1) = 0.731: a small gap is often judged wrong, a large one almost never, T=0 never
    assert bradley_terry_prefers_first(gaps, 0 * gaps, 0.1, rng).mean() == pytest.approx(0.731, abs=0.015)
    assert bradley_terry_prefers_first(10 * gaps, 0 * gaps, 0.1, rng).mean() > 0.999  # σ(10) = 0.99995
    assert bradley_terry_prefers_first(0 * gaps, gaps, 0.0, rng).sum() == 0
    assert bradley_terry_prefers_first(0 * gaps, 0 * gaps, 0.0, rng).mean() == pytest.approx(0.5, abs=0.015)
    with pytest.raises(MimicryError, match="judge.temperature=-1"):
        bradley_terry_prefers_first(gaps, gaps, -1, rng)
    with pytest.raises(MimicryError, match="judge=nope: not a reward; choose one of: avoid_letter"):
        build_judge("nope", {})
    with pytest.raises(MimicryError, match="judge.words: reward avoid_letter has no option"):
        build_judge("avoid_letter", {"words": ["x"]})


# ---- learning from pairs in-process: the tiny a/b model of test_rl_text ---------------------------
@pytest.fixture(scope="module")
def ab_pairs(tmp_path_factory):
    """The tiny a/b GPT and 320 pairs of its own continuations judged by the share of b's (T = 0.05)."""
    state = train_tiny_lm()
    task = build_dpo(state, {"kind": "preferences", "dataset": "preferences", "longest": 15})
    generator = torch.Generator().manual_seed(0)
    groups = task.continue_prompts([320, 320], generator)
    judge = build_judge("avoid_letter", {"letter": "a"})
    rows, rng = [], np.random.default_rng(0)
    for prompt, group in zip(PROMPTS, groups):
        texts = group["text"]
        scores = np.asarray(judge(texts))
        first = bradley_terry_prefers_first(scores[0::2], scores[1::2], 0.05, rng)
        for a, b, keep in zip(texts[0::2], texts[1::2], first):
            rows.append({"prompt": prompt, "chosen": a if keep else b, "rejected": b if keep else a})
    path = write_preferences(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", rows)
    data = PreferenceDataModule(path=str(path), batch_size=32, val_fraction=0.2, tokenizer_state=LM["tokenizer"])
    data.setup()
    return state, data


def build_dpo(state, spec, **algo):
    task = TextDPO(model={}, loss={"_target_": "torch.nn.BCEWithLogitsLoss"}, optim={"lr": 1e-3, "warmup_steps": 0},
                   data_spec=spec, algo={"beta": 0.1, **algo}, env="text", eval_episodes=32, prompts=PROMPTS,
                   max_new_tokens=12, reward=REWARD, lm=copy.deepcopy(LM))
    task.start_from(state)
    return task


def fit(task, data, epochs: int) -> None:
    trainer = pl.Trainer(max_epochs=epochs, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1)
    trainer.fit(task, datamodule=data)


def test_dpo_raises_the_hidden_reward_from_pairs_alone(ab_pairs):
    state, data = ab_pairs
    task = build_dpo(state, data.spec())
    batch = next(iter(data.val_dataloader()))
    prediction, reference = task.imitation(batch)
    assert torch.allclose(prediction, torch.zeros_like(prediction), atol=1e-5)  # the start is its own reference
    assert task.compare(prediction, reference).item() == pytest.approx(np.log(2), abs=1e-5)
    before = task.evaluate()
    fit(task, data, epochs=3)
    assert "true_rewards" not in before  # env.true_reward not set: nothing else is scored
    after = task.evaluate()
    assert task.env_steps == 0  # it never generated text to learn from
    assert after["rewards"].mean() > before["rewards"].mean() + 0.1, (before["rewards"].mean(), after["rewards"].mean())
    assert after["kl"].mean() > 0.05
    # held-out pairs: the implicit reward agrees with the judge
    accuracy = torch.cat([((p > 0).float() == r).float() for p, r in map(task.imitation, data.val_dataloader())])
    assert accuracy.mean() > 0.7


def test_reward_model_learns_the_hidden_reward_and_scores_texts(ab_pairs, tmp_path):
    state, data = ab_pairs
    task = RewardModel(model={}, loss={"_target_": "torch.nn.BCEWithLogitsLoss"},
                       optim={"lr": 5e-3, "warmup_steps": 0}, data_spec=data.spec(), lm=copy.deepcopy(LM))
    task.gpt.load_state_dict(state)
    # counting b's from the last token's state takes this 1-layer GPT a few hundred updates (0.83 here;
    # 3 epochs give 0.56); DPO's implicit reward is a sum over tokens and learns it in 3
    fit(task, data, epochs=12)
    accuracy = torch.cat([((p > 0).float() == r).float() for p, r in map(task.imitation, data.val_dataloader())])
    assert accuracy.mean() > 0.7  # 128 held-out pairs: chance is 0.5 ± 0.045
    high, low = task.score_texts(["bbbb b\nbb", "aaaa a\naa"], ["a", "a"])
    assert high > low  # more b's, the hidden reward's favourite, scores higher


def test_impossible_combinations_fail_in_one_line(ab_pairs, trained_lm, tmp_path):
    state, data = ab_pairs
    with pytest.raises(MimicryError, match="algo=dpo imitates preferences: give data=preferences"):
        build_dpo(state, {})
    with pytest.raises(MimicryError, match="algo.beta=0"):
        build_dpo(state, data.spec(), beta=0)
    build_dpo(state, {**data.spec(), "longest": 24})  # fits the context exactly
    with pytest.raises(MimicryError, match=r"longest text \(prompt \+ continuation\) is 25 tokens, the model's context is 24"):
        build_dpo(state, {**data.spec(), "longest": 25})
    _, algo, loss = ROUTES["ppo"]
    with pytest.raises(MimicryError, match="algo=ppo learns from the continuations it writes.*drop data=preferences"):
        TextPPO(model={}, loss=loss, optim={}, data_spec=data.spec(), algo=algo, prompts=PROMPTS, max_new_tokens=12,
                reward=REWARD, lm=copy.deepcopy(LM))
    with pytest.raises(MimicryError, match="task=reward_model imitates preferences"):
        RewardModel(model={}, loss={}, optim={}, data_spec={"kind": "text"}, lm=copy.deepcopy(LM))
    crafted = torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)
    crafted["mimicry"]["task"] = "mimicry.tasks.gan.GAN"  # a name compared, never imported
    torch.save(crafted, tmp_path / "gan.ckpt")
    with pytest.raises(MimicryError, match="is a GAN run; task=reward_model starts from a run of task=lm"):
        RewardModel(model={}, loss={}, optim={}, data_spec=data.spec(), init_from=str(tmp_path / "gan.ckpt"))
    with pytest.raises(MimicryError, match="is a LanguageModeling run; reward=model needs a run of task=reward_model"):
        reward_model(["text"], str(trained_lm))
    with pytest.raises(MimicryError, match="give init_from=LM_RUN_DIR"):
        PreferenceDataModule(path="x.jsonl").setup()


def test_true_reward_scores_the_evaluation_texts_beside_the_learned_one(ab_pairs):
    state, data = ab_pairs
    task = build_dpo(state, data.spec())
    task.hparams.true_reward = "avoid_letter"  # a registered reward, its options from conf/reward/ (letter e)
    result = task.evaluate()
    texts = [t for g in result["groups"] for t in g["text"]]
    assert result["true_rewards"].tolist() == avoid_letter(texts, letter="e") and len(texts) == 64
    assert not np.allclose(result["rewards"], result["true_rewards"])  # the other reward, on the same texts
    task.hparams.true_reward, task._true_reward = "os.system", None
    with pytest.raises(MimicryError, match="env.true_reward=os.system: not a reward; choose one of"):
        task.evaluate()


# ---- through the CLI: pairs → reward model → DPO judged by it → sample, list ------------------------
def test_pairs_reward_model_and_dpo_through_the_cli(trained_lm, tmp_path):
    out = tmp_path / "pairs"
    run_mimicry(tmp_path, "sample", str(trained_lm), "pairs=40", "judge=contains_words", "judge.words=[the]",
                "judge.temperature=0.05", "prompts=[def]", "length=10", f"out={out}")
    rows = [json.loads(line) for line in (out / "preferences_seed0.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(r["prompt"] == "def" and len(r["chosen"]) == 10 for r in rows)
    assert all(r["chosen_reward"] >= r["rejected_reward"] for r in rows if abs(r["chosen_reward"] - r["rejected_reward"]) > 0.5)
    pairs = str(out / "preferences_seed0.jsonl")

    (tmp_path / "rm").mkdir()
    run_mimicry(tmp_path / "rm", "train", "task=reward_model", f"init_from={trained_lm}", f"data.path={pairs}",
                "trainer.max_epochs=1", "data.batch_size=8", "trainer.log_every_n_steps=1")
    (rm_run,) = run_dirs(tmp_path / "rm")
    assert summary(rm_run)["status"] == "completed"
    assert 0.0 <= summary(rm_run)["metrics"]["val/preference_accuracy"] <= 1.0
    scored = run_mimicry(tmp_path, "sample", str(rm_run), "texts=[the cat, xyz]", "prompt=def").stdout
    assert scored.count("'def") == 2  # one score per text, with its prompt

    (tmp_path / "dpo").mkdir()  # a sweep over β, judged by the reward model, the hidden reward beside it
    run_mimicry(tmp_path / "dpo", "train", "-m", "task=rl", "env=text", "algo=dpo", f"init_from={trained_lm}",
                "data=preferences", f"data.path={pairs}", "data.batch_size=8", "env.prompts=[def]",
                "env.max_new_tokens=10", "task.eval_episodes=4", "trainer.max_epochs=2", "reward=model",
                f"reward.from_run={rm_run}", "env.true_reward=contains_words", "algo.beta=0.1,1.0")
    runs = run_dirs(tmp_path / "dpo")
    assert [summary(r)["status"] for r in runs] == ["completed", "completed"]
    dpo_run = runs[0]
    events = read_events(dpo_run)
    for tag in ("train/loss", "val/loss", "val/preference_accuracy", "eval/return_mean", "eval/true_return_mean",
                "eval/kl"):
        assert tag in events["scalars"], tag
    assert events["scalars"]["eval/kl"][0][1] == pytest.approx(0.0, abs=1e-4)  # before: the start itself
    table = run_mimicry(tmp_path, "compare", str(runs[0].parent), "--metric", "val/preference_accuracy",
                        "--format", "csv").stdout.splitlines()
    assert table[0].startswith("run,algo.beta,status") and "val/preference_accuracy final" in table[0]
    assert [line.split(",")[1:3] for line in table[1:]] == [["0.1", "completed"], ["1", "completed"]]
    task = load_task(dpo_run)  # the checkpoint alone rebuilds it; the reward model's path is not followed
    assert type(task).__name__ == "TextDPO" and task.hparams.reward["from_run"] == "???"
    (written,) = task.generate_samples(tmp_path, n=2, seed=0)
    assert written.read_text().count("def") >= 2

    listing = run_mimicry(tmp_path, "list").stdout
    for name in ("reward_model", "dpo", "preferences", "bradley_terry", "model "):
        assert name in listing, name
