"""A class-conditional GAN must draw the asked-for class, and many different images of it.

The judge is independent of the models and of the feature net: nearest class mean in pixel
space (it labels 90% of real digits right), and mean pairwise pixel distance within a class,
relative to real images of that class. Before the generator's BatchNorms were made
class-conditional, a label vector concatenated to z made every z of a class give nearly the same
image: this test measured a within-class diversity of 0.20 then (0.70 after), with the class right.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch

from mimicry.data.images import DigitsDataModule
from mimicry.metrics.distances import pairwise_distances
from mimicry.tasks.gan import GenerativeAdversarial


def mean_pairwise_distance(images: torch.Tensor) -> float:
    x = images.flatten(1)
    return float(pairwise_distances(x, x).sum() / (len(x) * (len(x) - 1)))


def test_conditional_gan_draws_the_asked_for_digit_in_many_forms():
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=64, value_range="signed")
    data.setup()
    model = {"generator": {"_target_": "mimicry.models.mlp_gan.MLPGenerator", "latent_dim": 16, "width": 64},
             "discriminator": {"_target_": "mimicry.models.mlp_gan.MLPDiscriminator", "width": 64}}
    optim = {"lr": 1e-3, "d_lr": 1e-3, "betas": None, "weight_decay": 0.0, "warmup_steps": 0}
    task = GenerativeAdversarial(model, {"_target_": "mimicry.losses.gan_losses.NonSaturating"}, optim, data.spec(),
                                 conditional=True, metrics_every_n_epochs=0, ema_decay=0)
    pl.Trainer(max_steps=300, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, limit_val_batches=0).fit(task, datamodule=data)

    real, labels = (data.train_images() + 1) / 2, data.train_labels()  # [0, 1], as draw() returns
    class_means = torch.stack([real[labels == c].mean(dim=0) for c in range(10)]).flatten(1)
    asked = torch.arange(10).repeat_interleave(50)
    fakes = task.draw(len(asked), seed=1, labels=asked)

    judged = pairwise_distances(fakes.flatten(1), class_means).argmin(dim=1)
    assert (judged == asked).float().mean() > 0.8  # the asked-for digit (real digits: 0.90)
    diversity = [mean_pairwise_distance(fakes[asked == c]) / mean_pairwise_distance(real[labels == c])
                 for c in range(10)]
    assert sum(diversity) / 10 > 0.5  # many forms of it: within-class variety near that of real digits
    assert min(diversity) > 0.25  # ... in every class, not one image per class in some
