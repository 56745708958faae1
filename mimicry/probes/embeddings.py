"""Embeddings for TensorBoard's Projector tab (``SummaryWriter.add_embedding``), by kind of run:

- ``lm``: one vector per token, labelled with the token. A GPT's token embeddings; a lookup
  table's "embedding" of a token is its row of next-token probabilities (what it knows of it).
- image runs: the dataset's feature net (mimicry/metrics/feature_net.py) on held-out images,
  plus the run's own classifier or GAN discriminator features, coloured by class, with sprites.
- ``rl`` runs: the states of a few greedy episodes, embedded by the policy's last hidden layer,
  coloured by the critic's value (PPO), the best Q-value (DQN), and the return still to come.

Open with ``tensorboard --logdir RUN_DIR/tb`` → Projector.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mimicry.data.images import to_signed, to_unit
from mimicry.errors import MimicryError
from mimicry.probes.common import ProbedRun, whole

SUMMARY = "TensorBoard projector files: token embeddings (lm), image features by class, RL states by value"
OPTIONS = {"n": 500, "episodes": 5, "seed": 0}


def token_name(text: str) -> str:
    """Whitespace made visible in the projector's labels."""
    return {"\n": "\\n", " ": "␣", "\t": "\\t", "": "∅"}.get(text, text)


def token_embeddings(run: ProbedRun) -> dict[str, tuple[torch.Tensor, list, Any]]:
    task = run.task
    vocab = task.data_spec["vocab_size"]
    labels = [token_name(task.tokenizer.decode(torch.tensor([i]))) for i in range(vocab)]
    model = task.model
    if getattr(model, "fitted_by_counting", False):  # rows after one token of context: context·orders + 1
        rows = torch.arange(vocab) * model.orders + min(1, model.orders - 1)
        return {"token_next_token_probabilities": (model.row_probabilities(rows).float(), labels, None)}
    return {"token_embedding": (model.token_embedding.weight.detach(), labels, None)}


@torch.no_grad()
def image_features(run: ProbedRun, n: int, seed: int) -> dict[str, tuple[torch.Tensor, list, Any]]:
    from mimicry.metrics.feature_net import load_feature_net

    data = run.datamodule()
    images, labels = data.val_images(), data.val_labels()
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    images, labels = images[pick], labels[pick]
    sprites = to_unit(images, data.value_range).clamp(0, 1)
    names = [str(int(y)) for y in labels]
    found = {}
    net = load_feature_net(data)
    if net is not None:
        found["feature_net"] = (net.features(to_signed(images, data.value_range)), names, sprites)
    task = run.task
    model = getattr(task, "model", None)
    if model is not None and hasattr(model, "features") and task.data_spec.get("value_range") == "signed":
        found["classifier_features"] = (model.features(images), names, sprites)  # the run's own classifier
    discriminator = getattr(task, "discriminator", None)
    if discriminator is not None and hasattr(discriminator, "features"):
        found["discriminator_features"] = (discriminator.features(images).flatten(1), names, sprites)
    if not found:
        raise MimicryError(f"{data.name} has no class labels and the run has no feature net of its own: nothing to embed")
    return found


@torch.no_grad()
def state_embeddings(run: ProbedRun, episodes: int, seed: int) -> dict[str, tuple[torch.Tensor, list, Any]]:
    task = run.task
    played = task.play(episodes, seed, greedy=True, record=True)
    states = torch.as_tensor(np.asarray(played["observations"]), dtype=torch.float32).flatten(1)
    model = task.model
    net = next((m for m in model.modules() if isinstance(m, nn.Sequential)), None)  # the actor (or Q) MLP
    if net is None:
        raise MimicryError(f"the embeddings probe reads MLP policies; {type(model).__name__} has none")
    hidden = net[:-1](states)  # the last hidden layer: the policy's own view of the state
    columns = ["return_to_go", "action"]
    rewards, ends = played["rewards"], played["terminations"] | played["truncations"]
    to_go, later = np.zeros(len(rewards)), 0.0
    for i in range(len(rewards) - 1, -1, -1):  # steps are in episode order: sum rewards to each episode's end
        later = rewards[i] + (0.0 if ends[i] else later)
        to_go[i] = later
    values = [f"{g:.1f}" for g in to_go]
    if hasattr(model, "value"):
        critic, columns = model.value(states), ["value"] + columns
    elif hasattr(model, "net"):  # a Q-network: the best action's value
        critic, columns = model(states).max(dim=-1).values, ["value"] + columns
    else:
        critic = None
    rows = [([f"{float(critic[i]):.2f}"] if critic is not None else []) + [values[i], str(int(played["actions"][i]))]
            for i in range(len(states))]
    return {"policy_states": (hidden, rows, columns)}


def main(run: ProbedRun, options: dict[str, Any]) -> int:
    task, kind = run.task, run.task.data_spec.get("kind")
    if kind == "text":
        found = token_embeddings(run)
    elif kind == "image":
        found = image_features(run, whole(options, "n", 2), int(options["seed"]))
    elif hasattr(task, "play"):
        found = state_embeddings(run, whole(options, "episodes"), int(options["seed"]))
    else:
        raise MimicryError(f"no embeddings to show for {type(task).__name__}")
    writer = run.writer()
    for tag, (vectors, metadata, extra) in found.items():
        if isinstance(extra, list):  # several metadata columns (rl)
            writer.add_embedding(vectors, metadata=metadata, metadata_header=extra, tag=tag)
        else:
            writer.add_embedding(vectors, metadata=metadata, label_img=extra, tag=tag)
        print(f"{tag}: {len(vectors)} vectors of {vectors.shape[1]} numbers")
    writer.close()
    print(f"wrote projector files under {run.run_dir / 'tb'}: tensorboard --logdir {run.run_dir / 'tb'} → Projector")
    return 0
