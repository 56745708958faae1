"""What a run reports is what happened: each logged value belongs to the step it is drawn at,
throughput counts training time only, and a run piped to a file shows its progress."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import REPO, TINY_LM, read_events, run_dirs, run_mimicry
from mimicry.callbacks import throughput as throughput_module
from mimicry.callbacks.throughput import TrainingThroughput

PROBES = {"PYTHONPATH": str(REPO / "tests")}
# 3 epochs of 10 batches, logged every 10: Lightning writes batches 9, 19 and 29
CADENCE_10 = [a for a in TINY_LM if not a.startswith(("trainer.log_every_n_steps", "data.steps_per_epoch",
                                                       "trainer.max_epochs"))] + [
    "trainer.log_every_n_steps=10", "data.steps_per_epoch=10", "trainer.max_epochs=3"]


# The image tasks at the same cadence: 160 images in batches of 16 = 10 batches an epoch, 2 epochs.
IMAGES_CADENCE_10 = ["data.limit=160", "data.batch_size=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=10",
                     "task.metrics_every_n_epochs=0", "task.sample_every_n_steps=0", "task.num_samples=4"]
TINY_TASKS = {
    "gan": ["task=gan", "model.generator.latent_dim=8", "model.generator.width=8", "model.discriminator.width=8"],
    "image_ar": ["task=image_ar", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "tokenizer.levels=4",
                 "task.completions=0"],
}


@pytest.mark.parametrize("task", sorted(TINY_TASKS))
def test_image_tasks_log_the_loss_of_the_batch_at_each_step(tmp_path, task):
    run_mimicry(tmp_path, "train", *TINY_TASKS[task], *IMAGES_CADENCE_10,
                "+callbacks.losses._target_=run_probes.LossRecorder", f"+callbacks.losses.path={tmp_path / 'l.json'}",
                env=PROBES)
    (run_dir,) = run_dirs(tmp_path)
    per_batch = {int(step): loss for step, loss in json.loads((tmp_path / "l.json").read_text()).items()}
    logged = dict(read_events(run_dir)["scalars"]["train/loss"])
    assert sorted(logged) == [9, 19]
    for step, value in logged.items():
        assert value == pytest.approx(per_batch[step], rel=1e-6), (step, value, per_batch)


@pytest.fixture(scope="module")
def cadence_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cadence")
    run_mimicry(cwd, "train", *CADENCE_10, "+callbacks.losses._target_=run_probes.LossRecorder",
                f"+callbacks.losses.path={cwd / 'losses.json'}",
                "+callbacks.snoop._target_=run_probes.SummarySnoop", f"+callbacks.snoop.path={cwd / 'seen.json'}",
                env=PROBES)
    (run_dir,) = run_dirs(cwd)
    return cwd, run_dir


def test_logged_train_values_belong_to_the_step_they_are_drawn_at(cadence_run):
    cwd, run_dir = cadence_run
    per_batch = {int(step): loss for step, loss in json.loads((cwd / "losses.json").read_text()).items()}
    assert sorted(per_batch) == list(range(30))
    scalars = read_events(run_dir)["scalars"]
    logged = dict(scalars["train/loss"])
    assert sorted(logged) == [9, 19, 29]
    for step, value in logged.items():  # the loss of batch s, not of an earlier batch
        assert value == pytest.approx(per_batch[step], rel=1e-6), (step, value, per_batch)
    # The other per-step curves are written on the same steps.
    assert sorted(step for step, _ in scalars["train/grad_norm"]) == [9, 19, 29]
    assert sorted(step for step, _ in scalars["train/tokens_per_sec"]) == [9, 19, 29]


def test_custom_scalars_put_train_and_val_loss_on_one_chart(cadence_run):
    _, run_dir = cadence_run
    layout = read_events(run_dir)["layout"]
    assert layout["imitation"]["loss (train, val)"] == [r"^train/loss$", r"^val/loss$"]


def test_summary_is_refreshed_at_each_validation(cadence_run):
    cwd, run_dir = cadence_run
    seen = json.loads((cwd / "seen.json").read_text())  # summary.json read at the start of epochs 2 and 3
    assert [s["status"] for s in seen] == ["running", "running"]
    assert [s["steps"] for s in seen] == [10, 20]
    assert all("val/loss" in s["metrics"] and s["wall_time_s"] > 0 for s in seen)
    assert seen[1]["metrics"]["val/loss"] != seen[0]["metrics"]["val/loss"]  # the latest validation's


def test_piped_output_gets_progress_lines(cadence_run):
    _, run_dir = cadence_run
    log = (run_dir / "train.log").read_text()
    # stdout is a pipe in tests; every_n_seconds defaults to 30, too slow for a run of seconds,
    # but each validation writes its line.
    assert log.count("validation at step") == 3 and "val/loss" in log


def test_progress_lines_say_step_loss_speed_and_time_left(tmp_path):
    run_mimicry(tmp_path, "train", *CADENCE_10, "callbacks.progress_log.every_n_seconds=0")
    (run_dir,) = run_dirs(tmp_path)
    lines = [line for line in (run_dir / "train.log").read_text().splitlines() if " | epoch " in line]
    assert len(lines) == 30  # one per batch at every_n_seconds=0
    last = lines[-1]
    assert "step 30/30 (100%)" in last and "epoch 3/3" in last and "train/loss" in last
    assert "train/tokens_per_sec" in last and "elapsed" in last and "left" in last


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throughput_counts_training_batches_only(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(throughput_module.time, "perf_counter", clock)
    logged = {}
    writes = iter([False, True])  # Lightning writes logs on the second batch only

    class Connector:
        should_update_logs = property(lambda self: next(writes))

    trainer = SimpleNamespace(_logger_connector=Connector())
    task = SimpleNamespace(device=SimpleNamespace(type="cpu"), throughput_unit="tokens",
                           count_items=lambda batch: 10, log=lambda name, value, **_: logged.update({name: value}))
    meter = TrainingThroughput()
    meter.on_train_batch_start(trainer, task, None, 0)
    clock.now = 1.0                      # one second of training
    meter.on_train_batch_end(trainer, task, None, None, 0)
    clock.now = 101.0                    # a hundred seconds of validation and sampling
    meter.on_train_batch_start(trainer, task, None, 1)
    clock.now = 102.0                    # one more second of training
    meter.on_train_batch_end(trainer, task, None, None, 1)
    assert logged == {"train/tokens_per_sec": pytest.approx(20 / 2.0)}


def test_the_progress_bar_redraws_a_few_times_a_second_and_only_on_a_terminal(monkeypatch):
    """Lightning's bar would gather every metric after each batch; ours at most every min_interval_s."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import RichProgressBar

    from mimicry.callbacks import ProgressBar

    drawn = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, *args: drawn.append(args[-1]))
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    bar = ProgressBar(min_interval_s=60.0)
    trainer = SimpleNamespace(num_training_batches=100)
    for batch_idx in range(100):
        bar.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert drawn == [0, 99]  # the first, then nothing for a minute but the epoch's last batch
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert ProgressBar().is_disabled  # a log file gets ProgressLog's lines instead
    assert not ProgressBar(terminal_only=False).is_disabled
