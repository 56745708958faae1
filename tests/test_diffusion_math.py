"""Diffusion math without training: schedules, the eps/x0/v conversions, objectives and samplers.

The samplers are checked against a 1-D Gaussian mixture, whose optimal denoiser E[x0 | x_t] is
known in closed form: with that denoiser a correct sampler must reproduce the mixture itself, so
a wrong mean, variance or step size shows up as a distance from the true distribution.
"""
from __future__ import annotations

import math

import pytest
import torch

from mimicry.diffusion.samplers import check_sampler, ddim, ddpm, dpm_solver, model_denoiser, sample, timesteps
from mimicry.diffusion.schedule import SCHEDULES, NoiseSchedule
from mimicry.errors import MimicryError
from mimicry.losses.diffusion import EpsObjective, VObjective, X0Objective

# Two narrow, unequal modes: wrong variances or means move mass visibly.
MEANS, STDS, WEIGHTS = torch.tensor([-0.6, 0.4]), torch.tensor([0.08, 0.15]), torch.tensor([0.3, 0.7])


def mixture_denoiser(schedule: NoiseSchedule):
    """The exact E[x0 | x_t] for the mixture: responsibilities times each component's posterior mean."""
    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = schedule.signal_noise(t, x)                       # (B, 1)
        var = a**2 * STDS**2 + s**2                               # (B, K): x_t's variance per component
        log_p = WEIGHTS.log() - 0.5 * var.log() - 0.5 * (x - a * MEANS) ** 2 / var
        posterior_mean = MEANS + a * STDS**2 / var * (x - a * MEANS)
        return (log_p.softmax(1) * posterior_mean).sum(1, keepdim=True)
    return denoise


