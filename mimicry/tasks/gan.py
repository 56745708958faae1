"""GAN: two imitations per step. The discriminator imitates the labels "real" / "fake"; the
generator imitates "real" through the discriminator. New images take one step from noise.

Balance is the hard part, so it is made visible: D's verdicts and accuracy, both losses and
both gradient norms every logging step; the forgery map (the gradient of D's verdict on each
pixel of a fake: the target G follows) beside the fakes; class coverage from the offline
feature net when one is available, with a warning when it drops (mode collapse).

Class-conditional (task.conditional=true): fakes are drawn with the real batch's labels; G's
BatchNorms take a gain and bias per class, D projects the label onto its features (both in
mimicry/models). `val/within_class_diversity` shows whether each class still varies with z.

A style-based generator (model=stylegan) truncates in W (`truncation` = psi, towards its tracked
mean w) rather than in z, and adds a style-mixing grid to the samples: the coarse styles of each
row's latent with the fine styles of each column's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import save_image

from mimicry.errors import MimicryError
from mimicry.metrics.forgery_map import forgery_heatmap, forgery_map
from mimicry.models.ema import exponential_moving_average
from mimicry.tasks.base import build_optimizer, gradient_norm
from mimicry.tasks.image_generation import ImageGeneration, image_grid, upscale

log = logging.getLogger("mimicry")

BALANCE_MODES = ("none", "adaptive")
MIXING_GRID = (5, 6)  # rows (coarse styles) × columns (fine styles) of the style-mixing grid


class GenerativeAdversarial(ImageGeneration):
    data_value_range = "signed"  # the generator ends in Tanh: it works in [-1, 1]; draw() returns [0, 1]
    draw_options = ("truncation",)
    sample_options = ImageGeneration.sample_options + draw_options + ("interpolation_steps",)

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 250,
                 conditional: bool = False, d_steps: int | None = None, ema_decay: float = 0.999,
                 balance: str = "none", balance_threshold: float = 0.85, sample_seed: int = 0,
                 num_samples: int = 64, metrics_every_n_epochs: int = 5, metrics_samples: int = 1000,
                 feature_net: dict | None = None, coverage_drop_warning: float = 0.25):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)  # checks the data spec
        self.automatic_optimization = False  # two optimizers, stepped by hand
        if balance not in BALANCE_MODES:
            raise MimicryError(f"balance={balance!r} is not one of {', '.join(BALANCE_MODES)}")
        shape = {"channels": data_spec["channels"], "image_size": data_spec["image_size"],
                 "num_classes": self.num_classes}
        self.generator = instantiate(model["generator"], **shape)
        self.discriminator = instantiate(model["discriminator"], **shape)
        self.latent_dim = self.generator.latent_dim
        # "w": the generator truncates its own latent space (psi towards its mean w); "z": redraw z beyond ±t.
        self.truncation_space = getattr(self.generator, "truncation_space", "z")
        if self.loss_fn.penalties and getattr(self.discriminator, "norm", None) == "batch":
            raise MimicryError(
                f"{type(self.loss_fn).__name__} adds a gradient penalty ({', '.join(self.loss_fn.penalties)}), "
                f"which needs each image's gradient on its own; BatchNorm in the discriminator mixes the images "
                f"of a batch. Use model.discriminator.norm=none or spectral.")
        # The generator's EMA draws the samples; `ema_decay=0` samples from the raw generator.
        self.generator_ema = exponential_moving_average(self.generator, ema_decay) if ema_decay > 0 else None
        self.d_steps = int(d_steps or self.loss_fn.default_d_steps)
        self._d_skipped, self._d_skipped_ever = 0, False
        self._best_classes_covered = 0.0

    # ---- the two imitations ------------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None) -> Tensor:
        """z ~ N(0, I); with `truncation`, components beyond ±truncation are redrawn (BigGAN's trick),
        unless the generator truncates in W itself (then z is left whole and _generate passes psi on)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        if truncation is not None and self.truncation_space == "z":
            if truncation <= 0:
                raise MimicryError(f"truncation={truncation}: give a positive number of standard deviations")
            while (outside := z.abs() > truncation).any():
                z[outside] = torch.randn(int(outside.sum()), generator=generator)
        return z.to(self.device)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        real, labels = batch
        labels = labels if self.num_classes else None  # fakes are drawn with the real batch's labels
        opt_g, opt_d = self.optimizers()

        # 1. The discriminator imitates the labels: real images -> "real", fakes -> "fake".
        d_stepped = False
        for d_index in range(self.d_steps):
            fake = self.generator(self.noise(len(real)), labels).detach()
            real_logits, fake_logits = self.discriminator(real, labels), self.discriminator(fake, labels)
            d_accuracy = self.loss_fn.d_accuracy(real_logits, fake_logits)
            d_loss = self.loss_fn.discriminator(real_logits, fake_logits)
            if self.hparams.balance == "adaptive" and d_accuracy > self.hparams.balance_threshold:
                self._skip_discriminator_step(d_accuracy)  # D is already winning: let G catch up
                continue
            d_step = self.global_step * self.d_steps + d_index  # D's step count: lazy R1 acts on every Nth
            d_loss = d_loss + self.loss_fn.regularizer(lambda x: self.discriminator(x, labels), real, fake, d_step)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self._step_without_counting(opt_d)
            d_stepped = True

        # 2. The generator imitates "real" through the discriminator (D's weights stay put).
        self.discriminator.requires_grad_(False)
        g_loss = self.loss_fn.generator(self.discriminator(self.generator(self.noise(len(real)), labels), labels))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()  # global_step += 1: it counts generator steps (one per batch)
        self.discriminator.requires_grad_(True)
        g_schedule, d_schedule = self.lr_schedulers()
        g_schedule.step()
        if d_stepped:  # D's schedule counts D's own updates (adaptive balance may skip them all)
            d_schedule.step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)

        # Checked after the step, when Lightning also decides whether this batch's logs are written.
        # The gradients stay in .grad until the next zero_grad, so their norms are taken only here.
        if self.is_logging_step():
            verdict = self.loss_fn.verdict
            scalars = {
                "train/d_loss": d_loss, "train/g_loss": g_loss, "train/loss": d_loss + g_loss,
                "gan/d_real": verdict(real_logits).mean(), "gan/d_fake": verdict(fake_logits).mean(),
                "gan/d_accuracy": d_accuracy, "gan/d_grad_norm": gradient_norm(self.discriminator.parameters()),
                "gan/g_grad_norm": gradient_norm(self.generator.parameters()),
            }
            if self.hparams.balance == "adaptive":
                scalars["gan/d_skipped"] = float(self._d_skipped)  # D steps skipped since the last log
                self._d_skipped = 0
            for name, value in scalars.items():
                self.log(name, value, on_step=True, on_epoch=False, prog_bar=name in ("train/loss", "gan/d_accuracy"))
        return (d_loss + g_loss).detach()  # the divergence guard watches this

    def _skip_discriminator_step(self, d_accuracy: Tensor) -> None:
        if not self._d_skipped_ever:
            log.info(f"balance=adaptive acts at step {self.global_step}: D's accuracy {float(d_accuracy):.2f} > "
                     f"{self.hparams.balance_threshold}, so D steps are skipped until G catches up (gan/d_skipped)")
            self._d_skipped_ever = True
        self._d_skipped += 1

    def _step_without_counting(self, optimizer: LightningOptimizer) -> None:
        """Step D through the strategy (precision plugin, hooks) but not through
        LightningOptimizer.step, which adds one to trainer.global_step per call (Lightning issue
        #17958). global_step then counts generator steps = batches, as in every other task, so
        max_steps, the logging cadence and sample steps mean the same thing."""
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The base logs one train/grad_norm; a GAN logs one per network (gan/d_grad_norm, gan/g_grad_norm)."""

    def configure_optimizers(self) -> tuple[dict, dict]:
        """Two Adam(W) optimizers (TTUR: each network its own lr); betas from the loss unless set."""
        optim = dict(self.hparams.optim)
        betas = optim.get("betas") or self.loss_fn.default_betas
        flat_ratio = (optim.get("min_lr") or optim["lr"]) / optim["lr"]  # the same decay for both
        total = self.trainer.estimated_stepping_batches
        generator = build_optimizer(self.generator.parameters(), {**optim, "betas": betas,
                                    "min_lr": optim["lr"] * flat_ratio}, total)
        d_lr = optim.get("d_lr") or optim["lr"]
        discriminator = build_optimizer(self.discriminator.parameters(), {**optim, "lr": d_lr, "betas": betas,
                                        "min_lr": d_lr * flat_ratio}, total)
        generator["lr_scheduler"]["name"] = "lr-generator"  # the LR monitor's curve names
        discriminator["lr_scheduler"]["name"] = "lr-discriminator"
        return generator, discriminator

    # ---- validation: D on held-out real images (sample metrics: ImageGeneration) --------------
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, labels = batch
        labels = labels if self.num_classes else None
        fake = self.sample_generator()(self.noise(len(real)), labels)
        real_logits, fake_logits = self.discriminator(real, labels), self.discriminator(fake, labels)
        # D's verdict on real images it never trained on: far below gan/d_real = D memorises its training set.
        self.log("val/d_real", self.loss_fn.verdict(real_logits).mean(), on_epoch=True)
        self.log("val/d_accuracy", self.loss_fn.d_accuracy(real_logits, fake_logits), on_epoch=True)

    def on_image_metrics(self, metrics: dict[str, float]) -> None:
        self._check_coverage(metrics)

    def _check_coverage(self, metrics: dict[str, float]) -> None:
        """Mode collapse shows first as fewer classes among the fakes: say so in the log and in TensorBoard."""
        covered, best = metrics["classes_covered"], self._best_classes_covered
        if best and covered < (1 - self.hparams.coverage_drop_warning) * best:
            message = (f"class coverage dropped at step {self.global_step}: the fakes show {covered:.0f} classes, "
                       f"down from {best:.0f} (class entropy {metrics['class_entropy']:.2f} nats); "
                       f"the generator may be collapsing onto a few modes")
            log.warning(message)
            writer = self.tensorboard()
            if writer is not None:
                writer.add_text("gan/warnings", message, self.global_step)
        self._best_classes_covered = max(best, covered)

    # ---- samples -----------------------------------------------------------------------------
    def sample_generator(self) -> torch.nn.Module:
        """The generator that draws samples: the EMA copy (smoother), else the trained one."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def _generate(self, z: Tensor, labels: Tensor | None, truncation: float | None = None) -> Tensor:
        generator = self.sample_generator()
        was_training = generator.training
        generator.eval()  # BatchNorm's running statistics, not this batch's (StyleGAN: its fixed noise)
        if truncation is not None and self.truncation_space == "w":
            images = generator(z, labels, truncation=truncation)
        else:
            images = generator(z, labels)
        generator.train(was_training)
        return images

    @torch.no_grad()
    def draw(self, n: int, seed: int, labels: Tensor | None = None, truncation: float | None = None) -> Tensor:
        """n images in [0, 1] from the (EMA) generator; the same seed gives the same images."""
        rng = torch.Generator().manual_seed(seed)
        z = self.noise(n, rng, truncation)
        if self.num_classes and labels is None:
            labels = self.default_labels(n)  # one class per column
        return (self._generate(z, labels, truncation).clamp(-1, 1) + 1) / 2

    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        fakes, labels, columns = self.sample_grid(self.hparams.num_samples, self.hparams.sample_seed)
        grads = forgery_map(self.discriminator, fakes * 2 - 1, labels, verdict=self.loss_fn.verdict)  # D reads [-1, 1]
        fakes_grid = image_grid(fakes.cpu(), columns)
        heat_grid, forgery_norm = forgery_heatmap(grads.cpu(), nrow=columns)
        heat_grid = upscale(heat_grid, fakes.shape[-1])
        side_by_side = torch.cat([fakes_grid, torch.ones(3, fakes_grid.shape[1], 8), heat_grid], dim=2)
        save_image(side_by_side, sample_dir / f"step_{step:07d}.png")
        if writer is not None:
            writer.add_image("samples/fakes", fakes_grid, step)
            writer.add_image("samples/forgery_map", heat_grid, step)
            writer.add_scalar("gan/forgery_map_norm", forgery_norm, step)  # fades toward 0 when D wins outright
        if self.mixes_styles:
            mixing = self.style_mixing_grid(self.hparams.sample_seed)
            save_image(mixing, sample_dir / f"style_mixing_step_{step:07d}.png")
            if writer is not None:
                writer.add_image("samples/style_mixing", mixing, step)

    def sample_name(self, seed: int, label: int | None, options: dict[str, Any]) -> str:
        truncation = options.get("truncation")
        return (f"samples_seed{seed}" + (f"_label{label}" if label is not None else "")
                + (f"_trunc{float(truncation):g}" if truncation is not None else ""))

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        """The grid (and/or npz) of ImageGeneration, plus an interpolation strip."""
        if options.get("truncation") is not None:
            options["truncation"] = float(options["truncation"])
        paths = super().generate_samples(out_dir, n, seed, **options)
        truncation, label = options.get("truncation"), self.check_label(options.get("label"))
        steps = int(options.get("interpolation_steps") or 10)
        strip_path = out_dir / f"interpolation_{self.sample_name(seed, label, options)[len('samples_'):]}.png"
        save_image(image_grid(self.interpolate(seed, steps, truncation, label).cpu(), steps), strip_path)
        paths.append(strip_path)
        if self.mixes_styles:
            paths.append(out_dir / f"style_mixing_{self.sample_name(seed, label, options)[len('samples_'):]}.png")
            save_image(self.style_mixing_grid(seed, truncation, label), paths[-1])
        return paths

    @torch.no_grad()
    def interpolate(self, seed: int, steps: int, truncation: float | None = None, label: int | None = None,
                    rows: int = 4) -> Tensor:
        """`rows` walks from one latent to another in `steps` images (spherical interpolation, which
        keeps |z| typical of a Gaussian). A conditional generator keeps one class per row."""
        if steps < 2:
            raise MimicryError(f"interpolation_steps={steps}: need at least 2")
        rng = torch.Generator().manual_seed(seed + 1)
        start, end = self.noise(rows, rng, truncation), self.noise(rows, rng, truncation)
        t = torch.linspace(0, 1, steps, device=self.device)
        z = torch.stack([slerp(start, end, float(ti)) for ti in t], dim=1).reshape(rows * steps, -1)
        labels = None
        if self.num_classes:
            row_labels = torch.full((rows,), int(label), device=self.device) if label is not None \
                else torch.arange(rows, device=self.device) % self.num_classes
            labels = row_labels.repeat_interleave(steps)
        return (self._generate(z, labels, truncation).clamp(-1, 1) + 1) / 2  # [0, 1], as draw()

    @property
    def mixes_styles(self) -> bool:
        return hasattr(self.generator, "mix_styles")

    @torch.no_grad()
    def style_mixing_grid(self, seed: int, truncation: float | None = None, label: int | None = None) -> Tensor:
        """The StyleGAN paper's figure as one [0, 1] grid: the top row draws the column latents, the
        left column the row latents, and each cell mixes its row's coarse styles (pose, shape, size)
        with its column's fine styles (colour, stroke, texture). Conditional: each latent keeps its
        class (row r: class r, column c: class c), or all take `label`."""
        rows, columns = MIXING_GRID
        rng = torch.Generator().manual_seed(seed + 2)  # other latents than the sample grid's
        coarse_z, fine_z = self.noise(rows, rng), self.noise(columns, rng)
        row_labels, column_labels = self.default_labels(rows), self.default_labels(columns)
        if label is not None:
            row_labels, column_labels = torch.full_like(row_labels, label), torch.full_like(column_labels, label)
        generator = self.sample_generator()
        was_training = generator.training
        generator.eval()
        cells = generator.mix_styles(coarse_z, fine_z, row_labels, column_labels, truncation)
        top = self._generate(fine_z, column_labels, truncation)
        left = self._generate(coarse_z, row_labels, truncation)
        generator.train(was_training)
        blank = torch.ones_like(top[:1])  # the empty corner
        table = torch.cat([torch.cat([blank, top])[None], torch.cat([left[:, None], cells], dim=1)])
        images = (table.flatten(0, 1).clamp(-1, 1) + 1) / 2
        return image_grid(images.cpu(), columns + 1)



def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between rows of a and b."""
    cos = (torch.nn.functional.normalize(a, dim=1) * torch.nn.functional.normalize(b, dim=1)).sum(1, keepdim=True)
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
