"""Sharpness: how much the training loss rises when the weights are disturbed a little.

Each weight w becomes w·(1 + ε·z) with every |z| ≤ 1: no weight moves by more than ε of itself,
large and small weights alike. Random directions: z = ±1 at random (every weight moves by exactly
ε of itself; ``draws`` per ε: mean, spread and largest rise). The worst direction: ``ascent_steps``
steps of projected gradient ascent in that box (z ← clip(z + sign(∂loss/∂z), -1, 1), from z = 0,
so the first step is the worst corner to first order). ε = 0 changes nothing.

A lookup table (model fitted by counting) has no weights: its probabilities for the contexts the
probe batches use are disturbed the same relative way, p·(1 + ε·z), and renormalised per context
(``model.as_weights``). So a table's loss can move by at most about log((1+ε)/(1-ε)) per token,
whatever it memorised, while a net's disturbances compound through its layers.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from mimicry.errors import MimicryError
from mimicry.output_paths import ensure_writable_dir
from mimicry.probes.common import ProbedRun, batches_of, save_json, whole
from mimicry.tasks.base import ImitationTask

SUMMARY = "training loss under relative weight perturbations of size eps (random and worst direction): table + PNG"
OPTIONS = {"eps": [0.0, 0.001, 0.003, 0.01, 0.03, 0.1], "draws": 5, "ascent_steps": 5, "batches": 4, "seed": 0}


@contextmanager
def perturbable(task: ImitationTask, batches: list[Any]) -> Iterator[list[torch.nn.Parameter]]:
    """The tensors a perturbation moves: a net's parameters, or a counted table's probabilities
    (for the contexts these batches use) swapped in for the table while the probe runs."""
    table = task.model
    if not getattr(table, "fitted_by_counting", False):
        yield [p for p in table.parameters() if p.requires_grad]
        return
    inputs: list[torch.Tensor] = []
    hook = table.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    with torch.no_grad():
        for batch in batches:
            task.loss(batch)
    hook.remove()
    task.model = table.as_weights(inputs)
    try:
        yield list(task.model.parameters())
    finally:
        task.model = table


def mean_loss(task: ImitationTask, batches: list[Any]) -> torch.Tensor:
    return torch.stack([task.loss(batch) for batch in batches]).mean()


def sharpness(task: ImitationTask, batches: list[Any], eps: list[float], draws: int = 5, ascent_steps: int = 5,
              seed: int = 0) -> dict[str, Any]:
    """Δ training loss (nats) on ``batches`` for each relative perturbation size in ``eps``."""
    was_training = task.training
    task.eval()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with perturbable(task, batches) as weights:
        start = [w.detach().clone() for w in weights]

        def loss_at(epsilon: float, z: list[torch.Tensor], grad: bool = False) -> torch.Tensor:
            with torch.set_grad_enabled(grad), torch.no_grad():
                for w, w0, zi in zip(weights, start, z):
                    w.copy_(w0 * (1 + epsilon * zi))
            with torch.set_grad_enabled(grad):
                return mean_loss(task, batches)

        try:
            with torch.no_grad():
                base = mean_loss(task, batches).item()
            for epsilon in eps:
                rises = []
                for _ in range(draws):  # every weight moved by exactly ε of itself, up or down at random
                    z = [torch.randint(0, 2, w.shape, generator=generator).to(w) * 2 - 1 for w in weights]
                    rises.append(loss_at(epsilon, z).item() - base)
                worst = max(rises) if rises else 0.0
                z = [torch.zeros_like(w) for w in weights]
                for _ in range(ascent_steps if epsilon > 0 else 0):
                    loss = loss_at(epsilon, z, grad=True)
                    worst = max(worst, loss.item() - base)
                    grads = torch.autograd.grad(loss, weights, allow_unused=True)
                    # d loss / d z = d loss / d w · ε·w0: step to the box's corner that raises the loss, then clip
                    z = [zi if g is None else (zi + (g * w0).sign()).clamp(-1, 1) for zi, g, w0 in zip(z, grads, start)]
                if ascent_steps and epsilon > 0:
                    worst = max(worst, loss_at(epsilon, z).item() - base)
                mean = sum(rises) / len(rises) if rises else 0.0
                spread = (sum((r - mean) ** 2 for r in rises) / max(1, len(rises) - 1)) ** 0.5
                rows.append({"eps": epsilon, "random_mean": mean, "random_std": spread,
                             "random_max": max(rises) if rises else 0.0, "worst": worst})
        finally:
            with torch.no_grad():
                for w, w0 in zip(weights, start):
                    w.copy_(w0)
    task.train(was_training)
    return {"base_loss": base, "rows": rows, "draws": draws, "ascent_steps": ascent_steps, "seed": seed,
            "weights": sum(w.numel() for w in start), "batches": len(batches)}


def plot(results: dict[str, dict], path: Path, title: str = "sharpness") -> Path:
    """Δ loss against ε (log x, symlog y) for one or more results {label: sharpness(...)}, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (label, result), color in zip(results.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rows = [r for r in result["rows"] if r["eps"] > 0]
        eps = [r["eps"] for r in rows]
        ax.plot(eps, [r["random_mean"] for r in rows], "o-", color=color, label=f"{label}: random (mean)")
        ax.fill_between(eps, [r["random_mean"] - r["random_std"] for r in rows],
                        [r["random_mean"] + r["random_std"] for r in rows], color=color, alpha=0.15)
        ax.plot(eps, [r["worst"] for r in rows], "s--", color=color, label=f"{label}: worst direction")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("relative perturbation ε  (w → w·(1 + ε·z), |z| ≤ 1)")
    ax.set_ylabel("Δ training loss (nats per token)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table_text(result: dict) -> str:
    lines = [f"training loss {result['base_loss']:.4f} nats on {result['batches']} batches; "
             f"{result['draws']} random draws and {result['ascent_steps']} ascent steps per eps",
             f"{'eps':>8} {'Δ random mean':>14} {'± std':>9} {'Δ random max':>13} {'Δ worst':>10}"]
    for r in result["rows"]:
        lines.append(f"{r['eps']:>8g} {r['random_mean']:>14.5f} {r['random_std']:>9.5f} {r['random_max']:>13.5f} "
                     f"{r['worst']:>10.5f}")
    return "\n".join(lines)


def check_eps(eps: Any) -> list[float]:
    values = eps if isinstance(eps, list) else [eps]
    if not values or not all(isinstance(e, (int, float)) and not isinstance(e, bool) and 0 <= e < 1 for e in values):
        raise MimicryError(f"eps={eps!r}: give relative sizes in [0, 1), e.g. eps=[0,0.001,0.01,0.1]")
    return [float(e) for e in values]


def write(run_dir: Path, model_name: str, result: dict, step: int = 0) -> Path:
    """JSON, PNG and TensorBoard (the picture + the table as text) in a run directory; returns the PNG."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    out = ensure_writable_dir(run_dir / "probes", "", fix="probes write into the run directory: copy it somewhere writable")
    save_json(out / "sharpness.json", result)
    png = plot({model_name: result}, out / "sharpness.png", f"sharpness: {run_dir.name[:60]}")
    writer = SummaryWriter(str(run_dir / "tb"))
    writer.add_image("probes/sharpness", np.asarray(Image.open(png).convert("RGB")), step, dataformats="HWC")
    writer.add_text("probes/sharpness", "\n".join("    " + line for line in table_text(result).splitlines()), step)
    writer.close()
    return png


def main(run: ProbedRun, options: dict[str, Any]) -> int:
    if not run.task.imitates_in_one_comparison:  # e.g. a GAN: two networks, two imitations
        run.task.imitation(None)  # raises the task's own one-line reason
    eps = check_eps(options["eps"])
    count = whole(options, "batches")
    batches = batches_of(run.datamodule().train_dataloader(), count)
    result = sharpness(run.task, batches, eps, whole(options, "draws", 0), whole(options, "ascent_steps", 0),
                       int(options["seed"]))
    write(run.run_dir, type(run.task.model).__name__, result)
    print(table_text(result))
    print(f"wrote {run.out_dir / 'sharpness.json'} and {run.out_dir / 'sharpness.png'}")
    return 0
