"""Sanity of the offline image metrics with a feature net fitted briefly on digits."""

from __future__ import annotations

import pytest
import torch

from image_fixtures import digits_fixture, feature_net_fixture  # noqa: F401  (pytest fixtures)
from mimicry.data.images import DigitsDataModule
from mimicry.metrics.image_quality import extract, image_metrics, precision_recall
from mimicry.metrics.memorization import memorization
from mimicry.models.cnn_classifier import CNNClassifier


def test_feature_net_learns(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    _, probs = extract(digits.val_images(), feature_net)
    accuracy = (probs.argmax(dim=1) == digits.val_labels()).float().mean()
    assert accuracy > 0.8
    assert feature_net.features(digits.val_images()[:4]).shape == (4, feature_net.num_features)


def _noise_like(images: torch.Tensor) -> torch.Tensor:
    return torch.rand(images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_identical_sets(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    real = digits.val_images()
    metrics = image_metrics(real, real.clone(), feature_net)
    assert set(metrics) >= {"fid", "kid", "precision", "recall", "density", "coverage",
                            "class_entropy", "classes_covered", "confidence"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["fid"] == pytest.approx(0, abs=1e-3)
    # The unbiased MMD estimator of a set against itself is -(2/m)(mean k(x,x) - mean k(x,y)) ≤ 0: tiny and negative.
    assert metrics["kid"] <= 1e-9
    assert metrics["precision"] == 1 and metrics["recall"] == 1 and metrics["coverage"] == 1
    assert metrics["classes_covered"] == 10


def test_real_vs_real_is_close_and_noise_is_far(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    train = digits.train_images()
    half = len(train) // 2
    real_a, real_b = train[:half], train[half:]  # two disjoint halves of one distribution
    noise = _noise_like(real_b)
    same = image_metrics(real_a, real_b, feature_net)
    different = image_metrics(real_a, noise, feature_net)
    assert same["fid"] < 0.1 * different["fid"]
    assert same["kid"] < 0.1 * different["kid"]
    assert same["precision"] > 0.7 and same["recall"] > 0.7 and same["coverage"] > 0.7
    # Not precision: a few real outliers have wide k-NN balls that let noise in; density discounts them.
    assert different["density"] < 0.5 * same["density"] and different["coverage"] < 0.1
    assert same["class_entropy"] > 2.0  # ten digits, near uniform: ln 10 ≈ 2.30


def test_unit_range_input_matches_signed(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    signed = digits.val_images()
    f_signed, _ = extract(signed, feature_net, value_range="signed")
    f_unit, _ = extract((signed + 1) / 2, feature_net, value_range="unit")
    assert torch.allclose(f_signed, f_unit, atol=1e-5)


def test_mode_collapse_shows_in_class_coverage(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    real = digits.val_images()
    collapsed = real[:1].repeat(100, 1, 1, 1)  # one image, a hundred times
    metrics = image_metrics(real, collapsed, feature_net)
    assert metrics["classes_covered"] == 1 and metrics["class_entropy"] == pytest.approx(0)
    assert metrics["recall"] < 0.2 and metrics["coverage"] < 0.2


def test_precision_recall_on_points() -> None:
    real = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    far = real + 100.0
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, far) == (0.0, 0.0)


def test_memorization_copies_and_new_images(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    train = digits.train_images()
    copies = memorization(train[:10], train, feature_net, n_show=4)
    assert copies["copy_rate"] == 1.0 and copies["nearest_distance"] == 0
    grid = copies["grid"]
    assert grid.shape[0] == 3 and 0 <= grid.min() and grid.max() <= 1
    # 4 rows × 3 columns of 16-pixel images, 1-pixel padding
    assert grid.shape[1:] == (4 * 17 + 1, 3 * 17 + 1)

    fresh = memorization(digits.val_images()[:50], train)  # held-out digits: real, but not copies
    assert fresh["copy_rate"] < 0.2 and fresh["grid"].shape[2] == 2 * 17 + 1  # no feature column
