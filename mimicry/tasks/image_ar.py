"""Images as language: imitate the next pixel level (or patch code) of real images, in raster order.

The tokenizer turns an image into a sequence (mimicry/data/image_tokenizers.py); the model is
the same GPT as `lm`. A start token opens each sequence, one per class when conditional, so
"draw a 3" is just a different first token. New images are sampled one token at a time.

val/bits_per_dim is the NLL of the tokens per image dimension (H·W·C), in bits. For pixels
that is the usual bits/dim of images quantized to K levels. For patch codes it counts the bits
of the codes only: the codebook's loss is logged beside it as val/codebook_mse.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchmetrics import MeanMetric
from torchvision.utils import make_grid, save_image

from mimicry.errors import MimicryError
from mimicry.tasks.base import ImitationTask

log = logging.getLogger("mimicry")

MEMORIZATION_BANK = 10_000  # training images searched for nearest neighbours (bounded cost on big datasets)


class ImageAutoregressive(ImitationTask):
    throughput_unit = "tokens"
    sample_options = ("temperature", "top_k", "top_p", "label")

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 250,
                 tokenizer: dict | None = None, conditional: bool = False, num_samples: int = 64,
                 completions: int = 8, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, sample_seed: int = 0, metrics_every_n_epochs: int = 5,
                 metrics_samples: int = 500, feature_net: dict | None = None):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)
        if data_spec.get("kind") != "image":
            raise MimicryError(f"task=image_ar needs image data, got {data_spec.get('kind')!r} data")
        if data_spec["value_range"] != "unit":
            raise MimicryError("task=image_ar quantizes images from [0, 1]: set data.value_range=unit")
        if conditional and data_spec["num_classes"] < 2:
            raise MimicryError(f"task.conditional=true needs labelled data with at least 2 classes; "
                               f"{data_spec['dataset']} has {data_spec['num_classes']}")
        self.channels, self.image_size = data_spec["channels"], data_spec["image_size"]
        tokenizer = tokenizer or {"_target_": "mimicry.data.image_tokenizers.PixelTokenizer"}
        self.tokenizer = instantiate(tokenizer, channels=self.channels)
        self.tokenizer.check(self.channels, self.image_size)  # e.g. patch size must divide the image size
        self.num_classes = data_spec["num_classes"] if conditional else 0
        self.image_vocab = self.tokenizer.vocab_size  # ids [0, V) are image tokens; start tokens follow
        self.length = self.tokenizer.tokens_per_image(self.image_size)
        self.model = instantiate(model, vocab_size=self.image_vocab + max(1, self.num_classes), block_size=self.length)
        self.val_nll = MeanMetric()
        self.val_codebook_mse = MeanMetric()
        self._helpers: dict[str, Any] = {}  # feature net, fixed validation images: not part of the state dict

    # ---- sequences -------------------------------------------------------------------------------
    def start_tokens(self, labels: Tensor | None, n: int) -> Tensor:
        """(n, 1): the class token of each label when conditional, else the one start token."""
        if self.num_classes:
            return (self.image_vocab + labels).long().view(n, 1).to(self.device)
        return torch.full((n, 1), self.image_vocab, dtype=torch.long, device=self.device)

    def sequences(self, images: Tensor, labels: Tensor) -> Tensor:
        return torch.cat([self.start_tokens(labels, len(images)), self.tokenizer.encode(images)], dim=1)

    def predict(self, inputs: Tensor) -> Tensor:
        return self.model(inputs)[..., : self.image_vocab]  # start tokens never come next

    # ---- the imitation ---------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        tokens = self.sequences(images, labels)
        reference = tokens[:, 1:]                   # the next pixel level (or patch code) of a real image
        prediction = self.predict(tokens[:, :-1])   # logits over levels (or codes)
        return self.imitate(prediction, reference)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        tokens = self.sequences(images, labels)
        loss = self.imitate(self.predict(tokens[:, :-1]), tokens[:, 1:], stage="val")
        self.val_nll.update(loss, weight=len(images))
        if self.tokenizer.kind == "patches":
            restored = self.tokenizer.decode(tokens[:, 1:], self.image_size)
            self.val_codebook_mse.update(F.mse_loss(restored, images), weight=len(images))

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()  # nats per token
        self.val_nll.reset()
        dims = self.channels * self.image_size**2
        self.log("val/bits_per_dim", nll * self.length / dims / math.log(2), prog_bar=True)
        self.log("val/nll_per_image", nll * self.length)  # nats: the unit of the PixelCNN literature
        if self.tokenizer.kind == "patches":
            self.log("val/codebook_mse", self.val_codebook_mse.compute())
            self.val_codebook_mse.reset()
        if self._metrics_due():
            self.log_image_metrics()

    def count_items(self, batch: tuple[Tensor, Tensor]) -> int:
        return len(batch[0]) * self.length

    # ---- what needs the data: the codebook, the feature net, fixed validation images ------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or stage != "fit":
            return
        if not self.tokenizer_ready():
            log.info(f"fitting the {self.tokenizer.codebook_size}-code patch codebook by k-means")
            self.tokenizer.fit(datamodule.train_images())
            log.info(f"codebook reconstruction MSE on validation images: "
                     f"{self.tokenizer.reconstruction_error(datamodule.val_images()[:1000]):.5f}")
        self._helpers["val_images"] = datamodule.val_images()[: self.hparams.completions]
        if self.num_classes:  # completions keep the class of the image they continue
            self._helpers["val_labels"] = datamodule.val_labels()[: self.hparams.completions]
        self._helpers["datamodule"] = datamodule
        if self.hparams.metrics_every_n_epochs:
            from mimicry.tasks.classifier import load_feature_net

            self._helpers["feature_net"] = load_feature_net(datamodule, **(self.hparams.feature_net or {}))

    def tokenizer_ready(self) -> bool:
        return self.tokenizer.kind != "patches" or bool(self.tokenizer.fitted)

    def _metrics_due(self) -> bool:
        return self._helpers.get("feature_net") is not None and self.epoch_end_due(self.hparams.metrics_every_n_epochs)

    def log_image_metrics(self) -> None:
        """FID, KID, precision/recall, density/coverage, class coverage and copy rate on fixed-seed samples."""
        from mimicry.metrics.image_quality import image_metrics
        from mimicry.metrics.memorization import memorization

        datamodule, net = self._helpers["datamodule"], self._helpers["feature_net"].to(self.device)
        n = self.hparams.metrics_samples
        fakes = self.draw(n, seed=self.hparams.sample_seed + 1)
        real = datamodule.train_images()[:n]  # the reference set: the images the model imitates
        metrics = image_metrics(real, fakes, net, value_range="unit")
        bank = datamodule.train_images()[:MEMORIZATION_BANK]
        copies = memorization(fakes.cpu(), bank, net, value_range="unit")
        for name, value in {**metrics, "copy_rate": copies["copy_rate"]}.items():
            self.log(f"val/{name}", value)
        writer = self.tensorboard()
        if writer is not None:
            writer.add_image("samples/memorization", copies["grid"], self.global_step)

    # ---- samples ---------------------------------------------------------------------------------
    @torch.no_grad()
    def draw(self, n: int, seed: int, labels: Tensor | None = None, prefix: Tensor | None = None,
             batch_size: int = 256, **sampling: Any) -> Tensor:
        """n images in [0, 1]; the same seed gives the same images. `prefix` (n, k) fixes the first
        k tokens (completion). Conditional models draw classes 0, 1, 2, ... in turn unless given labels."""
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        options = {"temperature": self.hparams.temperature, "top_k": self.hparams.top_k, "top_p": self.hparams.top_p}
        options.update({k: v for k, v in sampling.items() if v is not None})
        generator = torch.Generator(device=self.device).manual_seed(seed)
        was_training = self.training
        self.eval()
        images = []
        for start in range(0, n, batch_size):
            rows = slice(start, min(start + batch_size, n))
            count = rows.stop - rows.start
            idx = self.start_tokens(labels[rows] if labels is not None else None, count)
            if prefix is not None:
                idx = torch.cat([idx, prefix[rows].to(self.device)], dim=1)
            out = self.model.generate(idx, self.length + 1 - idx.size(1), generator=generator,
                                      allowed=slice(0, self.image_vocab), **options)
            images.append(self.tokenizer.decode(out[:, 1:], self.image_size).clamp(0, 1))
        self.train(was_training)
        return torch.cat(images)

    def sample_grid(self, n: int, seed: int, label: int | None = None, **sampling: Any) -> tuple[Tensor, int]:
        """Images and the grid's row width: one row per class when conditional."""
        labels = None
        columns = max(1, round(math.sqrt(n)))
        if self.num_classes:
            if label is not None:
                labels = torch.full((n,), label)
            else:
                columns = max(1, n // self.num_classes)
                n = columns * self.num_classes
                labels = torch.arange(self.num_classes).repeat_interleave(columns)
        return self.draw(n, seed, labels, **sampling), columns

    def completion_grid(self, images: Tensor, seed: int, tries: int = 3) -> Tensor:
        """Rows of: the image, its top half (the prompt), then `tries` bottom halves written by the model."""
        tokens = self.tokenizer.encode(images.to(self.device))
        rows = self.tokenizer.token_rows(self.image_size)
        given = (rows // 2) * (self.length // rows)
        labels = self._helpers.get("val_labels")
        prefix = tokens[:, :given].repeat_interleave(tries, dim=0)
        completed = self.draw(len(prefix), seed, prefix=prefix,
                              labels=labels.repeat_interleave(tries) if labels is not None else None)
        shown = self.tokenizer.decode(tokens, self.image_size)  # as the model sees it (quantized)
        prompt = shown.clone()
        top = self.image_size * (rows // 2) // rows
        prompt[:, :, top:] = 0.5  # grey: the part to be written
        cells = torch.cat([shown.unsqueeze(1), prompt.unsqueeze(1), completed.view(len(images), tries, *shown.shape[1:])], 1)
        return make_grid(cells.flatten(0, 1).cpu(), nrow=2 + tries, padding=1, pad_value=1.0)

    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        if not self.tokenizer_ready():
            return
        h = self.hparams
        images, columns = self.sample_grid(h.num_samples, h.sample_seed)
        grid = make_grid(images.cpu(), nrow=columns, padding=1, pad_value=1.0)
        save_image(grid, sample_dir / f"step_{step:07d}.png")
        if writer is not None:
            writer.add_image("samples/images", grid, step)
        val_images = self._helpers.get("val_images")
        if h.completions and val_images is not None:
            completions = self.completion_grid(val_images[: h.completions], h.sample_seed)
            save_image(completions, sample_dir / f"completion_step_{step:07d}.png")
            if writer is not None:
                writer.add_image("samples/completions", completions, step)

    def generate_samples(self, out_dir: Path, n: int, seed: int, **options: Any) -> list[Path]:
        label = options.get("label")
        if label is not None and not (self.num_classes and 0 <= int(label) < self.num_classes):
            raise MimicryError(f"label={label}: this model is " + (
                f"conditional on classes 0..{self.num_classes - 1}" if self.num_classes
                else "unconditional (trained without task.conditional=true)"))
        sampling = {k: options.get(k) for k in ("temperature", "top_k", "top_p")}
        images, columns = self.sample_grid(n, seed, None if label is None else int(label), **sampling)
        path = out_dir / (f"samples_seed{seed}" + (f"_label{label}" if label is not None else "") + ".png")
        save_image(images.cpu(), path, nrow=columns, padding=1, pad_value=1.0)
        return [path]

    def sample_images(self, n: int, seed: int) -> Tensor:
        """`mimicry eval`: n images in [0, 1] (classes in turn when conditional)."""
        return self.draw(n, seed)

