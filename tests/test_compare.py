"""`mimicry compare` on fixture run directories (written file by file, see compare_fixtures.py)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from compare_fixtures import loss_curve, write_run
from mimicry.cli import main
from mimicry.compare_plot import group_band


def compare(capsys, *args: str) -> tuple[int, str, str]:
    """`mimicry compare ARGS` in this process (fast): exit code, stdout, stderr."""
    code = main(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    """A 2 lr x 3 seed sweep laid out as Hydra writes one: final val/loss = lr-dependent + seed noise."""
    root = tmp_path_factory.mktemp("outputs") / "lm" / "multirun" / "2026-01-02" / "10-00-00_ab12"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    finals = {}
    for job, (lr, seed) in enumerate((lr, seed) for lr in ("0.01", "0.001") for seed in (0, 1, 2)):
        finals[lr, seed] = (1.0 if lr == "0.01" else 2.0) + 0.1 * seed
        write_run(root / f"{job}_optim.lr={lr},seed={seed}", ["task=lm", f"optim.lr={lr}", f"seed={seed}"],
                  {"val/loss": loss_curve(finals[lr, seed]), "train/loss": loss_curve(finals[lr, seed] + 0.5)})
    return root, finals


def test_shows_only_the_hyperparameters_that_differ_with_defaults_from_the_config(tmp_path, capsys):
    write_run(tmp_path / "a", ["task=lm", "optim.lr=0.01", "model.n_layer=2"], {"val/loss": loss_curve(1.5)})
    write_run(tmp_path / "b", ["task=lm", "optim.lr=0.001", "model=gpt_wide"], {"val/loss": loss_curve(2.5)})
    write_run(tmp_path / "c", ["task=lm", "optim.lr=0.01", "data.batch_size=32"], {"val/loss": loss_curve(3.5)})
    code, out, _ = compare(capsys, str(tmp_path), "--format", "csv")
    assert code == 0
    rows = csv_rows(out)
    # task is the same everywhere; model.n_layer=2 is the default the other runs have too.
    assert [k for k in rows[0] if "." in k or k in ("model", "task")] == ["optim.lr", "model", "data.batch_size"]
    assert [r["optim.lr"] for r in rows] == ["0.01", "0.001", "0.01"]
    assert [r["model"] for r in rows] == ["gpt", "gpt_wide", "gpt"]  # a group's chosen option, from hydra.yaml
    assert [r["data.batch_size"] for r in rows] == ["16", "16", "32"]  # runs without the override: the default
    assert [float(r["val/loss final"]) for r in rows] == pytest.approx([1.5, 2.5, 3.5])


def test_group_by_seed_gives_mean_std_and_n(seed_sweep, capsys):
    root, finals = seed_sweep
    code, out, _ = compare(capsys, str(root), "--group-by", "seed", "--format", "csv")
    assert code == 0
    rows = {r["optim.lr"]: r for r in csv_rows(out)}
    assert set(rows) == {"0.01", "0.001"} and "seed" not in next(iter(rows.values()))
    for lr, row in rows.items():
        values = [finals[lr, seed] for seed in (0, 1, 2)]
        assert row["n"] == "3" and row["status"] == "3 completed"
        assert float(row["val/loss final mean"]) == pytest.approx(np.mean(values))
        assert float(row["val/loss final std"]) == pytest.approx(np.std(values, ddof=1))
        assert float(row["val/loss best mean"]) == pytest.approx(np.mean(values))  # loss falls: best = last
    code, out, _ = compare(capsys, str(root), "--group-by", "seed")
    assert "1.1 ± 0.1" in out and "2.1 ± 0.1" in out and "6 runs in 2 groups by seed" in out


def test_markdown_and_csv_output(seed_sweep, capsys, tmp_path):
    root, finals = seed_sweep
    code, out, _ = compare(capsys, str(root), "--format", "md", "--metric", "val/loss", "--metric", "train/loss")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2 + 6
    assert lines[0].startswith("| run | optim.lr | seed | status |") and "train/loss best" in lines[0]
    assert set(lines[1].replace("|", "").split()) == {"---"}
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| 10-00-00_ab12/0 | 0.01 | 0 | completed |" in lines[2]
    # --out writes the file, its format from the suffix.
    code, out, err = compare(capsys, str(root), "--out", str(tmp_path / "runs.csv"))
    rows = csv_rows((tmp_path / "runs.csv").read_text())
    assert code == 0 and out == "" and "wrote" in err and len(rows) == 6
    assert float(rows[5]["val/loss final"]) == pytest.approx(finals["0.001", 2])


def test_plot_is_written_with_curves_and_bands(seed_sweep, capsys, tmp_path):
    import matplotlib.image

    root, _ = seed_sweep
    for x in ("step", "wall"):
        out_png = tmp_path / f"curves_{x}.png"
        code, _, err = compare(capsys, str(root), "--group-by", "seed", "--plot", str(out_png), "--x", x)
        assert code == 0 and f"wrote {out_png}" in err
        image = matplotlib.image.imread(out_png)
        colours = {tuple(pixel) for pixel in (image[..., :3] * 255).astype(int).reshape(-1, 3)}
        assert image.shape[0] > 200 and len(colours) > 20  # lines, a band, text: not a blank canvas


def test_group_band_on_a_common_grid():
    xs_a, xs_b = np.arange(0, 11.0), np.arange(0.5, 12.0)
    grid, mean, std = group_band([(xs_a, xs_a * 2), (xs_b, xs_b * 2 + 1)])
    assert grid[0] == pytest.approx(0.5) and grid[-1] == pytest.approx(10.0)  # only where both have points
    assert mean == pytest.approx(grid * 2 + 0.5)
    assert std == pytest.approx(np.full_like(grid, np.std([0, 1], ddof=1)))
    assert group_band([(xs_a, xs_a), (xs_a + 20, xs_a)]) is None  # no range in common: no band


def test_another_scalar_as_x_axis(tmp_path, capsys):
    # Two "algorithms" that log env steps at different rates per training step.
    for name, env_per_step in (("ppo", 128), ("dqn", 4)):
        write_run(tmp_path / name, [f"model={name}"], {
            "rollout/return_mean": [(s, float(s)) for s in range(0, 100, 10)],
            "rollout/env_steps": [(s, float(s * env_per_step)) for s in range(0, 100, 10)]})
    write_run(tmp_path / "no_env_steps", ["model=gpt"], {"rollout/return_mean": [(0, 1.0), (10, 2.0)]})
    from mimicry.compare_plot import run_xy
    from mimicry.run_reading import read_run, read_scalars

    run = read_run(tmp_path / "ppo")
    read_scalars(run, {"rollout/return_mean", "rollout/env_steps"})
    xs, ys = run_xy(run, "rollout/return_mean", "rollout/env_steps")
    assert xs == pytest.approx(np.arange(0, 100, 10) * 128) and ys == pytest.approx(np.arange(0, 100, 10))
    code, out, err = compare(capsys, str(tmp_path), "--metric", "rollout/return_mean", "--format", "csv",
                             "--x", "rollout/env_steps", "--plot", str(tmp_path / "rl.png"))
    assert code == 0 and (tmp_path / "rl.png").stat().st_size > 10_000
    assert "no_env_steps has no rollout/env_steps" in err
    dqn, no_env_steps, ppo = csv_rows(out)
    assert float(ppo["rollout/return_mean best"]) == pytest.approx(90.0)  # a return: higher is better


def test_missing_metric_lists_the_existing_ones(seed_sweep, capsys):
    root, _ = seed_sweep
    code, out, err = compare(capsys, str(root), "--metric", "val/accuracy")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "val/accuracy" in err and "train/loss, val/loss" in err


def test_path_without_runs_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "not_there"):
        code, out, err = compare(capsys, str(path))
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and str(path) in err


def test_truncated_event_file_is_read_up_to_the_cut_and_marked(tmp_path, capsys):
    points = loss_curve(1.0, steps=100, every=10)
    run = write_run(tmp_path / "crashed", ["optim.lr=0.01"], {"val/loss": points}, status="running")
    write_run(tmp_path / "fine", ["optim.lr=0.001"], {"val/loss": points})
    (events,) = (run / "tb").glob("events.out.tfevents.*")
    events.write_bytes(events.read_bytes()[:-7])  # the last record loses its tail, as when killed mid-write
    code, out, _ = compare(capsys, str(tmp_path), "--format", "csv")
    crashed, fine = csv_rows(out)
    assert code == 0 and crashed["status"] == "running; events truncated" and fine["status"] == "completed"
    assert float(crashed["val/loss final"]) == pytest.approx(points[-2][1], rel=1e-6)  # the last whole point
    assert float(fine["val/loss final"]) == pytest.approx(points[-1][1], rel=1e-6)


def test_a_running_run_shows_its_newest_events(tmp_path, capsys):
    run = write_run(tmp_path / "a_going", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)}, status="running")
    write_run(tmp_path / "b_done", ["optim.lr=0.001"], {"val/loss": loss_curve(2.0)})
    # summary.json is refreshed at validation only: the events are ahead of it.
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "steps": 50, "metrics": {"val/loss": 3.0}}))
    code, out, _ = compare(capsys, str(tmp_path), "--format", "csv", "--plot", str(tmp_path / "p.png"))
    going, done = csv_rows(out)
    assert code == 0 and going["status"] == "running" and done["status"] == "completed"
    assert going["steps"] == "100" and float(going["val/loss final"]) == pytest.approx(1.0)


def test_group_by_a_key_no_run_has(seed_sweep, capsys):
    root, _ = seed_sweep
    code, _, err = compare(capsys, str(root), "--group-by", "sead")
    assert code == 2 and "sead" in err and "optim.lr, seed" in err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert all(option in out for option in ("--metric", "--group-by", "--format", "--plot", "--x", "--out"))


def test_metric_only_in_summary_json(tmp_path, capsys):
    """A metric the events lack (e.g. a test/* metric written at the end) comes from summary.json."""
    run = write_run(tmp_path / "a", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "metrics": {**summary["metrics"], "test/loss": "nan"}}))
    code, out, _ = compare(capsys, str(run), "--metric", "test/loss", "--format", "csv")
    (row,) = csv_rows(out)
    assert code == 0 and row["test/loss final"] == "nan" and row["test/loss best"] == "nan"


def test_a_failed_run_shows_why(tmp_path, capsys):
    run = write_run(tmp_path / "a", ["model.n_head=3"], {}, status="failed")
    summary = json.loads((run / "summary.json").read_text())
    error = "InstantiationException: Error in call to target 'GPT':\nAssertionError('n_embd must be divisible by n_head')"
    (run / "summary.json").write_text(json.dumps({**summary, "error": error}))
    write_run(tmp_path / "b", ["model.n_head=2"], {"val/loss": loss_curve(1.0)})
    code, out, _ = compare(capsys, str(tmp_path), "--format", "csv")
    failed, fine = csv_rows(out)
    assert code == 0 and failed["status"] == "failed; AssertionError('n_embd must be divisible by n_head')"
    assert failed["val/loss final"] == "" and float(fine["val/loss final"]) == pytest.approx(1.0)
