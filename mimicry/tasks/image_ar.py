"""Images as language: imitate the next pixel level (or patch code) of real images, in raster order.

The tokenizer turns an image into a sequence (mimicry/data/image_tokenizers.py); the model is
the same GPT as `lm`. A start token opens each sequence, one per class when conditional, so
"draw a 3" is just a different first token. New images are sampled one token at a time.

val/bits_per_dim is the NLL of the tokens per image dimension (H·W·C), in bits. For pixels
that is the usual bits/dim of images quantized to K levels. For patch codes it counts the bits
of the codes only: the codebook's loss is logged beside it as val/codebook_mse.

`tokenizer=vq tokenizer.from_run=AE_RUN` is Taming's second stage: the tokens are the codebook
indices of a trained VQ-VAE run (frozen; mimicry/tasks/first_stage.py), decoded by its decoder,
and val/codebook_mse is the autoencoder's reconstruction error.
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
from torchvision.utils import save_image

from mimicry.tasks.first_stage import first_stage_for
from mimicry.tasks.image_generation import ImageGeneration, image_grid

log = logging.getLogger("mimicry")


class ImageAutoregressive(ImageGeneration):
    throughput_unit = "tokens"
    data_value_range = "unit"  # tokenizers quantize from [0, 1]
    draw_options = ("temperature", "top_k", "top_p")
    sample_options = ImageGeneration.sample_options + draw_options

    def __init__(self, model: dict, loss: dict, optim: dict, data_spec: dict, sample_every_n_steps: int = 250,
                 tokenizer: dict | None = None, conditional: bool = False, num_samples: int = 64,
                 completions: int = 8, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, sample_seed: int = 0, metrics_every_n_epochs: int = 5,
                 metrics_samples: int = 500, feature_net: dict | None = None, first_stage: dict | None = None):
        super().__init__(model, loss, optim, data_spec, sample_every_n_steps)  # checks the data spec
        tokenizer = dict(tokenizer or {"_target_": "mimicry.data.image_tokenizers.PixelTokenizer"})
        self.first_stage = None  # tokenizer=vq: what this run records of the VQ-VAE run whose codes it models
        if "from_run" in tokenizer:
            self.first_stage, tokenizer["autoencoder"] = first_stage_for(
                tokenizer.pop("from_run"), first_stage, "vq", data_spec, "tokenizer.from_run")
        self.tokenizer = instantiate(tokenizer, channels=self.channels)
        self.tokenizer.check(self.channels, self.image_size)  # e.g. patch size must divide the image size
        self.image_vocab = self.tokenizer.vocab_size  # ids [0, V) are image tokens; start tokens follow
        self.length = self.tokenizer.tokens_per_image(self.image_size)
        self.model = instantiate(model, vocab_size=self.image_vocab + max(1, self.num_classes), block_size=self.length)
        self.val_nll = MeanMetric()
        self.val_codebook_mse = MeanMetric()

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
        if self.tokenizer.kind in ("patches", "vq"):  # what the tokenizer loses
            restored = self.tokenizer.decode(tokens[:, 1:], self.image_size)
            self.val_codebook_mse.update(F.mse_loss(restored, images), weight=len(images))

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()  # nats per token
        self.val_nll.reset()
        dims = self.channels * self.image_size**2
        self.log("val/bits_per_dim", nll * self.length / dims / math.log(2), prog_bar=True)
        self.log("val/nll_per_image", nll * self.length)  # nats: the unit of the PixelCNN literature
        if self.tokenizer.kind in ("patches", "vq"):
            self.log("val/codebook_mse", self.val_codebook_mse.compute())
            self.val_codebook_mse.reset()
        super().on_validation_epoch_end()  # the sample metrics, every metrics_every_n_epochs

    def derived_arguments(self) -> dict[str, Any]:
        """tokenizer=vq: the autoencoder's recipe and data spec go into the checkpoint beside its weights."""
        derived = super().derived_arguments()
        return {**derived, "first_stage": self.first_stage} if self.first_stage is not None else derived

    def count_items(self, batch: tuple[Tensor, Tensor]) -> int:
        return len(batch[0]) * self.length

    # ---- what needs the data: the codebook, fixed validation images to complete ---------------
    def setup_data(self, datamodule) -> None:
        if not self.tokenizer_ready():
            log.info(f"fitting the {self.tokenizer.codebook_size}-code patch codebook by k-means")
            self.tokenizer.fit(datamodule.train_images())
            log.info(f"codebook reconstruction MSE on validation images: "
                     f"{self.tokenizer.reconstruction_error(datamodule.val_images()[:1000]):.5f}")
        self._helpers["val_images"] = datamodule.val_images()[: self.hparams.completions]
        if self.num_classes:  # completions keep the class of the image they continue
            self._helpers["val_labels"] = datamodule.val_labels()[: self.hparams.completions]

    def tokenizer_ready(self) -> bool:
        return self.tokenizer.kind != "patches" or bool(self.tokenizer.fitted)

    @torch.no_grad()
    def as_drawable(self, images: Tensor) -> Tensor:
        """Real images through the tokenizer (quantized levels or codebook patches), as samples are:
        the metrics then measure the model, not what quantization loses."""
        out = [self.tokenizer.decode(self.tokenizer.encode(x.to(self.device)), self.image_size).cpu()
               for x in images.split(4096)]
        return torch.cat(out) if out else images

    # ---- samples ---------------------------------------------------------------------------------
    @torch.no_grad()
    def draw(self, n: int, seed: int, labels: Tensor | None = None, prefix: Tensor | None = None,
             batch_size: int = 256, **sampling: Any) -> Tensor:
        """n images in [0, 1]; the same seed gives the same images. `prefix` (n, k) fixes the first
        k tokens (completion). Conditional models draw classes 0, 1, 2, ... in turn unless given labels."""
        if self.num_classes and labels is None:
            labels = self.default_labels(n)
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
        return image_grid(cells.flatten(0, 1).cpu(), 2 + tries)

    def log_samples(self, writer: SummaryWriter | None, step: int, sample_dir: Path) -> None:
        if not self.tokenizer_ready():
            return
        super().log_samples(writer, step, sample_dir)  # the fixed-seed grid
        h = self.hparams
        val_images = self._helpers.get("val_images")
        if h.completions and val_images is not None:
            completions = self.completion_grid(val_images[: h.completions], h.sample_seed)
            save_image(completions, sample_dir / f"completion_step_{step:07d}.png")
            if writer is not None:
                writer.add_image("samples/completions", completions, step)
