"""GAN losses against the formulas in REFERENCES.md, on hand-made logits."""

import math

import pytest
import torch

from mimicry.losses.gan_losses import (
    Hinge,
    LeastSquares,
    Minimax,
    NonSaturating,
    Wasserstein,
    gradient_penalty,
    r1_penalty,
)

REAL = torch.tensor([2.0, -1.0, 0.5])  # D(x)
FAKE = torch.tensor([0.5, -3.0, 1.5])  # D(G(z))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_non_saturating_matches_formula():
    loss = NonSaturating()
    d = mean(softplus(-r) for r in REAL.tolist()) + mean(softplus(f) for f in FAKE.tolist())
    g = mean(softplus(-f) for f in FAKE.tolist())
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_minimax_generator_is_log_one_minus_d():
    loss = Minimax()
    g = mean(math.log(1 - 1 / (1 + math.exp(-f))) for f in FAKE.tolist())  # mean log(1 - sigmoid(f))
    assert loss.generator(FAKE).item() == pytest.approx(g, rel=1e-6)
    assert loss.generator(FAKE).item() < 0
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(NonSaturating().discriminator(REAL, FAKE).item())


def test_minimax_gradient_vanishes_when_d_wins_but_non_saturating_does_not():
    confident_fake = torch.tensor([-12.0], requires_grad=True)  # D is sure this fake is fake
    (minimax_grad,) = torch.autograd.grad(Minimax().generator(confident_fake), confident_fake)
    (ns_grad,) = torch.autograd.grad(NonSaturating().generator(confident_fake), confident_fake)
    assert abs(minimax_grad.item()) < 1e-4
    assert ns_grad.item() == pytest.approx(-1.0, abs=1e-4)


def test_hinge_matches_formula_and_is_zero_outside_margin():
    loss = Hinge()
    d = mean(max(0.0, 1 - r) for r in REAL.tolist()) + mean(max(0.0, 1 + f) for f in FAKE.tolist())
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx(-mean(FAKE.tolist()), rel=1e-6)
    assert loss.discriminator(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -5.0])).item() == 0.0


def test_wasserstein_matches_formula_and_declares_its_needs():
    loss = Wasserstein()
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(mean(FAKE.tolist()) - mean(REAL.tolist()))
    assert loss.generator(FAKE).item() == pytest.approx(-mean(FAKE.tolist()))
    assert loss.penalties == ("gp",) and loss.gp_weight == 10.0
    assert loss.default_d_steps == 5 and loss.default_betas == (0.0, 0.9)
    assert NonSaturating().penalties == () and NonSaturating().default_d_steps == 1


def test_least_squares_matches_formula():
    loss = LeastSquares()
    d = 0.5 * mean((r - 1) ** 2 for r in REAL.tolist()) + 0.5 * mean(f**2 for f in FAKE.tolist())
    g = 0.5 * mean((f - 1) ** 2 for f in FAKE.tolist())
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx(g, rel=1e-6)
    assert loss.discriminator(torch.ones(3), torch.zeros(3)).item() == 0.0


@pytest.mark.parametrize("loss", [NonSaturating(), Minimax(), Hinge(), Wasserstein(), LeastSquares()])
def test_signs_generator_wants_higher_fake_scores_discriminator_lower(loss):
    # Scores inside every loss's active region (hinge margins, LSGAN targets 0 and 1).
    real = torch.tensor([0.8, -1.0, 0.5], requires_grad=True)
    fake = torch.tensor([0.5, 0.3, 0.2], requires_grad=True)
    d_real_grad, d_fake_grad = torch.autograd.grad(loss.discriminator(real, fake), (real, fake))
    (g_fake_grad,) = torch.autograd.grad(loss.generator(fake), fake)
    assert (g_fake_grad < 0).all()  # descending G's loss raises D(G(z)): "look real"
    assert (d_fake_grad > 0).all()  # descending D's loss lowers D(G(z)): "call fakes fake"
    assert (d_real_grad < 0).all()  # ... and raises D(x)


def test_d_accuracy():
    assert NonSaturating().d_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([-2.0, 3.0])).item() == 0.5
    assert LeastSquares().d_accuracy(torch.tensor([0.9, 0.4]), torch.tensor([0.1, 0.2])).item() == 0.75
    # A critic's scores have no fixed zero: shifting them all does not change its accuracy.
    assert Wasserstein().d_accuracy(torch.tensor([11.0, 12.0]), torch.tensor([9.0, 8.0])).item() == 1.0


def linear_critic(weight: torch.Tensor):
    return lambda images: images.flatten(1) @ weight


def test_gradient_penalty_is_zero_for_unit_linear_critic_and_grows_with_slope():
    torch.manual_seed(0)
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    unit = torch.randn(16)
    unit = unit / unit.norm()
    assert gradient_penalty(linear_critic(unit), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(linear_critic(3 * unit), real, fake).item() == pytest.approx(4.0, rel=1e-5)  # (3-1)^2


def test_gradient_penalty_reaches_the_critic_parameters():
    weight = torch.full((16,), 0.5, requires_grad=True)  # norm 2: penalty (2 - 1)^2 = 1
    penalty = gradient_penalty(linear_critic(weight), torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4))
    (grad,) = torch.autograd.grad(penalty, weight)
    assert penalty.item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(grad, 2 * (2 - 1) * weight / 2)  # d/dw (||w|| - 1)^2 = 2(||w|| - 1) w/||w||


def test_r1_penalty_for_linear_critic():
    weight = torch.arange(1.0, 17.0)
    real = torch.randn(5, 1, 4, 4)
    assert r1_penalty(linear_critic(weight), real, gamma=10.0).item() == pytest.approx(5.0 * weight.pow(2).sum().item())


def test_regularizer_sums_the_declared_penalties():
    weight = 3 * torch.eye(16)[0]  # gradient norm 3 everywhere
    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    assert NonSaturating().regularizer(linear_critic(weight), real, fake).item() == 0.0
    assert Wasserstein().regularizer(linear_critic(weight), real, fake).item() == pytest.approx(10 * 4.0)
    both = Hinge(gp_weight=1.0, r1_gamma=2.0)
    assert both.penalties == ("gp", "r1")
    assert both.regularizer(linear_critic(weight), real, fake).item() == pytest.approx(4.0 + 9.0)


@pytest.mark.parametrize("loss", [NonSaturating(), Minimax(), Hinge(), Wasserstein(), LeastSquares()],
                         ids=["ns", "minimax", "hinge", "wgan_gp", "lsgan"])
def test_a_swapped_real_fake_label_would_be_caught(loss):
    # A discriminator that is right (reals high, fakes low) must score a lower D loss than one that
    # has the labels the wrong way round; a generator whose fakes D calls real must score a lower G loss.
    high, low = torch.tensor([0.9, 0.7, 0.8]), torch.tensor([-0.3, -0.6, -0.1])  # either side of every boundary
    assert loss.discriminator(high, low).item() < loss.discriminator(low, high).item() - 0.1
    assert loss.generator(high).item() < loss.generator(low).item() - 0.1
    # D's accuracy agrees: all right one way round, all wrong the other.
    assert loss.d_accuracy(high, low).item() == 1.0 and loss.d_accuracy(low, high).item() == 0.0
