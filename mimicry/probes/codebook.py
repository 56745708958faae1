"""A VQ-VAE's codebook (task=autoencoder model=vqvae): what each code stands for and how often it is used.

Every training image is encoded; each code position covers a patch of the image (2^downsamples
pixels a side). A code's *mean patch* is the average of the patches it was chosen for: a code
that means "red edge, top left" shows a red edge at the top left. Codes are shown in order of use,
most used first; a code never chosen is shown grey (dead). The perplexity exp(H) of the use is
the number of codes the encoder effectively spreads over (at most the codebook size).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid, save_image

from mimicry.data.images import to_unit
from mimicry.errors import MimicryError
from mimicry.probes.common import ProbedRun, save_json, whole
from mimicry.tasks.autoencoder import code_statistics

SUMMARY = "a VQ-VAE's codes (task=autoencoder model=vqvae): each code's mean patch and how often it is used: PNG, JSON"
OPTIONS = {"images": 5000, "columns": 16}


@torch.no_grad()
def mean_patches(codes: Tensor, images: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """(counts (K,), mean patches (K, C, p, p)) from codes (N, h, w) of [0, 1] images (N, C, S, S)."""
    n, h, w = codes.shape
    p = images.shape[-1] // w
    patches = F.unfold(images, kernel_size=p, stride=p)        # (N, C·p·p, h·w), row-major like the codes
    patches = patches.transpose(1, 2).reshape(n * h * w, -1)   # one row per code position
    flat = codes.reshape(-1)
    counts = torch.bincount(flat, minlength=codebook_size)
    sums = torch.zeros(codebook_size, patches.shape[1]).index_add_(0, flat, patches)
    means = sums / counts.clamp(min=1)[:, None]
    means[counts == 0] = 0.5  # dead codes: grey
    return counts, means.view(codebook_size, images.shape[1], p, p)


def codebook_report(run: ProbedRun, images: int = 5000) -> tuple[dict[str, Any], Tensor]:
    """({counts, usage, perplexity, dead, ...}, mean patches sorted by use) for a vqvae run."""
    task = run.task
    model = getattr(task, "model", None)
    if getattr(model, "kind", None) != "vq":
        raise MimicryError(f"the codebook probe reads a VQ-VAE (task=autoencoder model=vqvae); this run's model is "
                           f"{type(model).__name__}")
    task.eval()
    data = run.datamodule()
    train = to_unit(data.train_images(), data.value_range)[:images]
    codes = torch.cat([task.encode(chunk * 2 - 1).cpu() for chunk in train.split(500)])
    counts, patches = mean_patches(codes, train, model.codebook_size)
    usage, perplexity = code_statistics(counts)
    order = counts.argsort(descending=True, stable=True)
    result = {"codebook_size": model.codebook_size, "images": len(train), "positions": int(counts.sum()),
              "usage": usage, "perplexity": perplexity, "dead": int((counts == 0).sum()),
              "order": order.tolist(), "counts": counts[order].tolist()}
    return result, patches[order]


def main(run: ProbedRun, options: dict[str, Any]) -> int:
    result, patches = codebook_report(run, whole(options, "images"))
    columns = whole(options, "columns")
    # each patch blown up so a 4×4 patch is visible; the pad separates codes
    scale = max(1, 32 // patches.shape[-1])
    shown = F.interpolate(patches, scale_factor=scale, mode="nearest")
    if shown.shape[1] == 1:
        shown = shown.expand(-1, 3, -1, -1)
    grid = make_grid(shown.clamp(0, 1), nrow=columns, padding=2, pad_value=0.3)
    out = run.out_dir
    save_image(grid, out / "codebook.png")
    save_json(out / "codebook.json", result)
    writer = run.writer()
    writer.add_image("probes/codebook_mean_patches", grid, 0)
    for rank, count in enumerate(result["counts"]):  # x = rank of the code by use
        writer.add_scalar("probes/codebook_use_by_rank", count / max(1, result["positions"]), rank)
    writer.close()
    top = ", ".join(f"{code}: {count}" for code, count in zip(result["order"][:8], result["counts"][:8]))
    print(f"{result['codebook_size']} codes over {result['positions']} positions of {result['images']} training images: "
          f"{result['usage']:.1%} used, {result['dead']} dead, perplexity {result['perplexity']:.1f}")
    print(f"most used (code: count): {top}")
    print(f"wrote {out / 'codebook.png'} (mean patch per code, most used first; grey: dead) and {out / 'codebook.json'}")
    return 0
