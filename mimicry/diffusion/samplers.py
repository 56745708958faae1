"""Samplers: start from pure noise and denoise step by step.

Each sampler is a plain function of a *denoiser* (x_t, t) -> predicted x0 and a NoiseSchedule;
it knows nothing about networks, labels or guidance (see `model_denoiser` for those). All visit
`steps` noise levels from T-1 down to 0 and call the denoiser once per level, so `steps` is the
number of network evaluations; the last one returns the predicted clean image. With fewer steps
than T, `spacing` picks the levels (Lin et al. 2024, "Common diffusion noise schedules and sample
steps are flawed", Table 2), all but `leading` starting at T-1, the pure-noise level of x_T:
- `quadratic`: evenly spaced in √t (DDIM's choice for small images): dense near the clean end,
  where the fine detail is decided (on the 1-D test mixture DPM-Solver++ at 20 steps is 5-20×
  closer to the truth than with `uniform`), coarse near the noisy end.
- `uniform` ("linspace"): evenly spaced in t from T-1 to 0.
- `trailing`: T-1, T-1-T/steps, ...: evenly spaced, stopping T/steps above 0 (the last step goes
  from there straight to the clean image).
- `leading`: ..., 2k, k, 0 with k = T // steps (DDIM's and guided-diffusion's striding): the first
  level is T-k, not T-1, so x_T's noise is read as a slightly less noisy level. Lin et al. call that
  a flaw; for eps-prediction it skips the singular last levels, where x0 = (x_t − √(1−ᾱ)·eps)/√ᾱ
  divides eps's error by √ᾱ ≈ 5e-5 (cosine schedule).

- `ddpm`: ancestral sampling (Ho et al. 2020): x_{t'} ~ q(x_{t'} | x_t, x0̂). With steps < T the
  per-step β are those of the visited levels (respacing, Nichol & Dhariwal 2021).
- `ddim`: x_{t'} = √ᾱ' x0̂ + √(1 − ᾱ' − σ²) epŝ + σ z, σ = η·√((1−ᾱ')/(1−ᾱ) · (1 − ᾱ/ᾱ'))
  (Song et al. 2021). η = 0 is deterministic; η = 1 with all T steps is DDPM again.
- `dpm_solver`: DPM-Solver++ 2M (Lu et al. 2022), a second-order multistep solver of the
  probability-flow ODE in x0-space; good samples in 10-20 steps.

`trajectory`, when given a list, receives (t, x_t, x0̂) on the CPU at every step.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from mimicry.diffusion.schedule import NoiseSchedule
from mimicry.errors import MimicryError

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x_t, t of shape (B,)) -> predicted x0
SAMPLERS = ("ddpm", "ddim", "dpm_solver")
DEFAULT_STEPS = {"ddim": 50, "dpm_solver": 20}  # ddpm: all T
SPACINGS = ("quadratic", "uniform", "trailing", "leading")


def timesteps(T: int, steps: int, spacing: str = "quadratic") -> list[int]:
    """`steps` distinct levels from T-1 down, evenly spaced in t or in √t (see the module's doc)."""
    check_steps(steps, T)
    if spacing not in SPACINGS:
        raise MimicryError(f"spacing={spacing!r} is not one of {', '.join(SPACINGS)}")
    if steps == 1:
        return [T - 1]
    if spacing == "trailing":  # strides of T/steps ≥ 1 round to distinct levels
        return [round(T - i * T / steps) - 1 for i in range(steps)]
    if spacing == "leading":
        return [i * (T // steps) for i in range(steps - 1, -1, -1)]
    u = torch.linspace(1, 0, steps, dtype=torch.float64)
    wanted = ((T - 1) * (u**2 if spacing == "quadratic" else u)).round().long().tolist()
    # Rounding can merge neighbours near t = 0: keep each level at least one above the next.
    levels = [0] * steps
    for i in range(steps - 2, -1, -1):
        levels[i] = min(max(wanted[i], levels[i + 1] + 1), T - 1 - i)
    levels[0] = T - 1
    return levels


def check_steps(steps: int, T: int) -> None:
    if not 1 <= steps <= T:
        raise MimicryError(f"steps={steps}: the model was trained with T={T} noise levels, so sample with "
                           f"1 to {T} steps (e.g. steps=50)")


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # Drawn on the CPU generator and moved: the same seed gives the same images on any device.
    return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


def _levels(schedule: NoiseSchedule, steps: int, spacing: str) -> list[tuple[int, float, float]]:
    """(t, ᾱ_t, ᾱ of the next visited level) for each step; after t = 0 comes the clean image (ᾱ = 1)."""
    ts = timesteps(schedule.T, steps, spacing)
    ab = schedule.alpha_bar.double().cpu()
    return [(t, float(ab[t]), float(ab[ts[i + 1]]) if i + 1 < len(ts) else 1.0) for i, t in enumerate(ts)]


def _denoise(denoise: Denoiser, x: Tensor, t: int, trajectory: list | None) -> Tensor:
    x0 = denoise(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
    if trajectory is not None:
        trajectory.append((t, x.detach().cpu(), x0.detach().cpu()))
    return x0


@torch.no_grad()
def ddpm(denoise: Denoiser, schedule: NoiseSchedule, x: Tensor, steps: int | None = None,
         generator: torch.Generator | None = None, trajectory: list | None = None,
         spacing: str = "quadratic") -> Tensor:
    """Ancestral sampling from x = x_T; `steps` defaults to all T levels."""
    for t, ab, ab_next in _levels(schedule, steps or schedule.T, spacing):
        x0 = _denoise(denoise, x, t, trajectory)
        beta = 1 - ab / ab_next  # this step's β (the visited levels' own when respaced)
        # Posterior q(x_{t'} | x_t, x0): mean is a blend of x0 and x_t, variance β̃ = β (1 − ᾱ') / (1 − ᾱ).
        mean = (ab_next**0.5 * beta / (1 - ab)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_next) / (1 - ab)) * x
        variance = beta * (1 - ab_next) / (1 - ab)
        x = mean + variance**0.5 * _noise_like(x, generator) if ab_next < 1 else mean
    return x


@torch.no_grad()
def ddim(denoise: Denoiser, schedule: NoiseSchedule, x: Tensor, steps: int | None = None, eta: float = 0.0,
         generator: torch.Generator | None = None, trajectory: list | None = None,
         spacing: str = "quadratic") -> Tensor:
    """DDIM from x = x_T in `steps` steps (default 50); η = 0 deterministic, η = 1 ancestral."""
    if eta < 0:
        raise MimicryError(f"eta={eta}: DDIM's η must be ≥ 0 (0 deterministic, 1 like DDPM)")
    for t, ab, ab_next in _levels(schedule, steps or min(DEFAULT_STEPS["ddim"], schedule.T), spacing):
        x0 = _denoise(denoise, x, t, trajectory)
        eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5
        sigma = eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)) ** 0.5
        x = ab_next**0.5 * x0 + max(1 - ab_next - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * _noise_like(x, generator)
    return x


@torch.no_grad()
def dpm_solver(denoise: Denoiser, schedule: NoiseSchedule, x: Tensor, steps: int | None = None,
               generator: torch.Generator | None = None, trajectory: list | None = None,
               spacing: str = "quadratic") -> Tensor:
    """DPM-Solver++ 2M from x = x_T in `steps` steps (default 20); deterministic (`generator` unused)."""
    previous_x0, previous_h = None, None
    for t, ab, ab_next in _levels(schedule, steps or min(DEFAULT_STEPS["dpm_solver"], schedule.T), spacing):
        x0 = _denoise(denoise, x, t, trajectory)
        if ab_next >= 1:  # the last step lands on the clean image: first order, i.e. x0̂ itself
            return x0
        alpha, sigma = ab**0.5, (1 - ab) ** 0.5
        alpha_next, sigma_next = ab_next**0.5, (1 - ab_next) ** 0.5
        h = torch.log(torch.tensor(alpha_next / sigma_next)) - torch.log(torch.tensor(alpha / sigma))  # λ step
        if previous_x0 is None:  # the first step has no history: DPM-Solver++ 1 (= DDIM)
            d = x0
        else:  # second order: extrapolate x0̂ linearly in λ from the last two predictions
            r = previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        x = (sigma_next / sigma) * x - alpha_next * float(torch.expm1(-h)) * d
        previous_x0, previous_h = x0, h
    return x


def sample(sampler: str, denoise: Denoiser, schedule: NoiseSchedule, noise: Tensor, steps: int | None = None,
           eta: float = 0.0, generator: torch.Generator | None = None, trajectory: list | None = None,
           spacing: str = "quadratic") -> Tensor:
    """Run the named sampler from `noise` (x_T)."""
    check_sampler(sampler, steps, schedule.T, eta, spacing)
    if sampler == "ddpm":
        return ddpm(denoise, schedule, noise, steps, generator, trajectory, spacing)
    if sampler == "ddim":
        return ddim(denoise, schedule, noise, steps, eta, generator, trajectory, spacing)
    return dpm_solver(denoise, schedule, noise, steps, generator, trajectory, spacing)


def check_sampler(sampler: str, steps: int | None, T: int, eta: float = 0.0, spacing: str = "quadratic") -> None:
    """Bad sampler settings fail here, before any network is run."""
    if sampler not in SAMPLERS:
        raise MimicryError(f"sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
    if spacing not in SPACINGS:
        raise MimicryError(f"spacing={spacing!r} is not one of {', '.join(SPACINGS)}")
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise MimicryError(f"steps={steps!r}: give a whole number of sampling steps (e.g. steps=50)")
        check_steps(steps, T)
    if eta < 0:
        raise MimicryError(f"eta={eta}: DDIM's η must be ≥ 0 (0 deterministic, 1 like DDPM)")


def model_denoiser(model: nn.Module, schedule: NoiseSchedule, prediction: str, labels: Tensor | None = None,
                   null_label: int | None = None, guidance: float | None = None,
                   clip: bool = True) -> Denoiser:
    """Turn a network (x_t, t, labels) -> eps | x0 | v into a denoiser (x_t, t) -> x0̂.

    Classifier-free guidance (Ho & Salimans 2022): out = uncond + guidance · (cond − uncond), with
    `null_label` as the "no class" input; guidance 1 is the plain conditional model. eps, x0 and v
    are all affine in the output at a fixed (x_t, t), so mixing the raw outputs is the same as
    mixing in any of them. `clip` keeps x0̂ in the data range [-1, 1].
    """
    if guidance is not None and null_label is None:
        raise MimicryError("guidance= needs a class-conditional model (train with task.conditional=true)")

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        if guidance is None or guidance == 1.0:
            out = model(x, t, labels)
        else:
            null = torch.full_like(labels, null_label)
            cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
            out = uncond + guidance * (cond - uncond)
        x0 = schedule.to_x0(prediction, out, x, t)
        return x0.clamp(-1, 1) if clip else x0

    return denoise
