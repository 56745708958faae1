"""``mimicry compare --samples FILE``: the last sample grid of each run side by side in one image,
each panel titled with the hyperparameters that differ (the rule of the `--plot` legend).

A grid is what an image task (gan, image_ar, diffusion) saves as it trains: samples/step_<step>.png;
the last one is the highest step. Other files there (`mimicry sample` output, diffusion
trajectories, image_ar completions) are not grids of the same kind and are not compared.
Images from shared run folders are data: a PNG's header may claim any size, so the size is checked
before anything is decoded.
"""
from __future__ import annotations

import math
import re
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mimicry.errors import MimicryError
from mimicry.run_reading import Run
from mimicry.run_rows import hparam_labels, make_rows, run_label


GRID_NAME = re.compile(r"step_(\d+)\.png")
MAX_PIXELS = 4096 * 4096  # a training grid is far smaller; anything bigger is not decoded
COLUMNS = 4               # panels per row before wrapping
PANEL_INCHES = 3.6        # width of one panel
TITLE_WIDTH = 38          # characters per title line


@dataclass
class Panel:
    run: Run
    path: Path
    step: int
    pixels: np.ndarray | None = None  # height × width × 3, uint8


def last_grid(run: Run) -> Panel | None:
    """The run's highest-step training grid (the newest file where two name the same step)."""
    found = []
    for path in (run.path / "samples").glob("step_*.png"):
        match = GRID_NAME.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path.stat().st_mtime, path))
    if not found:
        return None
    step, _, path = max(found)
    return Panel(run, path, step)


def read_grid(path: Path, run_dir: Path) -> np.ndarray:
    """The PNG's pixels as RGB, or MimicryError saying why not (outside the run, not a PNG, too big)."""
    from PIL import Image

    try:
        if not path.resolve().is_relative_to(run_dir.resolve()):
            raise MimicryError("links outside the run folder")  # a shared folder shows only itself
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused below, not warned about
            with Image.open(path, formats=["PNG"]) as image:  # reads the header only
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise MimicryError(f"{width}×{height} pixels, over the {MAX_PIXELS / 1e6:.1f} megapixel limit "
                                       "for a sample grid")
                return np.asarray(image.convert("RGB"))
    except MimicryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MimicryError(f"larger than the {MAX_PIXELS / 1e6:.1f} megapixel limit for a sample grid") from None
    except Exception as error:  # PIL raises many kinds on damaged data (OSError, SyntaxError, zlib.error...)
        raise MimicryError(f"not a readable PNG ({type(error).__name__}: {error})") from None


def write_sample_sheet(runs: list[Run], keys: list[str], out: str) -> list[str]:
    """Draw each run's last grid into `out`; returns a note for each run left out."""
    notes, panels = [], []
    for run in runs:
        panel = last_grid(run)
        if panel is None:
            notes.append(f"{run.path}: no sample grid (samples/step_*.png); left out of --samples")
            continue
        try:
            panel.pixels = read_grid(panel.path, run.path)
        except MimicryError as error:
            notes.append(f"{panel.path}: {error}; left out of --samples")
            continue
        panels.append(panel)
    if not panels:
        raise MimicryError(f"--samples: none of the {len(runs)} runs has a sample grid (samples/step_*.png): image runs "
                           "(task=gan, image_ar, diffusion) save one as they train; lm saves text and rl none")
    labels = hparam_labels(make_rows([panel.run for panel in panels], keys, [], None))
    draw(panels, labels, out)
    return notes


def _where(panel: Panel, label: str) -> str:
    """The table's run name (unless the label is already that) and the grid's step."""
    name = run_label(panel.run)
    return f"step {panel.step}" if label == name else f"{name} · step {panel.step}"


def draw(panels: list[Panel], labels: list[str], out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(panels), COLUMNS)
    rows = math.ceil(len(panels) / columns)
    titles = [f"{textwrap.fill(label, TITLE_WIDTH)}\n{_where(panel, label)}" for panel, label in zip(panels, labels)]
    aspect = max(panel.pixels.shape[0] / panel.pixels.shape[1] for panel in panels)  # height / width
    title_inches = 0.2 * max(title.count("\n") + 1 for title in titles) + 0.15
    fig, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                             figsize=(PANEL_INCHES * columns, rows * (PANEL_INCHES * aspect + title_inches)))
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel, title in zip(axes.flat, panels, titles):
        ax.imshow(panel.pixels, interpolation="nearest")  # small grids, enlarged: keep pixels sharp
        ax.set_title(title, fontsize=9)
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=150)
    except (OSError, ValueError) as error:  # a folder we cannot write, or a suffix matplotlib cannot
        raise MimicryError(f"--samples {out}: {getattr(error, 'strerror', None) or error}") from error
    finally:
        plt.close(fig)
