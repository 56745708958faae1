"""``mimicry compare --plot FILE``: the chosen metrics' curves, one panel per metric, one line per
run or group. A group is drawn as its mean with a shaded ±1 standard deviation band, on a
common x grid over the range where all of its runs have points."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from mimicry.errors import MimicryError
from mimicry.run_reading import Run
from mimicry.run_rows import Row, hparam_labels

GRID_POINTS = 300  # a group's curves are interpolated onto this many x values at most
LEGEND_MAX = 24    # more lines than this: the legend would hide the plot
LABEL_WIDTH = 45   # a legend entry wrapped at this many characters per line


def run_xy(run: Run, metric: str, x: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The metric's points against the chosen x: step, wall seconds since the run's first event,
    or another scalar of the run (its value at the metric's steps, interpolated between its own steps)."""
    curve = run.curves.get(metric)
    if curve is None or not len(curve.steps):
        return None
    if x == "step":
        return curve.steps.astype(float), curve.values
    if x == "wall":
        return curve.wall - (run.first_event_wall or curve.wall[0]), curve.values
    axis = run.curves.get(x)
    if axis is None or not len(axis.steps):
        return None
    inside = (curve.steps >= axis.steps[0]) & (curve.steps <= axis.steps[-1])  # no extrapolation
    return np.interp(curve.steps[inside], axis.steps, axis.values), curve.values[inside]


def group_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and sample std of several curves on a common grid: the x values they have, within the
    range all of them cover. None when they share no range (then each is drawn on its own)."""
    curves = [(xs[np.argsort(xs, kind="stable")], ys[np.argsort(xs, kind="stable")]) for xs, ys in curves]
    low = max(xs[0] for xs, _ in curves)
    high = min(xs[-1] for xs, _ in curves)
    if high <= low:
        return None
    grid = np.unique(np.concatenate([xs[(xs >= low) & (xs <= high)] for xs, _ in curves]))
    if len(grid) > GRID_POINTS:
        grid = np.linspace(low, high, GRID_POINTS)
    stacked = np.stack([np.interp(grid, xs, ys) for xs, ys in curves])
    return grid, stacked.mean(axis=0), stacked.std(axis=0, ddof=1)


def legend_labels(rows: list[Row]) -> list[str]:
    """hparam_labels wrapped, so the legend stays narrow."""
    return [textwrap.fill(label, LABEL_WIDTH) for label in hparam_labels(rows)]


def plot_rows(rows: list[Row], metrics: list[str], x: str, out: str, grouped: bool) -> list[str]:
    """Draw and save; returns the paths of runs left out because they lack the x scalar."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skipped: list[str] = []
    fig, axes = plt.subplots(len(metrics), 1, figsize=(12, 3.8 * len(metrics)), squeeze=False, layout="constrained")
    colors = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20" if len(rows) <= 20 else "viridis")
    for ax, metric in zip(axes[:, 0], metrics):
        drawn: list[tuple[int, Row, list]] = []  # (colour index, row, its runs' (x, y) curves)
        for i, row in enumerate(rows):
            curves = []
            for run in row.runs:
                xy = run_xy(run, metric, x)
                if xy is None and x not in ("step", "wall") and metric in run.curves:
                    skipped.append(str(run.path))
                if xy is not None and len(xy[0]):
                    curves.append(xy)
            if curves:
                drawn.append((i, row, curves))
        labels = legend_labels([row for _, row, _ in drawn])
        for (i, row, curves), label in zip(drawn, labels):
            color = colors(i if len(rows) <= 20 else i / max(1, len(rows) - 1))
            # Failed and diverged runs dashed, so a short curve reads as "stopped", not "fast".
            style = "-" if all(run.status in ("completed", "running") for run in row.runs) else "--"
            if grouped:
                label = f"{label} (n={len(curves)})"
            band = group_band(curves) if grouped and len(curves) > 1 else None
            if band is not None:
                grid, mean, std = band
                ax.plot(grid, mean, style, color=color, label=label, linewidth=1.5)
                ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
            else:
                for xs, ys in curves:
                    ax.plot(xs, ys, style, color=color, linewidth=1.2, label=label)
                    label = None  # one legend entry per row
        ax.set_title(metric)
        ax.set_ylabel(metric)
        ax.set_xlabel({"step": "training step", "wall": "wall-clock seconds since the run's first event"}.get(x, x))
        ax.grid(alpha=0.3)
        if len(drawn) <= LEGEND_MAX and drawn:
            # Beside the axes, not on them: hyperparameter labels are long and would hide curves.
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        elif drawn:
            ax.set_title(f"{metric} ({len(drawn)} lines; too many for a legend: try --group-by)")
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except (OSError, ValueError) as error:  # a folder we cannot write, or a suffix matplotlib cannot
        raise MimicryError(f"--plot {out}: {getattr(error, 'strerror', None) or error}") from error
    finally:
        plt.close(fig)
    return list(dict.fromkeys(skipped))
