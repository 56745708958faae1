"""A trained autoencoder run as the frozen first stage of another run (Taming's and Stable
Diffusion's two stages): ``task=image_ar tokenizer=vq tokenizer.from_run=AE_RUN`` models its VQ
codes, ``task=diffusion latent.from_run=AE_RUN`` denoises its KL latents.

The AE run is read as data, like every shared file (mimicry/checkpoints.py): its checkpoint with
``weights_only=True``, its recipe composed with the *installed* configs, its model built from our
own YAML (only the autoencoder models), its weights loaded as tensors by name. What the second stage
needs of it travels inside the second stage's own run: the AE's recipe and data spec as plain values
(the task's ``derived_arguments``) and its weights in the state dict, frozen (no optimizer sees
them). So ``mimicry sample``/``eval`` of the second run, or a copy of its folder, never read the AE
run again; only a new training run reads it (a resumed one builds it from its own checkpoint).
"""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from mimicry.checkpoints import checkpoint_task_name, find_checkpoint, read_checkpoint, read_derived
from mimicry.errors import MimicryError
from mimicry.recipe import compose_recipe

AUTOENCODER_TASK = "mimicry.tasks.autoencoder.Autoencoder"
AUTOENCODER_MODELS = {"vq": ("mimicry.models.vqvae.VQVAE", "model=vqvae"),
                      "kl": ("mimicry.models.kl_autoencoder.KLAutoencoder", "model=kl_autoencoder")}


class FrozenAutoencoder(nn.Module):
    """An autoencoder's ``encode`` and ``decode`` (images in [-1, 1]), its weights frozen and always
    in eval mode (a VQ codebook would otherwise move with every batch)."""

    def __init__(self, model: nn.Module, channels: int, image_size: int) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.kind, self.channels, self.image_size = model.kind, channels, image_size

    def train(self, mode: bool = True) -> "FrozenAutoencoder":
        return super().train(False)  # Lightning puts the whole task in train mode; the first stage stays as trained

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.model.latent_shape)

    @property
    def codebook_size(self) -> int:
        return int(self.model.codebook_size)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] → code indices (B, h, w) (vq) or latent means (B, c, h, w) (kl)."""
        return self.model.encode(images)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Codes or latents → images in [-1, 1]."""
        return self.model.decode(latents).clamp(-1, 1)


def first_stage_for(from_run: str | None, saved: dict | None, kind: str, data_spec: dict,
                    option: str) -> tuple[dict[str, Any], FrozenAutoencoder]:
    """(what the run records of its first stage, the frozen autoencoder). ``saved``: that record read
    back from the second stage's checkpoint (its weights follow in the state dict); else the AE run
    ``from_run`` is read, checked against ``kind`` ("vq" | "kl") and the data, and its weights loaded."""
    if saved is not None:
        return saved, build_first_stage(saved, kind, data_spec, option)
    if not from_run:
        model = AUTOENCODER_MODELS[kind][1]
        raise MimicryError(f"{option}=AE_RUN is missing: give the run folder of a trained autoencoder "
                           f"(mimicry train task=autoencoder {model})")
    try:
        path = find_checkpoint(from_run)
    except MimicryError as error:
        raise MimicryError(f"{option}={from_run}: {error}") from None
    checkpoint = read_checkpoint(path)
    name = checkpoint_task_name(checkpoint)
    if name != AUTOENCODER_TASK:
        raise MimicryError(f"{option}={from_run} is not an autoencoder run (it holds {name.rsplit('.', 1)[-1]}): give "
                           f"a run of mimicry train task=autoencoder {AUTOENCODER_MODELS[kind][1]}")
    record = {"recipe": checkpoint["mimicry"].get("recipe"), "data_spec": read_derived(checkpoint, str(path))["data_spec"]}
    frozen = build_first_stage(record, kind, data_spec, option, source=f"{option}={from_run}")
    weights = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        frozen.model.load_state_dict(weights)
    except RuntimeError as error:
        raise MimicryError(f"{option}={from_run}: its weights don't fit the model its recipe builds "
                           f"({str(error).splitlines()[0][:120]}); it was altered or written by another version") from None
    return record, frozen


def build_first_stage(record: dict, kind: str, data_spec: dict, option: str,
                      source: str = "the first stage this run recorded") -> FrozenAutoencoder:
    """The autoencoder a record describes, built from the installed configs (weights not loaded)."""
    if not isinstance(record, dict) or not isinstance(record.get("data_spec"), dict):
        raise MimicryError(f"{source}: no autoencoder recipe and data spec; it was altered or written by another version")
    cfg = compose_recipe(record.get("recipe"), source)  # refuses what a shared file may not say
    if cfg.task.get("_target_") != AUTOENCODER_TASK:
        raise MimicryError(f"{source}: its recipe is not an autoencoder's (task._target_={cfg.task.get('_target_')})")
    target, choice = AUTOENCODER_MODELS[kind]
    if cfg.model.get("_target_") != target:
        other = next((c for t, c in AUTOENCODER_MODELS.values() if t == cfg.model.get("_target_")), "another model")
        raise MimicryError(f"{option}: the autoencoder was trained with {other}, but this needs {choice} "
                           f"({'discrete codes' if kind == 'vq' else 'continuous latents'}); train one with "
                           f"mimicry train task=autoencoder {choice}")
    spec = record["data_spec"]
    theirs = (int(spec.get("channels", 0)), int(spec.get("image_size", 0)))
    ours = (int(data_spec["channels"]), int(data_spec["image_size"]))
    if theirs != ours:
        raise MimicryError(f"{option}: the autoencoder was trained on {theirs[0]}-channel {theirs[1]}×{theirs[1]} images "
                           f"({spec.get('dataset', '?')}) but this run's data are {ours[0]}-channel {ours[1]}×{ours[1]} "
                           f"({data_spec.get('dataset', '?')}); train the autoencoder on the same data "
                           f"(or set data.image_size to match)")
    model = instantiate(cfg.model, channels=ours[0], image_size=ours[1])
    return FrozenAutoencoder(model, *ours)
