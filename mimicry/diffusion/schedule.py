"""Noise schedules and the conversions between what a denoiser can predict (eps, x0, v).

Discrete time t = 0 .. T-1. Noising is q(x_t | x_0) = N(√ᾱ_t · x_0, (1 − ᾱ_t) I), with ᾱ falling
from about 1 (t = 0, almost clean) to about 0 (t = T-1, almost pure noise). Every schedule is
defined by its ᾱ; the per-step β_t = 1 − ᾱ_t / ᾱ_{t-1} is clipped at 0.999 (as in improved DDPM)
and ᾱ rebuilt from it, so ᾱ is strictly positive and never increases whatever the formula.

With a = √ᾱ_t and s = √(1 − ᾱ_t):   x_t = a·x0 + s·eps,   v = a·eps − s·x0.
Then x0 = a·x_t − s·v and eps = s·x_t + a·v (a² + s² = 1), which is why v-prediction is
well behaved at both ends of the schedule.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mimicry.errors import MimicryError

SCHEDULES = ("linear", "cosine", "sigmoid")
PARAMETERIZATIONS = ("eps", "x0", "v")


def alpha_bar_curve(kind: str, T: int, cosine_s: float = 0.008, sigmoid_range: tuple[float, float] = (-3.0, 3.0),
                    sigmoid_tau: float = 1.0) -> Tensor:
    """ᾱ_t for t = 0 .. T-1 (float64), before clipping."""
    if kind == "linear":
        # DDPM's β from 1e-4 to 0.02 at T=1000; scaled by 1000/T so that a short T still ends in noise.
        scale = 1000 / T
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64).clamp(max=0.999)
        return torch.cumprod(1 - betas, 0)
    steps = torch.arange(0, T + 1, dtype=torch.float64) / T  # continuous time u in [0, 1]
    if kind == "cosine":  # Nichol & Dhariwal 2021: f(u) = cos²((u + s) / (1 + s) · π/2)
        f = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
    elif kind == "sigmoid":  # Chen 2023 / Jabri 2022: a sigmoid over [start, end], rescaled to [0, 1]
        start, end = sigmoid_range
        v_start, v_end = torch.sigmoid(torch.tensor(start / sigmoid_tau)), torch.sigmoid(torch.tensor(end / sigmoid_tau))
        f = (v_end - torch.sigmoid((steps * (end - start) + start) / sigmoid_tau)) / (v_end - v_start)
    else:
        raise MimicryError(f"schedule={kind!r} is not one of {', '.join(SCHEDULES)}")
    return f[1:] / f[0]  # ᾱ at u = (t+1)/T for t = 0 .. T-1


class NoiseSchedule(nn.Module):
    """ᾱ_t and everything derived from it, as buffers that follow the model's device.

    The buffers are not saved in checkpoints: the schedule is rebuilt from its settings.
    """

    def __init__(self, kind: str = "cosine", timesteps: int = 1000, max_beta: float = 0.999):
        super().__init__()
        if timesteps < 2:
            raise MimicryError(f"timesteps={timesteps}: a diffusion needs at least 2 noise levels (1000 is usual)")
        self.kind, self.T = kind, int(timesteps)
        curve = alpha_bar_curve(kind, self.T)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), curve[:-1]])
        betas = (1 - curve / previous).clamp(min=0.0, max=max_beta)
        alpha_bar = torch.cumprod(1 - betas, 0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)

    # ---- per-t coefficients, shaped to broadcast against images ---------------------------------
    def _at(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        return values[t].view(-1, *([1] * (like.dim() - 1)))

    def signal_noise(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(a, s) = (√ᾱ_t, √(1 − ᾱ_t)), broadcastable against ``like``."""
        ab = self._at(self.alpha_bar, t, like)
        return ab.sqrt(), (1 - ab).sqrt()

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ᾱ / (1 − ᾱ) of each t (shape of t)."""
        ab = self.alpha_bar[t]
        return ab / (1 - ab)

    # ---- the forward process ---------------------------------------------------------------------
    def sample_t(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One noise level per example, uniform over 0 .. T-1."""
        return torch.randint(0, self.T, (len(x0),), generator=generator, device=x0.device)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """A draw of x_t ~ q(x_t | x_0) given the noise: √ᾱ_t · x0 + √(1 − ᾱ_t) · eps."""
        a, s = self.signal_noise(t, x0)
        return a * x0 + s * noise

    # ---- conversions between eps, x0 and v (exact; one place) ------------------------------------
    def target(self, kind: str, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What a denoiser of this parameterization should output for (x0, noise, t)."""
        if kind == "eps":
            return noise
        if kind == "x0":
            return x0
        if kind == "v":
            a, s = self.signal_noise(t, x0)
            return a * noise - s * x0
        raise MimicryError(f"prediction {kind!r} is not one of {', '.join(PARAMETERIZATIONS)}")

    def to_x0(self, kind: str, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The clean image implied by a prediction of the given kind at (x_t, t)."""
        a, s = self.signal_noise(t, x_t)
        if kind == "eps":
            return (x_t - s * prediction) / a
        if kind == "x0":
            return prediction
        if kind == "v":
            return a * x_t - s * prediction
        raise MimicryError(f"prediction {kind!r} is not one of {', '.join(PARAMETERIZATIONS)}")

    def to_eps(self, kind: str, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The noise implied by a prediction of the given kind at (x_t, t)."""
        a, s = self.signal_noise(t, x_t)
        if kind == "eps":
            return prediction
        if kind == "x0":
            return (x_t - a * prediction) / s
        if kind == "v":
            return s * x_t + a * prediction
        raise MimicryError(f"prediction {kind!r} is not one of {', '.join(PARAMETERIZATIONS)}")

    def eps_from_x0(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return self.to_eps("x0", x0, x_t, t)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, T={self.T}"
