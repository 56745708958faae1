"""Sanity of the offline image metrics with a feature net fitted briefly on digits."""

from __future__ import annotations

import pytest
import torch

from image_fixtures import digits_fixture, feature_net_fixture  # noqa: F401  (pytest fixtures)
from mimicry.data.images import DigitsDataModule
from mimicry.metrics.distances import nearest, pairwise_distances
from mimicry.metrics.image_quality import density_coverage, extract, image_metrics, precision_recall, within_class
from mimicry.metrics.memorization import memorization
from mimicry.models.cnn_classifier import CNNClassifier


def test_feature_net_learns(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    _, probs = extract(digits.val_images(), feature_net)
    accuracy = (probs.argmax(dim=1) == digits.val_labels()).float().mean()
    assert accuracy > 0.8
    assert feature_net.features(digits.val_images()[:4]).shape == (4, feature_net.num_features)
    features, logits = feature_net.metric_features(digits.val_images()[:4])
    width = feature_net.num_features // 4
    assert features.shape == (4, 2 * width * 4 + 4 * width) and logits.shape == (4, 10)  # early 2x2 grid + penultimate


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
    # Exact distances: each fake sits at distance 0.0 from its real twin, inside every k-NN ball.
    assert metrics["precision"] == 1 and metrics["recall"] == 1 and metrics["coverage"] == 1
    assert metrics["class_recall"] == 1 and metrics["within_class_diversity"] == pytest.approx(1, rel=1e-5)
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


def test_one_image_per_class_scores_clearly_worse_than_varied_images(digits: DigitsDataModule,
                                                                      feature_net: CNNClassifier) -> None:
    """A conditional generator that draws the same 7 every time covers all ten classes; the
    within-class numbers (and FID on features that keep more than the class) must still see it."""
    train, labels = digits.train_images(), digits.train_labels()
    reference = digits.val_images()  # images the feature net did not train on
    varied = train[:500]
    _, probs = extract(train, feature_net)
    one_per_class = train[probs.argmax(dim=0)]  # per class, the image the net is surest of
    repeated = one_per_class[labels[:500]]  # the same class mix, one image per class
    good, collapsed = image_metrics(reference, varied, feature_net), image_metrics(reference, repeated, feature_net)
    assert good["classes_covered"] == collapsed["classes_covered"] == 10  # class coverage is blind to it
    assert collapsed["within_class_diversity"] < 0.05 < 0.6 < good["within_class_diversity"]
    assert collapsed["class_recall"] < 0.05 < 0.6 < good["class_recall"]
    assert collapsed["fid"] > 2 * good["fid"] and collapsed["recall"] < 0.1 < 0.6 < good["recall"]


def test_knn_radii_precision_recall_on_points_with_known_answers() -> None:
    # On a line (exact integer distances): real radius_k = distance to the k-th nearest other real point.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[5.0], [6.0], [7.0], [8.0]])
    # k=1: every radius is 1; the nearest real to any fake is 2 away: nothing is inside.
    assert precision_recall(real, fake, k=1) == (0.0, 0.0)
    # k=3: real radii 3, 2, 2, 3: fakes 5 (2 from 3) and 6 (3 from 3, on the boundary) are in, 7 and 8 not;
    # the fakes' radii mirror that, so reals 3 and 2 are in.
    assert precision_recall(real, fake, k=3) == (0.5, 0.5)


def test_density_and_coverage_formula_on_points() -> None:
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # k=2: real radii 2, 1, 1, 2. The fake 1.5 lies in all 4 balls: density = 4 / (k·M) = 4 / 2.
    assert density_coverage(real, torch.tensor([[1.5]]), k=2) == pytest.approx((2.0, 1.0))
    # k=3: radii 3, 2, 2, 3: still 4 balls, now divided by 3.
    assert density_coverage(real, torch.tensor([[1.5]]), k=3) == pytest.approx((4 / 3, 1.0))
    # A fake at 3.5 (k=2): inside the ball of 3 only (0.5 ≤ 2; 1.5 from 2 > 1): density 1/2, covers 1 real of 4.
    assert density_coverage(real, torch.tensor([[3.5]]), k=2) == pytest.approx((0.5, 0.25))


def test_within_class_on_points() -> None:
    one_hot = lambda classes: torch.nn.functional.one_hot(torch.tensor(classes), 2).float()  # noqa: E731
    real = torch.tensor([[0.0, 0], [2, 0], [0, 10], [0, 14], [0, 12], [0, 16]])
    real_probs = one_hot([0, 0, 1, 1, 1, 1])
    fake = torch.tensor([[0.0, 0], [1, 0], [0, 10], [0, 10]])
    fake_probs = one_hot([0, 0, 1, 1])
    scores = within_class(real, real_probs, fake, fake_probs, k=1)
    # class 0: fakes 1 apart vs reals 2 apart → 0.5; class 1: identical fakes → 0.
    assert scores["within_class_diversity"] == pytest.approx(0.25)
    # class 0 (2 reals > k): fake radii 1; real 0 (0 away) and real 2 (1 away) are inside → 1.
    # class 1: the two identical fakes have radius 0; only the real at 10 is inside → 1/4. Mean: 0.625.
    assert scores["class_recall"] == pytest.approx(0.625)


def test_nearest_is_exact_where_the_matrix_product_rounds() -> None:
    # Large values: ‖a‖² − 2a·b + ‖b‖² loses about ‖a‖·1e-3 here, which the copy rule would feel.
    bank = 1000 + torch.rand(300, 256, generator=torch.Generator().manual_seed(0))
    distance, index = nearest(bank[5:15], bank)
    assert distance.tolist() == [0.0] * 10 and index.tolist() == list(range(5, 15))
    distance, index = nearest(bank[:10], bank, exclude_self=True)
    assert (distance > 0).all() and not (index == torch.arange(10)).any()
    exact = pairwise_distances(bank[:10], bank)
    exact[torch.arange(10), torch.arange(10)] = float("inf")
    assert torch.allclose(distance, exact.min(dim=1).values, rtol=1e-5)
    assert pairwise_distances(bank[:3], bank[:3]).diagonal().tolist() == [0.0] * 3


def test_memorization_copies_and_new_images(digits: DigitsDataModule, feature_net: CNNClassifier) -> None:
    train = digits.train_images()
    copies = memorization(train[:10], train, feature_net, n_show=4)
    # Exact by construction (differences, not a matrix product): 0.0 on every machine.
    assert copies["copy_rate"] == 1.0 and copies["nearest_distance"] == 0.0
    grid = copies["grid"]
    assert grid.shape[0] == 3 and 0 <= grid.min() and grid.max() <= 1
    # 4 rows × 3 columns of 16-pixel images, 1-pixel padding
    assert grid.shape[1:] == (4 * 17 + 1, 3 * 17 + 1)

    fresh = memorization(digits.val_images()[:50], train)  # held-out digits: real, but not copies
    assert fresh["copy_rate"] < 0.2 and fresh["grid"].shape[2] == 2 * 17 + 1  # no feature column
