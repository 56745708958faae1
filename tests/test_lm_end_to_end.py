"""`mimicry train task=lm` as a user runs it: events, samples, checkpoints, summary, sampling."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from conftest import TINY_LM, read_events, run_dirs, run_mimicry, summary


def test_lm_run_writes_events_samples_checkpoints_and_summary(trained_lm):
    record = summary(trained_lm)
    assert record["status"] == "completed"
    assert record["steps"] == 10 and record["task"] == "lm"
    # An untrained GPT (small init, near-zero logits) scores ln(vocab) nats; ten steps must beat that clearly.
    vocab = torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)["mimicry"]["derived"]["data_spec"]["vocab_size"]
    assert record["metrics"]["val/loss"] < math.log(vocab) - 0.2
    assert record["best"]["val/loss"] <= record["metrics"]["val/loss"] + 1e-6

    events = read_events(trained_lm)
    for tag in ["train/loss", "val/loss", "val/perplexity", "val/bits_per_char", "train/grad_norm",
                "train/tokens_per_sec"]:
        assert tag in events["scalars"], f"{tag} missing from TensorBoard; have {sorted(events['scalars'])}"
    assert any(tag.startswith("lr-") for tag in events["scalars"])
    assert "final/val/loss" in events["scalars"]  # the HParams tab's metric
    texts = events["text"]["samples/text/text_summary"]
    assert {step for step, _ in texts} >= {0, 5, 10} and all(len(t.strip()) > 0 for _, t in texts)

    assert (trained_lm / "checkpoints" / "last.ckpt").is_file()
    assert (trained_lm / "checkpoints" / "best.ckpt").is_file()
    assert (trained_lm / ".hydra" / "config.yaml").is_file()
    assert sorted(p.name for p in (trained_lm / "samples").glob("*.txt"))[0] == "step_0000000.txt"


def test_val_perplexity_is_exp_of_val_loss(trained_lm):
    metrics = summary(trained_lm)["metrics"]
    assert abs(torch.tensor(metrics["val/loss"]).exp().item() - metrics["val/perplexity"]) < 1e-3
    assert abs(metrics["val/loss"] / 0.693147 - metrics["val/bits_per_char"]) < 1e-3


def test_sample_from_run_dir_without_training_data(trained_lm, tmp_path):
    out = tmp_path / "samples"
    result = run_mimicry(tmp_path, "sample", str(trained_lm), "n=2", "prompt=The ", "length=15", "seed=3",
                         f"out={out}", env={"MIMICRY_DATA": str(tmp_path / "nowhere")})
    (written,) = out.glob("*.txt")
    texts = written.read_text().split("\n\n=====\n\n")
    assert len(texts) == 2 and all(t.startswith("The ") and len(t) == len("The ") + 15 for t in texts)
    again = run_mimicry(tmp_path, "sample", str(trained_lm), "n=2", "prompt=The ", "length=15", "seed=3",
                        f"out={out}")
    assert again.stdout == result.stdout  # same seed, same text


def test_same_command_twice_gives_same_numbers(trained_lm, tmp_path):
    run_mimicry(tmp_path, "train", *TINY_LM)
    (again,) = run_dirs(tmp_path)
    # Same machine, same seed: equal up to float noise (BLAS may pick kernels by memory alignment).
    for name in ("val/loss", "train/loss"):
        assert summary(again)["metrics"][name] == pytest.approx(summary(trained_lm)["metrics"][name], rel=1e-5)


def test_multirun_sweep_makes_one_run_directory_per_value(tmp_path):
    args = [a for a in TINY_LM if not a.startswith("trainer.max_epochs")]
    run_mimicry(tmp_path, "train", "-m", *args, "trainer.max_epochs=1", "model.n_embd=16,32")
    runs = run_dirs(tmp_path)
    assert len(runs) == 2 and all("multirun" in str(r) for r in runs)
    assert sorted(summary(r)["status"] for r in runs) == ["completed", "completed"]
    assert {"model.n_embd=16", "model.n_embd=32"} <= {o for r in runs for o in summary(r)["overrides"]}


def test_list_and_compare(trained_lm, tmp_path):
    listing = run_mimicry(tmp_path, "list").stdout
    assert "lm " in listing and "next_token" in listing and "tinyshakespeare" in listing
    assert "data.tokenizer=char|byte|bpe" in listing and "init_from=hf:DIR" in listing
    table = run_mimicry(tmp_path, "compare", str(trained_lm.parent)).stdout
    assert "completed" in table and "val/loss" in table


def test_train_help_lists_the_option_groups(tmp_path):
    help_text = run_mimicry(tmp_path, "train", "--help").stdout
    assert "task:" in help_text and "trainer: cpu, ddp, debug, gpu" in help_text


def test_tab_completion_after_train(tmp_path):
    line = "mimicry train trainer.max_"
    result = run_mimicry(tmp_path, "-sc", "query=bash", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert "trainer.max_epochs=" in result.stdout and "trainer.max_steps=" in result.stdout


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_two_rank_ddp_gives_a_one_process_runs_weights_on_the_same_global_batch(tmp_path, monkeypatch):
    """Lightning re-launches `mimicry` for rank 1 with overrides only; both ranks share one run dir, and
    2 ranks x 4 windows train to the weights of 1 process x 8 windows: each rank reads every other
    offset of the one-process draw (data.text.WindowOrder) and DDP averages the gradients before
    clipping and AdamW. No dropout, so nothing else draws random numbers."""
    from mimicry.cli import main

    args = [a for a in TINY_LM if not a.startswith(("trainer.max_epochs", "data.batch_size"))]
    args += ["trainer.max_steps=4"]
    ddp_cwd, one_cwd = tmp_path / "ddp", tmp_path / "one"
    ddp_cwd.mkdir(), one_cwd.mkdir()
    run_mimicry(ddp_cwd, "train", *args, "data.batch_size=4", "trainer.devices=2", "trainer.strategy=ddp")
    (ddp_run,) = run_dirs(ddp_cwd)
    assert summary(ddp_run)["status"] == "completed" and summary(ddp_run)["steps"] == 4

    monkeypatch.chdir(one_cwd)
    assert main(["train", "callbacks.progress=null", *args, "data.batch_size=8"]) == 0
    (one_run,) = run_dirs(one_cwd)
    ddp, one = final_weights(ddp_run), final_weights(one_run)
    assert ddp.keys() == one.keys()
    moved = [name for name in one if not torch.allclose(one[name], ddp[name], atol=1e-5)]
    assert not moved, f"2-rank DDP and one process differ in {moved[:5]}"
    # the negative control: the tolerance tells batches apart (one rank's share alone gives other weights)
    half_cwd = tmp_path / "half"
    half_cwd.mkdir()
    monkeypatch.chdir(half_cwd)
    assert main(["train", "callbacks.progress=null", *args, "data.batch_size=4"]) == 0
    (half_run,) = run_dirs(half_cwd)
    half = final_weights(half_run)
    assert any(not torch.allclose(half[name], one[name], atol=1e-5) for name in one)


def hparams_tab(run_dir) -> tuple[dict, list[str]]:
    """What TensorBoard's HParams plugin reads from a run: {key: value} of its session and the metric names."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    values, metric_names = {}, []
    for event_file in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"tensors": 0})
        acc.Reload()
        try:
            found = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        except KeyError:  # an event file without the HParams summaries
            continue
        for content in found.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                for key, value in data.session_start_info.hparams.items():
                    values[key] = getattr(value, value.WhichOneof("kind"))
            if data.HasField("experiment"):
                metric_names += [info.name.tag for info in data.experiment.metric_infos]
    return values, metric_names


def test_hparams_tab_holds_the_config_and_the_final_metrics(trained_lm):
    values, metric_names = hparams_tab(trained_lm)
    assert isinstance(values["optim.lr"], float)  # a number the tab can sort and plot, not a string
    config = yaml.safe_load((trained_lm / ".hydra" / "config.yaml").read_text())
    assert values["optim.lr"] == pytest.approx(float(config["optim"]["lr"]))
    assert values["optim.warmup_steps"] == 2 and values["model.n_embd"] == 32  # the command line's overrides
    assert values["seed"] == config["seed"]
    assert "final/val/loss" in metric_names
    final = dict(read_events(trained_lm)["scalars"]["final/val/loss"])
    assert list(final.values())[-1] == pytest.approx(summary(trained_lm)["metrics"]["val/loss"], rel=1e-5)
