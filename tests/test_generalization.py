"""The generalization lab: the n-gram lookup table (counts, smoothing, back-off, training through
the lm task with no optimizer), the probes (sharpness, layers, embeddings) and the image memorizer."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from conftest import run_dirs, run_mimicry, summary
from mimicry.cli import main
from mimicry.data.images import DigitsDataModule, to_unit
from mimicry.metrics.memorization import memorization
from mimicry.models.memorizer import ImageMemorizer
from mimicry.models.ngram import NGramTable
from mimicry.probes.common import batches_of, open_run
from mimicry.probes.layers import layer_agreement
from mimicry.probes.sharpness import sharpness

# "abcabcabb" as ids a=0, b=1, c=2: every count below is read off this text by hand.
TEXT = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 1]])


def counted(n: int = 3, k: float = 0.5) -> NGramTable:
    table = NGramTable(vocab_size=3, n=n, k=k)
    table.count(TEXT)
    return table


def table_counts(table: NGramTable, order: int) -> dict[int, int]:
    return dict(zip(getattr(table, f"keys_{order}").tolist(), getattr(table, f"counts_{order}").tolist()))


def test_ngram_counts_are_exact():
    table = counted()
    # targets b c a b c a b b; key = context·3 + next
    assert table_counts(table, 0) == {0: 2, 1: 4, 2: 2}                 # a, b, c after the empty context
    assert table_counts(table, 1) == {0 * 3 + 1: 3, 1 * 3 + 1: 1, 1 * 3 + 2: 2, 2 * 3 + 0: 2}  # ab×3 bb bc×2 ca×2
    assert table_counts(table, 2) == {(0 * 3 + 1) * 3 + 2: 2, (0 * 3 + 1) * 3 + 1: 1,  # abc×2 abb
                                      (1 * 3 + 2) * 3 + 0: 2, (2 * 3 + 0) * 3 + 1: 2}  # bca×2 cab×2
    table.count(TEXT)  # counting the same text again doubles every count
    assert table_counts(table, 1)[1] == 6 and table_counts(table, 2)[(0 * 3 + 1) * 3 + 2] == 4


def test_ngram_probabilities_sum_to_one_smooth_and_back_off():
    table, k = counted(k=0.5), 0.5
    probs = table(TEXT[:, :-1]).exp()[0]
    assert torch.allclose(probs.sum(-1), torch.ones(8), atol=1e-6)
    # after "ab" (position 1; seen: c twice, b once): add-k over the trigram counts
    assert probs[1].tolist() == pytest.approx([k / (3 + 3 * k), (1 + k) / (3 + 3 * k), (2 + k) / (3 + 3 * k)], abs=1e-6)
    # position 0 has one token of context ("a"): the bigram row
    assert probs[0].tolist() == pytest.approx([k / (3 + 3 * k), (3 + k) / (3 + 3 * k), k / (3 + 3 * k)], abs=1e-6)
    # "cb" never occurred: back off to the context "b" (b once, c twice)
    unseen = table(torch.tensor([[2, 1]])).exp()[0, 1]
    assert unseen.tolist() == pytest.approx([k / (3 + 3 * k), (1 + k) / (3 + 3 * k), (2 + k) / (3 + 3 * k)], abs=1e-6)
    # a token never seen as context backs off to the token frequencies (a 2, b 4, c 2 of 8)
    fresh = NGramTable(vocab_size=4, n=2, k=k)
    fresh.count(torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 1]]))
    row = fresh(torch.tensor([[3]])).exp()[0, 0]
    assert row.tolist() == pytest.approx([(2 + k) / (8 + 4 * k), (4 + k) / (8 + 4 * k), (2 + k) / (8 + 4 * k),
                                          k / (8 + 4 * k)], abs=1e-6)
    # an empty table guesses uniformly
    assert torch.allclose(NGramTable(3, n=2)(TEXT).exp(), torch.full((1, 9, 3), 1 / 3), atol=1e-6)


def test_ngram_sharpness_at_zero_is_zero_and_table_is_restored():
    table = counted()
    task = type("Task", (), {})()  # sharpness reads only task.model, task.loss and train/eval
    task.model = table
    task.training = False
    task.loss = lambda tokens: torch.nn.functional.cross_entropy(
        task.model(tokens[:, :-1]).reshape(-1, 3), tokens[:, 1:].reshape(-1))
    task.eval = task.train = lambda *a: None
    result = sharpness(task, [TEXT], eps=[0.0, 0.01, 0.3], draws=3, ascent_steps=3)
    rows = {r["eps"]: r for r in result["rows"]}
    assert abs(rows[0.0]["random_mean"]) < 1e-6 and abs(rows[0.0]["worst"]) < 1e-6
    assert rows[0.3]["worst"] > rows[0.01]["worst"] > 0
    assert task.model is table  # the probe put the table back


def test_table_trains_through_the_lm_task_without_an_optimizer(tmp_path, capsys):
    run_mimicry(tmp_path, "train", "task=lm", "model=lookup", "model.n=3", "model.block_size=32", "data.batch_size=64",
                "data.train_fraction=0.05", "data.val_batches=2", "data.train_eval_batches=2", "trainer.max_epochs=3",
                "task.sample_tokens=20")
    (run_dir,) = run_dirs(tmp_path)
    record = summary(run_dir)
    metrics = record["metrics"]
    assert record["status"] == "completed" and record["epochs"] == 1  # one pass fills the table, then it stops
    assert math.exp(metrics["val/loss"]) == pytest.approx(metrics["val/perplexity"], rel=1e-4)
    assert metrics["val/loss"] / math.log(2) == pytest.approx(metrics["val/bits_per_char"], rel=1e-4)
    assert metrics["val/train_loss"] < metrics["val/loss"] < math.log(100)  # seen text is easier; far better than chance
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(checkpoint["optimizer_states"]) and checkpoint["lr_schedulers"] == []  # no optimizer state at all
    # one sequential pass of windows every 32 tokens (33 long, 64 per batch): each window adds 32 targets with
    # the empty context, 32 with one token of context, and 31 with two (its first target has only one before it)
    totals = [checkpoint["state_dict"][f"model.counts_{order}"].sum().item() for order in range(3)]
    windows = totals[0] // 32
    assert totals == [32 * windows, 32 * windows, 31 * windows]
    assert (record["steps"] - 1) * 64 < windows <= record["steps"] * 64

    # sampling and probing in process (the CLI's own entry point; a subprocess each would cost seconds)
    assert main(["sample", str(run_dir), "n=1", "length=30", "prompt=The "]) == 0
    assert "The " in capsys.readouterr().out
    assert main(["probe", "sharpness", str(run_dir), "eps=[0,0.1]", "draws=2", "ascent_steps=2", "batches=2"]) == 0
    assert "0.1" in capsys.readouterr().out and (run_dir / "probes" / "sharpness.png").is_file()
    rows = {r["eps"]: r for r in json.loads((run_dir / "probes" / "sharpness.json").read_text())["rows"]}
    assert abs(rows[0.0]["worst"]) < 1e-6 and rows[0.1]["worst"] > 0.01


def test_gpt_sharpness_grows_with_eps_and_layers_give_one_value_per_layer(trained_lm):
    run = open_run(trained_lm)
    batches = batches_of(run.datamodule().train_dataloader(), 2)
    before = {name: p.detach().clone() for name, p in run.task.named_parameters()}
    result = sharpness(run.task, batches, eps=[0.0, 0.003, 0.1], draws=3, ascent_steps=3)
    rows = {r["eps"]: r for r in result["rows"]}
    assert abs(rows[0.0]["random_mean"]) < 1e-6 and abs(rows[0.0]["worst"]) < 1e-6
    assert rows[0.1]["worst"] > rows[0.003]["worst"] > 0
    assert rows[0.1]["worst"] > rows[0.1]["random_mean"] + 0.01  # the ascent finds a direction worse than chance
    assert all(torch.equal(p, before[name]) for name, p in run.task.named_parameters())  # weights restored

    layers = layer_agreement(run, k=5, bank=300, queries=100)
    n_layer = run.task.model.blocks.__len__()
    assert layers["layers"] == ["embedding"] + [f"block {i + 1}" for i in range(n_layer)]
    assert len(layers["agreement"]) == n_layer + 1 and all(0 <= v <= 1 for v in layers["agreement"])
    assert 0 < layers["chance"] < 1


def test_embeddings_probe_writes_projector_files(trained_lm, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_lm, run_dir)  # the shared run stays as other tests read it
    assert main(["probe", "embeddings", str(run_dir)]) == 0
    assert "token_embedding" in capsys.readouterr().out
    config = (run_dir / "tb" / "projector_config.pbtxt").read_text()
    assert "token_embedding" in config
    (tensors,) = (run_dir / "tb").rglob("token_embedding/tensors.tsv")
    (labels,) = (run_dir / "tb").rglob("token_embedding/metadata.tsv")
    vocab = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["mimicry"]["derived"]["data_spec"]["vocab_size"]
    assert len(tensors.read_text().splitlines()) == vocab == len(labels.read_text().splitlines())


def test_image_probes_read_a_gan_run(tmp_path, capsys):
    run_mimicry(tmp_path, "train", "task=gan", "data.limit=256", "trainer.max_epochs=1", "task.metrics_every_n_epochs=0",
                "task.sample_every_n_steps=0")
    (run_dir,) = run_dirs(tmp_path)
    # projector files: the feature net's and the discriminator's features of 60 labelled digits
    assert main(["probe", "embeddings", str(run_dir), "n=60"]) == 0
    assert "discriminator_features: 60 vectors" in capsys.readouterr().out
    for tag in ("feature_net", "discriminator_features"):
        (labels,) = (run_dir / "tb").rglob(f"{tag}/metadata.tsv")
        assert len(labels.read_text().splitlines()) == 60
        assert set(labels.read_text().split()) <= set("0123456789")
    # layer by layer through the discriminator: the pixels, then one value per LeakyReLU (3 in DCGAN's)
    result = layer_agreement(open_run(run_dir, "last"), k=5, bank=300, queries=100)
    assert result["layers"] == ["pixels", "layer 1", "layer 2", "layer 3"]
    assert all(0 <= v <= 1 for v in result["agreement"])
    assert result["agreement"][0] > 3 * result["chance"]  # digits' pixels alone sort them well


def test_a_classifier_run_learns_digits_and_its_deeper_layers_sort_them_better(tmp_path):
    run_mimicry(tmp_path, "train", "task=classifier", "trainer.max_epochs=3")
    (run_dir,) = run_dirs(tmp_path)
    assert summary(run_dir)["metrics"]["val/accuracy"] > 0.8  # 10 classes: chance is 0.1
    result = layer_agreement(open_run(run_dir), k=5, bank=500, queries=150)
    assert result["layers"][0] == "pixels" and result["layers"][-1] == "logits"
    assert result["layers"][1:-1] == [f"conv {i + 1}" for i in range(len(result["layers"]) - 2)]
    assert result["agreement"][-1] > result["agreement"][0] + 0.02  # measured: 0.933 → 0.992


def test_probe_command_lists_probes_and_refuses_unknown_ones(tmp_path, capsys):
    assert main(["probe", "--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("sharpness", "layers", "embeddings"))
    assert main(["probe", "flatness", str(tmp_path)]) == 2
    assert "unknown probe" in capsys.readouterr().err


def test_memorizer_scores_as_a_copy():
    data = DigitsDataModule(batch_size=64, value_range="signed")
    data.setup()
    memorizer = ImageMemorizer(channels=1, image_size=data.spec()["image_size"], capacity=256)
    for batch in batches_of(data.train_dataloader(), 5):
        memorizer.count(batch)
    assert len(memorizer.images) == 256
    train = to_unit(data.train_images(), "signed")
    drawn = to_unit(memorizer.draw(64, seed=0), "signed")
    assert memorization(drawn, train, value_range="unit")["copy_rate"] == 1.0
    # real held-out images are not copies: the metric tells the two apart
    assert memorization(to_unit(data.val_images()[:64], "signed"), train, value_range="unit")["copy_rate"] < 0.2


def test_image_lookup_task_scores_as_a_copy_at_the_fid_floor(tmp_path):
    run_mimicry(tmp_path, "train", "task=image_lookup", "task.metrics_samples=200", "task.feature_net.width=8",
                "task.feature_net.steps=60", "task.sample_every_n_steps=0")
    (run_dir,) = run_dirs(tmp_path)
    metrics = summary(run_dir)["metrics"]
    assert metrics["val/copy_rate"] == 1.0  # every draw is a stored training image
    assert metrics["val/fid"] < 2 * metrics["val/fid_floor"] + 1.0  # and it scores like real training images


def test_bad_table_and_data_settings_fail_in_one_line():
    from mimicry.data.text import TextDataModule
    from mimicry.errors import MimicryError

    for settings, named in (({"k": 0.0}, "model.k"), ({"n": 0}, "model.n"), ({"n": 12}, "model.n")):
        with pytest.raises(MimicryError, match=named):
            NGramTable(vocab_size=65, **settings)
    for settings, named in (({"train_fraction": 0.0}, "data.train_fraction"), ({"order": "shuffled"}, "data.order")):
        with pytest.raises(MimicryError, match=named):
            TextDataModule(name="text", **settings)
