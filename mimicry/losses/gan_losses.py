"""GAN losses: the discriminator imitates real/fake labels, the generator imitates "real" through it.

Every loss takes raw discriminator outputs (logits or critic scores, shape (B,)) and returns a
scalar to *minimise*. A loss also declares what it needs, so the task never branches on its name:
`default_d_steps` (critic steps per generator step), `default_betas` (Adam), which gradient
penalties it adds (`penalties`), and `verdict` (how a logit is shown as "D(x)").

R1 may be lazy (StyleGAN2): `r1_every=N` adds N times the penalty on every Nth D step only,
the same expected gradient for about 1/N of its cost (the second-order backward is what costs).

Formulas (REFERENCES.md), with r = D(x), f = D(G(z)):
    ns       D: softplus(-r) + softplus(f)        G: softplus(-f)
    minimax  D: softplus(-r) + softplus(f)        G: -softplus(f)       (= log(1 - sigmoid(f)))
    hinge    D: relu(1 - r) + relu(1 + f)         G: -f
    wgan_gp  D: f - r + 10 (||grad D(x_hat)|| - 1)^2                    G: -f
    lsgan    D: 1/2 (r - 1)^2 + 1/2 f^2            G: 1/2 (f - 1)^2
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mimicry.errors import MimicryError

Critic = Callable[[Tensor], Tensor]  # images -> one score per image


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: mean (||grad critic(x_hat)|| - 1)^2 at random points x_hat between real and fake."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    interpolates = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    return (grads.flatten(1).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(critic: Critic, real: Tensor, gamma: float) -> Tensor:
    """R1 (Mescheder et al. 2018): (gamma / 2) * mean ||grad critic(x)||^2 on real images."""
    real = real.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
    return 0.5 * gamma * grads.flatten(1).pow(2).sum(dim=1).mean()


class GANLoss:
    """Base class: shared options and the gradient penalties any loss may add to D's loss."""

    default_d_steps: int = 1
    default_betas: tuple[float, float] = (0.5, 0.999)  # DCGAN's Adam betas
    decision_boundary: float = 0.0  # a logit above it means "D says real"

    def __init__(self, gp_weight: float = 0.0, r1_gamma: float = 0.0, r1_every: int = 1):
        if int(r1_every) != r1_every or r1_every < 1:
            raise MimicryError(f"loss.r1_every={r1_every}: give a whole number of D steps >= 1 (1 = R1 on every step)")
        self.gp_weight, self.r1_gamma, self.r1_every = gp_weight, r1_gamma, int(r1_every)

    @property
    def penalties(self) -> tuple[str, ...]:
        """Gradient penalties added to D's loss: "gp" (interpolates), "r1" (real images)."""
        return tuple(name for name, weight in (("gp", self.gp_weight), ("r1", self.r1_gamma)) if weight > 0)

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def generator(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def regularizer(self, critic: Critic, real: Tensor, fake: Tensor, d_step: int = 0) -> Tensor:
        """Sum of the declared penalties (zero when there are none); `d_step` counts D's steps, for lazy R1."""
        total = real.new_zeros(())
        if self.gp_weight > 0:
            total = total + self.gp_weight * gradient_penalty(critic, real, fake)
        if self.r1_gamma > 0 and d_step % self.r1_every == 0:
            total = total + self.r1_every * r1_penalty(critic, real, self.r1_gamma)
        return total

    def verdict(self, logits: Tensor) -> Tensor:
        """What D says about an image, as logged in gan/d_real and gan/d_fake (here: the raw score)."""
        return logits

    def d_accuracy(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Share of real called real and fake called fake."""
        correct = torch.cat([real_logits > self.decision_boundary, fake_logits <= self.decision_boundary])
        return correct.float().mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gp_weight={self.gp_weight}, r1_gamma={self.r1_gamma}, r1_every={self.r1_every})"


class NonSaturating(GANLoss):
    """Goodfellow et al. 2014, the practical form: G maximises log D(G(z)) (strong gradient when losing)."""

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()

    def generator(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean()

    def verdict(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)  # D's probability that the image is real


class Minimax(NonSaturating):
    """The original: G minimises log(1 - D(G(z))). Its gradient vanishes exactly when D wins."""

    def generator(self, fake_logits: Tensor) -> Tensor:
        return -F.softplus(fake_logits).mean()


class Hinge(GANLoss):
    """Hinge loss (SNGAN, BigGAN): D only learns from images inside the margin."""

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def generator(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()


class Wasserstein(GANLoss):
    """WGAN-GP (Gulrajani et al. 2017): a 1-Lipschitz critic via a gradient penalty, 5 critic steps per G step.

    No BatchNorm in the critic: the penalty is on per-image gradients, which BatchNorm couples.
    """

    default_d_steps = 5
    default_betas = (0.0, 0.9)

    def __init__(self, gp_weight: float = 10.0, r1_gamma: float = 0.0, r1_every: int = 1):
        super().__init__(gp_weight=gp_weight, r1_gamma=r1_gamma, r1_every=r1_every)

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def generator(self, fake_logits: Tensor) -> Tensor:
        return -fake_logits.mean()

    def d_accuracy(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        # A critic's scores have no fixed zero (any shift gives the same loss): split at the midpoint.
        boundary = 0.5 * (real_logits.mean() + fake_logits.mean())
        correct = torch.cat([real_logits > boundary, fake_logits <= boundary])
        return correct.float().mean()


class LeastSquares(GANLoss):
    """LSGAN (Mao et al. 2017): regress D(x) to 1 and D(G(z)) to 0; G regresses D(G(z)) to 1."""

    decision_boundary = 0.5  # halfway between the targets 0 and 1

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return 0.5 * (real_logits - 1).pow(2).mean() + 0.5 * fake_logits.pow(2).mean()

    def generator(self, fake_logits: Tensor) -> Tensor:
        return 0.5 * (fake_logits - 1).pow(2).mean()
