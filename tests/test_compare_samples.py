"""`mimicry compare --samples FILE`: the last sample grid of each run side by side, on a real GAN
sweep, and the notes and errors for runs without a grid or with a damaged or oversized one."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mimicry.compare_samples as compare_samples
from compare_fixtures import loss_curve, write_run
from mimicry.cli import main
from mimicry.run_reading import read_run


def compare(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def titles(monkeypatch) -> list[str]:
    """The panel labels each drawing got, in order."""
    seen: list[str] = []
    draw = compare_samples.draw

    def recording(panels, labels, out):
        seen.extend(labels)
        draw(panels, labels, out)
    monkeypatch.setattr(compare_samples, "draw", recording)
    return seen


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width × height: decoding it for real would need that much memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def small_grid(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20), color).save(path)


def test_last_grid_of_each_gan_job_side_by_side_titled_by_loss(gan_sweep, tmp_path, capsys, titles):
    out = tmp_path / "sheet.png"
    code, _, err = compare(capsys, str(gan_sweep), "--samples", str(out))
    assert code == 0 and err == f"wrote {out}\n"
    assert titles == ["loss=ns", "loss=hinge"]
    for job in ("0_loss=ns", "1_loss=hinge"):  # grids at steps 0, 4, 8: the last one is drawn
        assert compare_samples.last_grid(read_run(gan_sweep / job)).path.name == "step_0000008.png"
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert sheet.shape[1] > sheet.shape[0]  # two panels in one row
    # The forgery maps are drawn in a red-yellow heat palette: pixels no white sheet or grey fake has.
    heat = (sheet[..., 0] > 150) & (sheet[..., 2] < 60)
    left, right = heat[:, : sheet.shape[1] // 2], heat[:, sheet.shape[1] // 2:]
    assert left.sum() > 1000 and right.sum() > 1000


def test_the_highest_step_is_the_last_grid_whatever_the_file_times(tmp_path):
    run = write_run(tmp_path / "a", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    for name in ("step_0000010.png", "step_0000009.png", "samples_seed0.png", "trajectory_step_0000020.png"):
        small_grid(run / "samples" / name, (0, 0, 0))
    newest = (run / "samples" / "step_0000010.png").stat().st_mtime + 100
    os.utime(run / "samples" / "step_0000009.png", (newest, newest))  # e.g. copied later
    assert compare_samples.last_grid(read_run(run)).step == 10


def test_runs_without_a_grid_are_left_out_with_a_note(gan_sweep, tmp_path, capsys, titles):
    lm = write_run(tmp_path / "lm_run", ["task=lm"], {"val/loss": loss_curve(1.0)})
    code, _, err = compare(capsys, str(gan_sweep), str(lm), "--samples", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").is_file()
    assert f"note: {lm}: no sample grid (samples/step_*.png); left out of --samples\n" in err
    assert titles == ["loss=ns", "loss=hinge"]  # what differs between the runs drawn


def test_no_grid_at_all_is_one_line_naming_the_runs_that_have_them(tmp_path, capsys):
    write_run(tmp_path / "a", ["optim.lr=0.01"], {"val/loss": loss_curve(1.0)})
    write_run(tmp_path / "b", ["optim.lr=0.001"], {"val/loss": loss_curve(2.0)})
    code, _, err = compare(capsys, str(tmp_path), "--samples", str(tmp_path / "s.png"))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: --samples: none of the 2 runs has a sample grid")
    assert "image runs (task=gan, image_ar, diffusion)" in last and not (tmp_path / "s.png").exists()


def test_damaged_oversized_and_outside_grids_are_left_out_undecoded(tmp_path, capsys, titles):
    runs = {name: write_run(tmp_path / name, [f"optim.lr={lr}"], {"val/loss": loss_curve(1.0)})
            for name, lr in (("a", "0.1"), ("b", "0.2"), ("c", "0.3"), ("d", "0.4"), ("e", "0.5"), ("f", "0.6"))}
    small_grid(runs["a"] / "samples" / "step_0000004.png", (200, 30, 30))
    small_grid(runs["f"] / "samples" / "step_0000004.png", (30, 200, 30))
    (runs["b"] / "samples").mkdir()
    (runs["b"] / "samples" / "step_0000004.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # cut short
    (runs["c"] / "samples").mkdir()
    png_header_only(runs["c"] / "samples" / "step_0000004.png", 5000, 5000)
    (runs["d"] / "samples").mkdir()
    png_header_only(runs["d"] / "samples" / "step_0000004.png", 40000, 40000)  # past PIL's own bomb limit
    small_grid(tmp_path / "elsewhere" / "grid.png", (0, 0, 200))
    (runs["e"] / "samples").mkdir()
    os.symlink(tmp_path / "elsewhere" / "grid.png", runs["e"] / "samples" / "step_0000004.png")

    code, _, err = compare(capsys, *(str(run) for run in runs.values()), "--samples", str(tmp_path / "s.png"))
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    grid = "samples/step_0000004.png"
    assert code == 0 and titles == ["lr=0.1", "lr=0.6"] and len(notes) == 4
    assert notes[0].startswith(f"note: {runs['b']}/{grid}: not a readable PNG (")
    assert notes[1] == (f"note: {runs['c']}/{grid}: 5000×5000 pixels, over the 16.8 megapixel limit for a sample "
                        "grid; left out of --samples")
    assert notes[2] == (f"note: {runs['d']}/{grid}: larger than the 16.8 megapixel limit for a sample grid; "
                        "left out of --samples")
    assert notes[3] == f"note: {runs['e']}/{grid}: links outside the run folder; left out of --samples"


def test_help_names_the_samples_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--help"])
    assert exit_info.value.code == 0 and "--samples FILE" in capsys.readouterr().out
