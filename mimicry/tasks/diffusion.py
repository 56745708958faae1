"""Diffusion: noise a real image to a random level and ask the network for it back.

The reference is what was hidden (the noise, the clean image, or v, by `loss=eps|x0|v`); the
prediction is the denoiser's output; the loss is their squared error, weighted per noise level.
New images start as pure noise and are denoised step by step (mimicry/diffusion/samplers.py:
DDPM, DDIM, DPM-Solver++ 2M), the same code in training grids, `mimicry sample` and `mimicry eval`.

An EMA of the weights (with a warm-up, mimicry/models/ema.py) draws the samples and is the model
that validation scores. A class-conditional model sees the null class in place of the label
`label_dropout` of the time, so one network is both conditional and unconditional, and
`guidance=` mixes the two at sampling time (classifier-free guidance).

What TensorBoard shows besides the shared image metrics: `val/loss` per noise-level bucket
(`val/loss_t0-200`, ...: which levels are hard), and a denoising trajectory, one row per sample,
x_t from noise to image on the left and the denoiser's guess of x0 at the same steps on the right.

Latent diffusion (``latent.from_run=AE_RUN``, Rombach et al. 2022): the same UNet, samplers and
guidance, on the latents of a trained KL autoencoder run (frozen; mimicry/tasks/first_stage.py),
divided by their standard deviation over training images (Stable Diffusion's scale factor, kept in
the checkpoint). What is noised and denoised is the latent; grids, metrics, ``sample`` and ``eval``
see it decoded. Real images reach the metrics through the autoencoder too (as image_ar's do through
its tokenizer), so they measure the diffusion model, not what the autoencoder loses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import MeanMetric
from torchvision.utils import save_image

from mimicry.diffusion.samplers import DEFAULT_STEPS, check_sampler, model_denoiser, sample
from mimicry.diffusion.schedule import NoiseSchedule
from mimicry.errors import MimicryError
from mimicry.losses.diffusion import DiffusionObjective
from mimicry.data.images import to_unit
from mimicry.models.ema import exponential_moving_average
from mimicry.tasks.first_stage import first_stage_for
from mimicry.tasks.image_generation import ImageGeneration, image_grid

SAMPLE_BATCH = 500  # images denoised at once: bounds memory when eval asks for thousands
SCALE_IMAGES = 2000  # training images whose latents measure the latent scale


class Diffusion(ImageGeneration):
    data_value_range = "signed"  # noise and images share one scale: data in [-1, 1]
    draw_options = ("sampler", "steps", "eta", "guidance", "spacing", "clip")
    sample_options = ImageGeneration.sample_options + draw_options

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 250,
                 conditional: bool = False, label_dropout: float = 0.1, schedule: str = "cosine",
                 timesteps: int = 1000, ema_decay: float = 0.999, sampler: str = "dpm_solver",
                 steps: int | None = 20, eta: float = 0.0, spacing: str = "quadratic", guidance: float | None = None,
                 clip_denoised: bool | None = None, sample_seed: int = 0, num_samples: int = 64, trajectory_rows: int = 8,
                 trajectory_snapshots: int = 8, loss_buckets: int = 5, metrics_every_n_epochs: int = 10,
                 metrics_samples: int = 500, feature_net: dict | None = None, latent: dict | None = None,
                 first_stage: dict | None = None):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)  # checks the data spec
        if not isinstance(self.loss_fn, DiffusionObjective):
            raise MimicryError(f"task=diffusion needs a diffusion objective (loss=eps, x0 or v), "
                               f"not {type(self.loss_fn).__name__}")
        if not 0 <= label_dropout < 1:
            raise MimicryError(f"task.label_dropout={label_dropout}: a probability in [0, 1) (0.1 is usual)")
        if not 1 <= loss_buckets <= timesteps:
            raise MimicryError(f"task.loss_buckets={loss_buckets}: between 1 and task.timesteps ({timesteps})")
        self.schedule = NoiseSchedule(schedule, timesteps)
        self.objective = self.loss_fn
        # latent.from_run: denoise a KL autoencoder's latents (what this run records of it: first_stage)
        latent = latent or {}
        self.first_stage, self.autoencoder = None, None
        self.shape = (self.channels, self.image_size, self.image_size)  # what is noised: (C, H, W)
        if latent.get("from_run") or first_stage is not None:
            self.first_stage, self.autoencoder = first_stage_for(latent.get("from_run"), first_stage, "kl", data_spec,
                                                                 "latent.from_run")
            self.shape = self.autoencoder.latent_shape
            scale = latent.get("scale")
            if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
                raise MimicryError(f"latent.scale={scale!r}: a positive number (latents are divided by it), or null "
                                   f"to measure their standard deviation on training images")
            self.register_buffer("latent_scale", torch.tensor(float(scale or 0.0)))  # 0: measured in setup_data
        self.check_sampling(sampler, steps, eta, spacing, guidance, clip_denoised)  # bad defaults fail before training
        try:
            self.model = instantiate(model, channels=self.shape[0], image_size=self.shape[-1],
                                     num_classes=self.num_classes)
        except MimicryError as error:
            if self.autoencoder is None:
                raise
            raise MimicryError(f"the latents are {'×'.join(map(str, self.shape))}: {error} "
                               f"(model=unet_latent works at any latent size)") from None
        # The EMA draws samples and is what validation scores; `ema_decay=0` uses the raw weights.
        self.model_ema = exponential_moving_average(self.model, ema_decay) if ema_decay > 0 else None
        edges = torch.linspace(0, timesteps, loss_buckets + 1).round().long().tolist()
        self.buckets = list(zip(edges[:-1], edges[1:]))
        self.val_bucket_loss = torch.nn.ModuleList(MeanMetric() for _ in self.buckets)

    # ---- the imitation ----------------------------------------------------------------------------
    def condition(self, labels: Tensor, dropout: float = 0.0) -> Tensor | None:
        """Labels the network sees: None when unconditional; else some replaced by the null class."""
        if not self.num_classes:
            return None
        if dropout:
            labels = torch.where(torch.rand(len(labels), device=labels.device) < dropout,
                                 torch.full_like(labels, self.num_classes), labels)
        return labels

    def diffused(self, images: Tensor) -> Tensor:
        """What is noised and denoised: the images themselves, or their scaled latents."""
        if self.autoencoder is None:
            return images
        return self.autoencoder.encode(images) / self.latent_scale

    def decoded(self, x: Tensor) -> Tensor:
        """Back from what is denoised to images in [-1, 1] (latents through the autoencoder's decoder)."""
        if self.autoencoder is None:
            return x
        return torch.cat([self.autoencoder.decode(chunk * self.latent_scale) for chunk in x.split(SAMPLE_BATCH)])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        images = self.diffused(images)  # latent diffusion: the autoencoder's latents
        t, noise = self.schedule.sample_t(images), torch.randn_like(images)
        noisy = self.schedule.add_noise(images, noise, t)
        reference = self.objective.target(self.schedule, images, noise, t)  # eps, x0 or v
        prediction = self.model(noisy, t, self.condition(labels, self.hparams.label_dropout))
        return self.imitate(prediction, reference, weight=self.objective.weight(self.schedule, t))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.model_ema is not None:
            self.model_ema.update_parameters(self.model)

    def sampling_model(self) -> torch.nn.Module:
        return self.model_ema.module if self.model_ema is not None else self.model

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The same loss on held-out images, with noise levels and noise fixed per batch (seeded by
        its index), so val/loss moves only when the model does. Levels are stratified over 0..T-1."""
        images, labels = batch
        images = self.diffused(images)
        generator = torch.Generator().manual_seed(batch_idx)
        n, T = len(images), self.schedule.T
        t = ((torch.arange(n) + torch.rand(n, generator=generator)) * T / n).long().clamp(max=T - 1).to(self.device)
        noise = torch.randn(images.shape, generator=generator).to(self.device)
        noisy = self.schedule.add_noise(images, noise, t)
        reference = self.objective.target(self.schedule, images, noise, t)
        prediction = self.sampling_model()(noisy, t, self.condition(labels))
        weight = self.objective.weight(self.schedule, t)
        self.imitate(prediction, reference, weight=weight, stage="val")
        per_example = self.objective(prediction, reference) * weight
        for (low, high), metric in zip(self.buckets, self.val_bucket_loss):
            inside = (t >= low) & (t < high)
            if inside.any():
                metric.update(per_example[inside])

    def on_validation_epoch_end(self) -> None:
        for (low, high), metric in zip(self.buckets, self.val_bucket_loss):
            if metric.update_count:  # which noise levels are hard: high t is coarse shape, low t detail
                self.log(f"val/loss_t{low}-{high}", metric.compute())
            metric.reset()
        super().on_validation_epoch_end()  # the shared image metrics, every N epochs

    # ---- latent diffusion: the autoencoder's scale, real images as it gives them back -------------
    def setup_data(self, datamodule) -> None:
        if self.autoencoder is None or float(self.latent_scale) > 0:
            return
        pick = torch.randperm(len(datamodule.train_images()), generator=torch.Generator().manual_seed(0))[:SCALE_IMAGES]
        latents = self.autoencoder.encode(datamodule.train_images()[pick].to(self.device))
        self.latent_scale.fill_(float(latents.std()))  # unit-variance latents: the noise schedule's scale

    def derived_arguments(self) -> dict[str, Any]:
        """Latent diffusion: the autoencoder's recipe and data spec go into the checkpoint beside its weights."""
        derived = super().derived_arguments()
        return {**derived, "first_stage": self.first_stage} if self.first_stage is not None else derived

    @torch.no_grad()
    def as_drawable(self, images: Tensor) -> Tensor:
        """Latent diffusion: real [0, 1] images through the autoencoder, as samples come out of it."""
        if self.autoencoder is None:
            return images
        out = [to_unit(self.autoencoder.decode(self.autoencoder.encode(chunk.to(self.device) * 2 - 1)), "signed").cpu()
               for chunk in images.split(SAMPLE_BATCH)]
        return torch.cat(out) if out else images

    # ---- sampling ---------------------------------------------------------------------------------
    def check_sampling(self, sampler: str, steps: int | None, eta: float, spacing: str,
                       guidance: float | None, clip: bool | None = None) -> None:
        check_sampler(sampler, steps, self.schedule.T, eta, spacing)
        if clip and self.autoencoder is not None:
            raise MimicryError("clip=true keeps x0 in the image range [-1, 1], but this model denoises latents "
                               "(latent.from_run), which have no such range: leave clip unset (or false)")
        if clip is not None and not isinstance(clip, bool):
            raise MimicryError(f"clip={clip!r}: true (keep each step's predicted x0 in [-1, 1]), false, or null "
                               f"(clip only an eps model's x0, which is noise/√ᾱ at the noisiest levels)")
        if guidance is not None and not self.num_classes:
            raise MimicryError(f"guidance={guidance}: classifier-free guidance needs a class-conditional model; "
                               f"this one was trained without task.conditional=true")

    def sampling(self, **options: Any) -> dict[str, Any]:
        """The task's sampler settings with any given options on top, checked."""
        h = self.hparams
        settings = {"sampler": h.sampler, "steps": h.steps, "eta": h.eta, "spacing": h.spacing,
                    "guidance": h.guidance, "clip": h.clip_denoised}
        if options.get("sampler") not in (None, h.sampler) and options.get("steps") is None:
            settings["steps"] = None  # another sampler: its own default number of steps, not ours
        settings.update({k: v for k, v in options.items() if v is not None})
        if settings["steps"] is None:
            settings["steps"] = min(DEFAULT_STEPS.get(settings["sampler"], self.schedule.T), self.schedule.T)
        settings["eta"] = float(settings["eta"])
        if settings["guidance"] is not None:
            settings["guidance"] = float(settings["guidance"])
        self.check_sampling(**settings)
        if settings["clip"] is None:
            # x0 from eps is (x_t − √(1−ᾱ)·eps)/√ᾱ: at the noisiest levels (√ᾱ ≈ 5e-5) eps's error becomes
            # thousands and must be clipped. From x0 or v it is sound at every level, and the samplers do
            # better unclipped (README: clipping makes DDIM-50's FID about 9% worse).
            settings["clip"] = self.objective.prediction == "eps" and self.autoencoder is None
        return settings

    @torch.no_grad()
    def draw(self, n: int, seed: int, labels: Tensor | None = None, trajectory: list | None = None,
             **options: Any) -> Tensor:
        """n images in [0, 1] from pure noise; the same seed (and settings) gives the same images.
        Options: sampler, steps, eta, spacing, guidance, clip (see `sampling`)."""
        settings = self.sampling(**options)
        if self.num_classes and labels is None:
            labels = self.default_labels(n)
        model = self.sampling_model()
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, n, SAMPLE_BATCH):
            count = min(SAMPLE_BATCH, n - start)
            chunk_labels = labels[start:start + count].to(self.device) if labels is not None else None
            denoise = model_denoiser(model, self.schedule, self.objective.prediction, chunk_labels,
                                     null_label=self.num_classes if self.num_classes else None,
                                     guidance=settings["guidance"], clip=settings["clip"])
            noise = torch.randn(count, *self.shape, generator=generator)
            out.append(self.decoded(sample(settings["sampler"], denoise, self.schedule, noise.to(self.device),
                                           settings["steps"], settings["eta"], generator,
                                           trajectory if start == 0 else None, settings["spacing"])))
        model.train(was_training)
        return (torch.cat(out).clamp(-1, 1) + 1) / 2

    def trajectory_image(self, seed: int, rows: int | None = None, label: int | None = None,
                         **options: Any) -> Tensor:
        """One row per sample: x_t at evenly spaced steps from x_T to the last, then the predicted x0
        at the same steps (a grey gap between the halves). Values outside [-1, 1] are clipped."""
        rows = rows or self.hparams.trajectory_rows
        labels = torch.full((rows,), label) if label is not None else None
        trajectory: list = []
        self.draw(rows, seed, labels, trajectory=trajectory, **options)
        k = min(self.hparams.trajectory_snapshots, len(trajectory))
        picks = torch.linspace(0, len(trajectory) - 1, k).round().long().tolist()
        # latent diffusion: both decoded (a noisy latent decodes to what the decoder makes of it)
        x_t = torch.stack([self.decoded(trajectory[i][1].to(self.device)).cpu() for i in picks], 1)  # (rows, k, C, H, W)
        x0 = torch.stack([self.decoded(trajectory[i][2].to(self.device)).cpu() for i in picks], 1)
        gap = torch.zeros_like(x_t[:, :1])  # a grey cell between x_t and x0̂
        cells = torch.cat([x_t, gap, x0], 1).flatten(0, 1)
        return image_grid((cells.clamp(-1, 1) + 1) / 2, 2 * k + 1)

    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        super().log_samples(writer, step, sample_dir)  # the fixed-seed grid: samples/images
        if not self.hparams.trajectory_rows:
            return
        image = self.trajectory_image(self.hparams.sample_seed)
        save_image(image, sample_dir / f"trajectory_step_{step:07d}.png")
        if writer is not None:
            writer.add_image("samples/trajectory", image, step)

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """`mimicry sample`: the grid (and/or npz) from the shared piece, plus the trajectory of a few."""
        self.sampling(**{k: options.get(k) for k in self.draw_options})  # bad options fail before any work
        paths = super().generate_samples(out_dir, n, seed, **options)
        label = self.check_label(options.get("label"))
        drawn = {k: options[k] for k in self.draw_options if options.get(k) is not None}
        path = out_dir / f"trajectory_{self.sample_name(seed, label, drawn)}.png"
        save_image(self.trajectory_image(seed, min(n, self.hparams.trajectory_rows or 8), label, **drawn), path)
        return paths + [path]
