"""Offline image metrics from our own feature net (a `CNNClassifier`): nothing is downloaded.

Features are the net's `metric_features`: an earlier layer's pooled activations (strokes and
shapes) beside the penultimate ones (mostly the class), so that images of one class that are
all the same look different from varied ones. From those features:
- FID and KID (torchmetrics, given features we computed once),
- precision / recall (Kynkäänniemi et al. 2019, k=3): is each fake inside the real manifold
  (union of k-NN balls around real points), and each real inside the fake one,
- density / coverage (Naeem et al. 2020, k=5): how many real balls a fake falls in (averaged,
  ≈1 for matched sets), and the share of real balls that hold at least one fake.
From predictions over the fakes: class entropy (nats), classes covered, mean confidence; a
collapsing generator shows low entropy and few classes first.
Within each predicted class (sameness inside a class, which class coverage cannot see):
- within_class_diversity: mean pairwise feature distance among fakes of a class, relative to
  the same for real images of that class (≈1 for real-like variety, →0 when one image repeats),
- class_recall: recall computed class by class and averaged (a missing class counts 0).

Distances are computed from differences (mimicry/metrics/distances.py), so results do not
depend on the machine's matrix-product rounding.

FID depends on the sample count: compare numbers computed with the same counts, and report
a real-vs-real floor alongside.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from mimicry.errors import MimicryError
from mimicry.metrics.distances import pairwise_distances


class _Precomputed(nn.Module):
    """Identity 'extractor' so torchmetrics can take features we already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


@torch.no_grad()
def extract(images: Tensor, feature_net: nn.Module, value_range: str = "signed", batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Metric features (N, D) and class probabilities (N, K) of images, on CPU, net in eval mode."""
    was_training = feature_net.training
    feature_net.eval()
    device = next(feature_net.parameters()).device
    features, probs = [], []
    for chunk in images.split(batch_size):
        x = chunk.to(device).float()
        x = x if value_range == "signed" else x * 2 - 1  # the feature net reads [-1, 1]
        f, logits = feature_net.metric_features(x)
        features.append(f.float().cpu())
        probs.append(logits.float().softmax(dim=1).cpu())
    feature_net.train(was_training)
    return torch.cat(features), torch.cat(probs)


def _kth_neighbour_distance(x: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    if len(x) <= k:
        raise MimicryError(f"need more than k={k} samples for k-NN radii, got {len(x)}")
    out = []
    for start in range(0, len(x), chunk):
        d = pairwise_distances(x[start : start + chunk], x)
        rows = torch.arange(len(d))
        d[rows, rows + start] = float("inf")  # a point is not its own neighbour
        out.append(d.kthvalue(k, dim=1).values)
    return torch.cat(out)


def _ball_counts(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """For each point: how many balls B(centre_i, radius_i) contain it."""
    counts = [(pairwise_distances(p, centres) <= radii[None]).sum(dim=1) for p in points.split(chunk)]
    return torch.cat(counts)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019 on feature vectors."""
    precision = (_ball_counts(fake, real, _kth_neighbour_distance(real, k)) > 0).float().mean()
    recall = (_ball_counts(real, fake, _kth_neighbour_distance(fake, k)) > 0).float().mean()
    return precision.item(), recall.item()


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> tuple[float, float]:
    """Naeem et al. 2020 on feature vectors; only real points define balls (robust to fake outliers)."""
    radii = _kth_neighbour_distance(real, k)
    density = _ball_counts(fake, real, radii).float().sum() / (k * len(fake))
    nearest_fake = torch.cat([pairwise_distances(r, fake).min(dim=1).values for r in real.split(1024)])
    coverage = (nearest_fake <= radii).float().mean()
    return density.item(), coverage.item()


def _mean_pairwise_distance(x: Tensor) -> float:
    """Mean distance between distinct rows of x (needs at least 2 rows)."""
    n = len(x)
    return float(pairwise_distances(x, x).sum() / (n * (n - 1)))


def within_class(real: Tensor, real_probs: Tensor, fake: Tensor, fake_probs: Tensor, k: int = 3) -> dict[str, float]:
    """Sameness inside a class, with classes as the feature net predicts them for both sets.

    within_class_diversity: mean over classes (≥2 real and ≥2 fake images) of the fakes' mean
    pairwise feature distance over the real images' (0 if no class qualifies).
    class_recall: mean over classes with more than k real images of the share of real images
    of that class inside the fakes' k-NN balls of that class (0 for a class with ≤k fakes).
    """
    real_class, fake_class = real_probs.argmax(dim=1), fake_probs.argmax(dim=1)
    ratios, recalls = [], []
    for c in range(real_probs.shape[1]):
        r, f = real[real_class == c], fake[fake_class == c]
        if len(r) >= 2 and len(f) >= 2:
            ratios.append(_mean_pairwise_distance(f) / max(_mean_pairwise_distance(r), 1e-12))
        if len(r) > k:
            inside = (_ball_counts(r, f, _kth_neighbour_distance(f, k)) > 0).float().mean().item() if len(f) > k else 0.0
            recalls.append(inside)
    return {"within_class_diversity": sum(ratios) / len(ratios) if ratios else 0.0,
            "class_recall": sum(recalls) / len(recalls) if recalls else 0.0}


def class_coverage(probs: Tensor) -> dict[str, float]:
    """Entropy (nats) of the predicted-class histogram, classes that appear, and mean confidence."""
    predicted = probs.argmax(dim=1)
    share = torch.bincount(predicted, minlength=probs.shape[1]).float() / len(predicted)
    nonzero = share[share > 0]
    return {
        "class_entropy": float(-(nonzero * nonzero.log()).sum()),
        "classes_covered": float(len(nonzero)),
        "confidence": float(probs.max(dim=1).values.mean()),
    }


def fid_kid(real: Tensor, fake: Tensor, kid_subsets: int = 20, seed: int = 0) -> tuple[float, float]:
    """FID and KID (mean over random subsets) between two feature sets."""
    dim = real.shape[1]
    fid = FrechetInceptionDistance(feature=_Precomputed(dim))
    subset_size = min(1000, len(real), len(fake))  # KID refuses subsets larger than the sets
    if subset_size < 2:
        raise MimicryError(f"KID needs at least 2 real and 2 fake samples, got {len(real)} and {len(fake)}")
    with warnings.catch_warnings():  # it warns that it keeps all features: that is the point here
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(dim), subsets=kid_subsets, subset_size=subset_size)
    for metric in (fid, kid):
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
    with torch.random.fork_rng():  # KID draws its subsets from the global generator
        torch.manual_seed(seed)
        kid_mean, _ = kid.compute()
    return max(float(fid.compute()), 0.0), float(kid_mean)


def image_metrics(
    real: Tensor, fake: Tensor, feature_net: nn.Module, value_range: str = "signed", batch_size: int = 500
) -> dict[str, float]:
    """All metrics for generated `fake` images against `real` ones (both (N, C, H, W) in `value_range`)."""
    real_features, real_probs = extract(real, feature_net, value_range, batch_size)
    fake_features, fake_probs = extract(fake, feature_net, value_range, batch_size)
    fid, kid = fid_kid(real_features, fake_features)
    precision, recall = precision_recall(real_features, fake_features, k=3)
    density, coverage = density_coverage(real_features, fake_features, k=5)
    return {
        "fid": fid,
        "kid": kid,
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        **class_coverage(fake_probs),
        **within_class(real_features, real_probs, fake_features, fake_probs),
    }