def ks_distance(samples: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the samples and the true mixture."""
    x, _ = samples.flatten().double().sort()
    cdf = (WEIGHTS.double() * 0.5 * (1 + torch.erf((x[:, None] - MEANS.double()) / (STDS.double() * math.sqrt(2))))).sum(1)
    n = len(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(upper - cdf, cdf - (upper - 1 / n)).max())


def draw(sampler, schedule, n=20_000, seed=0, **kwargs) -> torch.Tensor:
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed))
    return sampler(mixture_denoiser(schedule), schedule, noise, generator=torch.Generator().manual_seed(seed + 1), **kwargs)


# ---- schedules --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("T", [1000, 20])
def test_alpha_bar_falls_monotonically_inside_zero_one(kind, T):
    ab = NoiseSchedule(kind, T).alpha_bar
    assert ab.shape == (T,)
    assert (ab > 0).all() and (ab <= 1).all()
    assert (ab[1:] < ab[:-1]).all()
    assert ab[0] > 0.95 and ab[-1] < 0.01  # from almost clean to almost pure noise


def test_linear_schedule_is_ddpms_and_cosine_uses_the_offset():
    linear = NoiseSchedule("linear", 1000)
    assert torch.allclose(linear.betas[[0, -1]], torch.tensor([1e-4, 0.02]), atol=1e-7)
    cosine = NoiseSchedule("cosine", 1000)
    s = 0.008
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    assert cosine.alpha_bar[499].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-4)


def test_noised_images_have_the_moments_of_q():
    schedule = NoiseSchedule("cosine", 1000)
    generator = torch.Generator().manual_seed(0)
    for level in (0, 250, 600, 999):
        x0 = torch.full((200_000, 1), 0.7)
        t = torch.full((len(x0),), level)
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=generator), t)
        ab = schedule.alpha_bar[level].item()
        assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
        assert x_t.var().item() == pytest.approx(1 - ab, rel=0.02, abs=1e-4)


def test_sampled_noise_levels_cover_0_to_T_minus_1_uniformly():
    schedule = NoiseSchedule("linear", 10)
    t = schedule.sample_t(torch.zeros(50_000, 1), torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=10).float()
    assert t.min() == 0 and t.max() == 9 and (counts / counts.mean() - 1).abs().max() < 0.05


# ---- eps / x0 / v -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule_kind", SCHEDULES)
def test_conversions_round_trip(kind, schedule_kind):
    schedule = NoiseSchedule(schedule_kind, 1000)
    generator = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(256, 1, 4, 4, generator=generator) * 2 - 1, torch.randn(256, 1, 4, 4, generator=generator)
    t = torch.randint(0, 1000, (256,), generator=generator)
    x_t = schedule.add_noise(x0, eps, t)
    prediction = schedule.target(kind, x0, eps, t)  # a perfect network's output
    assert torch.allclose(schedule.to_x0(kind, prediction, x_t, t), x0, atol=2e-3)
    assert torch.allclose(schedule.to_eps(kind, prediction, x_t, t), eps, atol=2e-3)


def test_v_is_defined_as_in_the_references():
    schedule = NoiseSchedule("cosine", 1000)
    x0, eps, t = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 1000, (8,))
    ab = schedule.alpha_bar[t][:, None]
    assert torch.allclose(schedule.target("v", x0, eps, t), ab.sqrt() * eps - (1 - ab).sqrt() * x0, atol=1e-6)


def test_min_snr_weights_follow_each_objective():
    schedule = NoiseSchedule("cosine", 1000)
    t = torch.tensor([0, 100, 500, 999])
    snr = schedule.snr(t)
    capped = snr.clamp(max=5.0)
    assert torch.allclose(EpsObjective("min_snr").weight(schedule, t), capped / snr)
    assert torch.allclose(X0Objective("min_snr").weight(schedule, t), capped)
    assert torch.allclose(VObjective("min_snr").weight(schedule, t), capped / (snr + 1))
    assert EpsObjective("min_snr").weight(schedule, t)[0] < 0.01  # the almost-clean level is capped hard
    assert torch.equal(EpsObjective().weight(schedule, t), torch.ones(4))
    per_example = EpsObjective()(torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    assert per_example.shape == (2,) and torch.allclose(per_example, torch.ones(2))


# ---- samplers on a known density -----------------------------------------------------------------
@pytest.mark.parametrize("spacing", ["quadratic", "uniform"])
def test_timesteps_are_distinct_and_span_the_schedule(spacing):
    assert timesteps(1000, 1000, spacing) == list(range(999, -1, -1))
    for steps in (2, 10, 50, 999):
        ts = timesteps(1000, steps, spacing)
        assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == steps and ts == sorted(ts, reverse=True)
    assert timesteps(1000, 5, "uniform") == [999, 749, 500, 250, 0]
    assert timesteps(1000, 5, "quadratic") == [999, 562, 250, 62, 0]  # denser near the clean end


def test_trailing_timesteps_start_at_pure_noise_and_stride_evenly():
    assert timesteps(1000, 1000, "trailing") == list(range(999, -1, -1))
    assert timesteps(1000, 5, "trailing") == [999, 799, 599, 399, 199]  # Lin et al. 2024, Table 2
    for T, steps in ((1000, 50), (1000, 999), (7, 5), (100, 3)):
        ts = timesteps(T, steps, "trailing")
        assert ts[0] == T - 1 and len(set(ts)) == steps and ts == sorted(ts, reverse=True) and ts[-1] >= 0
        leading = timesteps(T, steps, "leading")  # DDIM's striding: ends at 0, starts T // steps - 1 below T-1
        assert leading[-1] == 0 and len(set(leading)) == steps and leading[0] == (steps - 1) * (T // steps)
    assert timesteps(1000, 5, "leading") == [800, 600, 400, 200, 0]
    assert timesteps(1000, 1000, "leading") == list(range(999, -1, -1))


def test_ddim_eta0_is_deterministic_and_ignores_the_noise_seed():
    schedule = NoiseSchedule("cosine", 1000)
    first = draw(ddim, schedule, n=500, seed=0, steps=20, eta=0.0)
    noise = torch.randn(500, 1, generator=torch.Generator().manual_seed(0))
    again = ddim(mixture_denoiser(schedule), schedule, noise, steps=20, eta=0.0,
                 generator=torch.Generator().manual_seed(12345))  # other per-step noise: unused at η = 0
    assert torch.equal(first, again)
    stochastic = draw(ddim, schedule, n=500, seed=0, steps=20, eta=1.0)
    assert not torch.allclose(first, stochastic)


@pytest.fixture(scope="module")
def linear_1000():
    return NoiseSchedule("linear", 1000)


@pytest.fixture(scope="module")
def ddpm_samples(linear_1000):
    return draw(ddpm, linear_1000, seed=0)


def test_ddpm_reproduces_the_true_distribution(ddpm_samples):
    samples = ddpm_samples
    assert ks_distance(samples) < 0.015  # ~1.5× the 95% critical value at n = 20,000
    assert (samples < -0.1).float().mean().item() == pytest.approx(0.3, abs=0.015)


def test_ddim_with_all_steps_and_eta1_matches_ddpm_in_distribution(linear_1000, ddpm_samples):
    ancestral = ddpm_samples
    ddim_full = draw(ddim, linear_1000, seed=7, steps=1000, eta=1.0)  # independent noise
    assert ks_distance(ddim_full) < 0.015
    for q in (0.1, 0.2, 0.5, 0.8, 0.95):  # not 0.3: the gap between the modes
        assert torch.quantile(ddim_full, q).item() == pytest.approx(torch.quantile(ancestral, q).item(), abs=0.02)
    # the two are the same process: with the same draws they give the same samples
    same_draws = draw(ddim, linear_1000, n=2000, seed=0, steps=1000, eta=1.0)
    assert torch.allclose(same_draws, draw(ddpm, linear_1000, n=2000, seed=0), atol=1e-3)


def test_a_subtly_wrong_sampler_is_caught(linear_1000):
    """The distance above can fail: DDPM whose x_t coefficient lacks one square root (√(1−β) → 1−β)."""
    def buggy_ddpm(denoise, schedule, x, generator=None):
        ab_all = schedule.alpha_bar.double()
        for t in range(schedule.T - 1, -1, -1):
            ab, ab_next = float(ab_all[t]), float(ab_all[t - 1]) if t else 1.0
            beta = 1 - ab / ab_next
            x0 = denoise(x, torch.full((len(x),), t))
            mean = (ab_next**0.5 * beta / (1 - ab)) * x0 + ((1 - beta) * (1 - ab_next) / (1 - ab)) * x
            x = mean + (beta * (1 - ab_next) / (1 - ab)) ** 0.5 * torch.randn(x.shape, generator=generator) if t else mean
        return x
    assert ks_distance(draw(buggy_ddpm, linear_1000)) > 0.022  # the tests above pass below 0.015


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_fast_solver_in_20_steps_is_close_to_the_truth(kind):
    schedule = NoiseSchedule(kind, 1000)
    fast = ks_distance(draw(dpm_solver, schedule, steps=20))
    assert fast < 0.025
    assert ks_distance(draw(ddim, schedule, steps=20)) > fast  # second order beats first at the same cost
    assert ks_distance(draw(dpm_solver, schedule, steps=20, spacing="uniform")) > fast  # why quadratic is the default


@pytest.mark.parametrize("spacing", ["quadratic", "uniform", "trailing", "leading"])
def test_respaced_samplers_with_few_steps_still_sample_the_mixture(spacing):
    schedule = NoiseSchedule("cosine", 1000)
    assert ks_distance(draw(ddpm, schedule, steps=100, spacing=spacing)) < 0.03
    assert ks_distance(draw(ddim, schedule, steps=50, spacing=spacing)) < 0.035  # measured 0.013-0.022


def test_trajectory_records_every_step_from_noise_to_data():
    schedule = NoiseSchedule("cosine", 100)
    trajectory: list = []
    out = sample("ddim", mixture_denoiser(schedule), schedule, torch.randn(16, 1), steps=10, trajectory=trajectory)
    assert [t for t, _, _ in trajectory] == timesteps(100, 10, "quadratic")
    assert torch.equal(trajectory[-1][2], out)  # the last predicted x0 is the sample
    assert trajectory[0][1].std() > 0.5  # x_T is noise


def test_clip_keeps_the_predicted_x0_in_the_data_range_only_when_asked():
    schedule = NoiseSchedule("cosine", 100)

    class TooBright(torch.nn.Module):  # an "x0" network that overshoots the data range
        def forward(self, x, t, labels=None):
            return torch.full_like(x, 3.0)

    x, t = torch.zeros(2, 1), torch.tensor([10, 90])
    assert torch.equal(model_denoiser(TooBright(), schedule, "x0")(x, t), torch.ones(2, 1))
    assert torch.equal(model_denoiser(TooBright(), schedule, "x0", clip=False)(x, t), torch.full((2, 1), 3.0))


# ---- bad input ---------------------------------------------------------------------------------------
def test_bad_sampler_settings_fail_before_any_work():
    with pytest.raises(MimicryError, match="steps=2000.*T=1000"):
        check_sampler("ddim", 2000, 1000)
    with pytest.raises(MimicryError, match="sampler='euler'.*ddpm, ddim, dpm_solver"):
        check_sampler("euler", None, 1000)
    with pytest.raises(MimicryError, match="steps=0"):
        check_sampler("ddpm", 0, 1000)
    with pytest.raises(MimicryError, match="spacing='log'"):
        check_sampler("ddim", 10, 1000, spacing="log")
    with pytest.raises(MimicryError, match="eta"):
        check_sampler("ddim", 10, 1000, eta=-1)
    with pytest.raises(MimicryError, match="class-conditional"):
        model_denoiser(torch.nn.Identity(), NoiseSchedule("cosine", 10), "eps", guidance=2.0)
    with pytest.raises(MimicryError, match="schedule='quadratic'"):
        NoiseSchedule("quadratic", 10)
