"""Autoencoder: imitate the image itself, through a bottleneck.

The reference is the image; the prediction is the image decoded from its codes (``model=vqvae``:
a grid of codebook indices) or latents (``model=kl_autoencoder``: a small continuous grid); the
loss is their reconstruction error (``loss=mse|l1``) plus the bottleneck's own term (commitment to
the codebook; a small KL to N(0, 1)). What the bottleneck keeps is what later stages generate in:
image_ar over the codes (Taming), diffusion over the latents (Stable Diffusion). They call
``encode`` and ``decode`` (images in the data's [-1, 1] ↔ codes or latents) on a trained run.

TensorBoard: originals above their reconstructions and code images (each code index its own
colour; the KL latents' first three channels as RGB), decoded random codes, ``val/reconstruction``
beside ``val/mean_image_mse`` (the error of predicting the mean training image: what learning
nothing scores), and for VQ the share of codes used and the codebook's perplexity. The image
metrics score reconstructions of real images (rFID), whose floor is those real images themselves;
their ``copy_rate`` is high by design (a reconstruction of a training image is a copy of it).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid, save_image

from mimicry.data.images import to_unit
from mimicry.errors import MimicryError
from mimicry.tasks.image_generation import ImageGeneration, image_grid, upscale

SOURCES = ("codes", "reconstruction")
KMEANS_IMAGES = 512  # training images whose encodings seed the codebook's k-means
BATCH = 500          # images encoded or decoded at once (eval asks for thousands)


def code_statistics(counts: Tensor) -> tuple[float, float]:
    """(share of codes used at least once, perplexity exp(H) of their use) from a histogram."""
    p = counts.float() / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).float().mean()), float(entropy.exp())


class Autoencoder(ImageGeneration):
    data_value_range = "signed"
    draw_options = ("source",)
    sample_options = ImageGeneration.sample_options + draw_options
    charts = {**ImageGeneration.charts,
              "autoencoder": {"reconstruction (train, val, mean image)": [r"^train/reconstruction$",
                                                                          r"^val/reconstruction$",
                                                                          r"^val/mean_image_mse$"],
                              "codebook": [r"codebook_usage$", r"codebook_perplexity$"]}}

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 250,
                 sample_seed: int = 0, num_samples: int = 32, metrics_every_n_epochs: int = 10,
                 metrics_samples: int = 500, feature_net: dict | None = None):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)  # checks the data spec
        if self.loss_fn is None:
            raise MimicryError("task=autoencoder needs a reconstruction loss: loss=mse or loss=l1")
        if num_samples < 1:
            raise MimicryError(f"task.num_samples={num_samples}: the images shown reconstructed; at least 1, e.g. 32")
        self.model = instantiate(model, channels=self.channels, image_size=self.image_size)
        # fixed validation images (set before training), reconstructed in every grid and by `mimicry sample`
        self.register_buffer("shown_images", torch.zeros(num_samples, self.channels, self.image_size, self.image_size))
        self._val_counts: Tensor | None = None

    # ---- what later stages call -----------------------------------------------------------------
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] (B, C, S, S) → codes (B, h, w) long (vq) or latents (B, c, h, w) (kl)."""
        return self.model.encode(images)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Codes or latents → images in [-1, 1] (clamped)."""
        return self.model.decode(latents).clamp(-1, 1)

    def latent_spec(self) -> dict[str, Any]:
        """What a model of the codes or latents needs to know, as plain values."""
        spec = {"kind": self.model.kind, "latent_shape": list(self.model.latent_shape)}
        if self.model.kind == "vq":
            spec["codebook_size"] = self.model.codebook_size
        return spec

    # ---- data -------------------------------------------------------------------------------------
    def setup_data(self, datamodule) -> None:
        train, val = datamodule.train_images(), datamodule.val_images()
        shown = torch.cat([val, train])[: len(self.shown_images)]
        self.shown_images.copy_(shown.repeat(math.ceil(len(self.shown_images) / len(shown)), 1, 1, 1)[: len(self.shown_images)])
        if hasattr(self.model, "init_codebook"):  # k-means of the untrained encoder's outputs (a resumed run's checkpoint then replaces it)
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:KMEANS_IMAGES]
            self.model.init_codebook(train[pick])
        mean = train.mean(0, keepdim=True)  # what learning nothing predicts
        self._helpers["mean_image_mse"] = float(((val if len(val) else train) - mean).pow(2).mean())

    # ---- the imitation ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        reference = images                            # the image itself
        prediction, terms, codes = self.model(images)  # decoded from its codes or latents
        loss = self.imitate(prediction, reference, name="reconstruction") + sum(terms.values())
        self.log_metric("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log_metric(f"train/{name}", value)
        if self.model.kind == "vq" and self.is_logging_step():
            usage, perplexity = code_statistics(torch.bincount(codes.flatten(), minlength=self.model.codebook_size))
            self.log_metric("train/codebook_usage", usage)
            self.log_metric("train/codebook_perplexity", perplexity)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, _ = batch
        prediction, terms, codes = self.model(images)
        loss = self.imitate(prediction, images, stage="val", name="reconstruction") + sum(terms.values())
        self.log_metric("val/loss", loss)
        for name, value in terms.items():
            self.log_metric(f"val/{name}", value)
        if self.model.kind == "vq":
            counts = torch.bincount(codes.flatten(), minlength=self.model.codebook_size)
            self._val_counts = counts if self._val_counts is None else self._val_counts + counts
        else:  # the scale latent diffusion will see
            self.log_metric("val/latent_std", codes.std())

    def on_validation_epoch_end(self) -> None:
        if "mean_image_mse" in self._helpers:
            self.log("val/mean_image_mse", self._helpers["mean_image_mse"])
        if self._val_counts is not None:
            usage, perplexity = code_statistics(self._val_counts)
            self.log("val/codebook_usage", usage)
            self.log("val/codebook_perplexity", perplexity)
            self._val_counts = None
        super().on_validation_epoch_end()  # the shared image metrics (of reconstructions), every N epochs

    # ---- images -----------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """[0, 1] images → their reconstructions in [0, 1], through the codes or latents."""
        out = [to_unit(self.decode(self.encode(chunk.to(self.device) * 2 - 1)), "signed")
               for chunk in images.split(BATCH)]
        return torch.cat(out)

    def check_source(self, source: str) -> str:
        if source not in SOURCES:
            raise MimicryError(f"source={source}: choose codes (decode random codes) or reconstruction "
                               f"(reconstruct the run's {len(self.shown_images)} stored images)")
        return source

    @torch.no_grad()
    def draw(self, n: int, seed: int, labels: Tensor | None = None, source: str = "codes", **options: Any) -> Tensor:
        """n images in [0, 1]: random codes decoded (each position drawn from the codes' usage; kl: N(0, 1)),
        or ``source=reconstruction``: the stored images reconstructed."""
        if self.check_source(source) == "reconstruction":
            if n > len(self.shown_images):
                raise MimicryError(f"n={n}: the run stores {len(self.shown_images)} images to reconstruct; ask for "
                                   f"n≤{len(self.shown_images)} (`mimicry eval` reconstructs as many as you like)")
            return self.reconstruct(to_unit(self.shown_images[:n], "signed"))
        generator = torch.Generator().manual_seed(seed)
        latents = self.model.random_latents(n, generator)
        return torch.cat([to_unit(self.decode(chunk), "signed") for chunk in latents.split(BATCH)])

    def metric_draws(self, n: int, seed: int, real: Tensor, source: str = "reconstruction", **options: Any) -> Tensor:
        """What the metrics score: reconstructions of ``real`` (rFID), or ``source=codes``: random codes decoded."""
        if self.check_source(source) == "reconstruction":
            return self.reconstruct(real[:n])
        return self.draw(n, seed, source="codes")

    @torch.no_grad()
    def comparison_grid(self, images: Tensor, columns: int = 8) -> Tensor:
        """Rows of originals, their reconstructions below, then their code images; [0, 1] images in."""
        images = images.to(self.device)
        latents = self.encode(images * 2 - 1)
        rebuilt = to_unit(self.decode(latents), "signed")
        codes = torch.nn.functional.interpolate(self.model.latent_image(latents), size=images.shape[-2:], mode="nearest")
        if self.channels == 1:  # grey images beside colour code images: all shown in RGB
            images, rebuilt = images.expand(-1, 3, -1, -1), rebuilt.expand(-1, 3, -1, -1)
        rows = []
        for start in range(0, len(images), columns):
            part = slice(start, start + columns)
            rows += [images[part], rebuilt[part], codes[part]]
        cells = torch.cat([row if len(row) == columns else torch.cat([row, torch.full_like(row[:1], 0.5).expand(
            columns - len(row), -1, -1, -1)]) for row in rows])
        grid = make_grid(cells.clamp(0, 1).cpu(), nrow=columns, padding=1, pad_value=0.5)
        return upscale(grid, self.image_size)

    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        grid = self.comparison_grid(to_unit(self.shown_images, "signed"))
        save_image(grid, sample_dir / f"step_{step:07d}.png")  # `compare --samples` shows the reconstructions
        random = image_grid(self.draw(self.hparams.num_samples, self.hparams.sample_seed).cpu(),
                            max(1, round(math.sqrt(self.hparams.num_samples))))
        save_image(random, sample_dir / f"random_codes_step_{step:07d}.png")
        if writer is not None:
            writer.add_image("samples/reconstructions", grid, step)
            writer.add_image("samples/random_codes", random, step)

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """`mimicry sample`: the stored images above their reconstructions and code images, and a grid
        of ``n`` draws (random codes decoded; ``source=reconstruction``: the stored images rebuilt)."""
        self.check_source(options.get("source") or "codes")
        path = out_dir / "reconstructions.png"
        save_image(self.comparison_grid(to_unit(self.shown_images[:n], "signed")), path)
        return [path] + super().generate_samples(out_dir, n, seed, **options)
