"""Layer by layer: does the representation after each layer put examples that share a label close
together? For each layer, every query (a held-out example) finds its ``k`` nearest training
examples (cosine similarity of that layer's vectors); agreement is the share of them that carry
the query's label. Labels: the next token for ``lm`` (a GPT: after the embedding and after each
block), the class for a classifier run (the raw pixels as a baseline, after each convolutional
block, averaged over a 4×4 grid, then the logits) and for a GAN run (its discriminator, which never
saw a label unless conditional: the pixels, then after each LeakyReLU of its feature stack).
``chance`` is what neighbours drawn at random would score.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mimicry.data.images import to_signed
from mimicry.errors import MimicryError
from mimicry.models.cnn_classifier import CNNClassifier
from mimicry.models.gpt import GPT
from mimicry.probes.common import ProbedRun, held_out, save_json, whole

SUMMARY = "k-NN label agreement (next token for lm, class for images) of the representation after each layer: PNG"
OPTIONS = {"k": 10, "bank": 4000, "queries": 1000, "seed": 0}


@torch.no_grad()
def gpt_layers(model: GPT, idx: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, vectors (B, T, n_embd)) after the embedding and after each block."""
    x = model.embed(idx)
    found = [("embedding", x)]
    for i, block in enumerate(model.blocks):
        x, _ = block(x)
        found.append((f"block {i + 1}", x))
    return found


@torch.no_grad()
def classifier_layers(model: CNNClassifier, images: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, vectors) of the raw pixels (the baseline), after each convolutional block (averaged over a
    4×4 grid of the image: what is where survives, the size stays small), and of the logits."""
    found, x = [("pixels", images.flatten(1))], images
    blocks = [m for m in model.body if isinstance(m, nn.Sequential)]
    for i, block in enumerate(blocks):
        x = block(x)
        found.append((f"conv {i + 1}", F.adaptive_avg_pool2d(x, 4).flatten(1)))
    found.append(("logits", model.head(x.mean(dim=(2, 3)))))
    return found


@torch.no_grad()
def discriminator_layers(discriminator: nn.Module, images: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, vectors) of the raw pixels and after each LeakyReLU of a GAN discriminator's ``features``
    stack (DCGAN: conv maps averaged over a 4×4 grid, as for the classifier; MLP: the hidden vectors)."""
    found, x = [("pixels", images.flatten(1))], images
    for module in discriminator.features:
        x = module(x)
        if isinstance(module, nn.LeakyReLU):
            found.append((f"layer {len(found)}", F.adaptive_avg_pool2d(x, 4).flatten(1) if x.dim() == 4 else x.clone()))
    return found


def text_examples(run: ProbedRun, count: int, loader: Any, generator: torch.Generator) -> tuple[list, torch.Tensor]:
    """Up to ``count`` positions of windows from ``loader``: per layer (N, D) vectors, and next tokens (N,)."""
    model = run.task.model
    per_layer: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []
    found = 0
    for tokens in loader:
        idx, following = tokens[:, :-1], tokens[:, 1:]
        keep = torch.rand(following.shape, generator=generator) < 0.25  # a sample of the positions
        for name, vectors in gpt_layers(model, idx):
            per_layer.setdefault(name, []).append(vectors[keep])
        labels.append(following[keep])
        found += int(keep.sum())
        if found >= count:
            break
    layers = [(name, torch.cat(parts)[:count]) for name, parts in per_layer.items()]
    return layers, torch.cat(labels)[:count]


def image_examples(layers_of: Callable[[torch.Tensor], list[tuple[str, torch.Tensor]]], images: torch.Tensor,
                   labels: torch.Tensor, count: int, generator: torch.Generator) -> tuple[list, torch.Tensor]:
    pick = torch.randperm(len(images), generator=generator)[:count]
    chosen = images[pick]
    per_layer: dict[str, list[torch.Tensor]] = {}
    for chunk in chosen.split(500):
        for name, vectors in layers_of(chunk):
            per_layer.setdefault(name, []).append(vectors)
    return [(name, torch.cat(parts)) for name, parts in per_layer.items()], labels[pick]


def knn_agreement(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor,
                  k: int) -> float:
    """Mean share of each query's k nearest bank vectors (cosine) whose label is the query's."""
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    agree = []
    for q, y in zip(queries.split(512), query_labels.split(512)):
        nearest = (q @ bank.T).topk(min(k, len(bank)), dim=1).indices
        agree.append((bank_labels[nearest] == y[:, None]).float().mean(dim=1))
    return torch.cat(agree).mean().item()


def chance(bank_labels: torch.Tensor, query_labels: torch.Tensor) -> float:
    """Agreement of random neighbours: the chance that a bank label equals a query label."""
    size = int(max(bank_labels.max(), query_labels.max())) + 1
    p_bank = torch.bincount(bank_labels, minlength=size).float() / len(bank_labels)
    p_query = torch.bincount(query_labels, minlength=size).float() / len(query_labels)
    return float((p_bank * p_query).sum())


def layer_agreement(run: ProbedRun, k: int = 10, bank: int = 4000, queries: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"layers": [names], "agreement": [one value per layer], "chance": float, ...}."""
    model, generator = getattr(run.task, "model", None), torch.Generator().manual_seed(seed)
    run.task.eval()
    if isinstance(model, GPT):
        data = run.datamodule()
        bank_layers, bank_labels = text_examples(run, bank, data.train_dataloader(), generator)
        query_layers, query_labels = text_examples(run, queries, held_out(data), generator)
        label = "next token"
    elif isinstance(model, CNNClassifier) or hasattr(getattr(run.task, "discriminator", None), "features"):
        layers_of = partial(classifier_layers, model) if isinstance(model, CNNClassifier) else \
            partial(discriminator_layers, run.task.discriminator)
        data = run.datamodule()
        if data.spec()["num_classes"] < 2:
            raise MimicryError(f"the layer probe needs class labels to agree on; {data.name} has none")
        bank_layers, bank_labels = image_examples(layers_of, to_signed(data.train_images(), data.value_range),
                                                  data.train_labels(), bank, generator)
        query_layers, query_labels = image_examples(layers_of, to_signed(data.val_images(), data.value_range),
                                                    data.val_labels(), queries, generator)
        label = "class"
    else:
        raise MimicryError(f"the layer probe reads a GPT (task=lm), a CNN classifier (task=classifier) or a GAN's "
                           f"discriminator (task=gan); this run's model is {type(model).__name__}"
                           + (" (a lookup table has no layers)" if getattr(model, "fitted_by_counting", False) else ""))
    values = [knn_agreement(b, bank_labels, q, query_labels, k) for (_, b), (_, q) in zip(bank_layers, query_layers)]
    return {"layers": [name for name, _ in bank_layers], "agreement": values, "label": label, "k": k,
            "chance": chance(bank_labels, query_labels), "bank": len(bank_labels), "queries": len(query_labels)}


def plot(result: dict[str, Any], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(range(len(result["layers"])), result["agreement"], "o-", label=f"{result['k']}-NN agreement")
    ax.axhline(result["chance"], color="grey", linestyle=":", label="chance (random neighbours)")
    ax.set_xticks(range(len(result["layers"])), result["layers"], rotation=30)
    ax.set_ylabel(f"share of neighbours with the same {result['label']}")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(run: ProbedRun, options: dict[str, Any]) -> int:
    result = layer_agreement(run, whole(options, "k"), whole(options, "bank"), whole(options, "queries"),
                             int(options["seed"]))
    out = run.out_dir
    save_json(out / "layers.json", result)
    plot(result, out / "layers.png", f"layer by layer: {run.run_dir.name[:60]}")
    writer = run.writer()
    for step, value in enumerate(result["agreement"]):  # x = layer index
        writer.add_scalar("probes/layer_knn_agreement", value, step)
    writer.close()
    print(f"{'layer':<12} {result['k']}-NN agreement ({result['label']}; chance {result['chance']:.3f})")
    for name, value in zip(result["layers"], result["agreement"]):
        print(f"{name:<12} {value:.3f}")
    print(f"wrote {out / 'layers.json'} and {out / 'layers.png'}")
    return 0
