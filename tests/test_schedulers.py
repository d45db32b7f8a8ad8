"""Diffusion samplers against analytic "oracle" networks, so that the tests check exactness, not a trained model.

- Delta data (x₀ ≡ x*): the exact ε is (x_t − √ᾱ·x*)/√(1 − ᾱ); every sampler must return x* exactly.
- Gaussian data N(μ, s²): the exact ε is √(1 − ᾱ)(x_t − √ᾱ·μ)/(ᾱs² + 1 − ᾱ), and the probability-flow ODE has the
  closed-form solution x_t = √ᾱ_t·μ + (x_u − √ᾱ_u·μ)·√((ᾱ_t s² + 1 − ᾱ_t)/(ᾱ_u s² + 1 − ᾱ_u)); so sample statistics
  and each solver's order of convergence can be checked.
"""

import math
from collections.abc import Callable

import pytest
import torch

from genlab.errors import ConfigError
from genlab.schedulers import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    DPMSolverSampler,
    NoiseSchedule,
    Sampler,
    make_sampler,
)
from genlab.schedulers.schedule import PREDICTION_TYPES, sample_timesteps

Model = Callable[[torch.Tensor, torch.Tensor | int], torch.Tensor]
SCHEDULES = {name: NoiseSchedule.named(name) for name in ("linear", "cosine")}
MU, S = 0.5, 0.3  # the Gaussian data


def delta_oracle(schedule: NoiseSchedule, x_star: torch.Tensor, prediction_type: str) -> Model:
    def model(x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        ab = schedule.alpha_bar(t, x)
        eps = (x - ab.sqrt() * x_star) / (1 - ab).sqrt()
        return schedule.target(x_star, eps, t, prediction_type)

    return model


def gaussian_oracle(schedule: NoiseSchedule, prediction_type: str = "epsilon") -> Model:
    def model(x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        ab = schedule.alpha_bar(t, x)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * MU) / (ab * S**2 + 1 - ab)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()  # E[x₀ | x_t]
        return schedule.target(x0, eps, t, prediction_type)

    return model


def gaussian_flow(schedule: NoiseSchedule, x_u: torch.Tensor, u: int, t: int) -> torch.Tensor:
    """The exact probability-flow ODE solution from (x_u, u) to t for N(μ, s²) data."""
    au, at = schedule.alpha_bar(u, x_u), schedule.alpha_bar(t, x_u)
    return at.sqrt() * MU + (x_u - au.sqrt() * MU) * ((at * S**2 + 1 - at) / (au * S**2 + 1 - au)).sqrt()


def sample(sampler: Sampler, model: Model, x: torch.Tensor, num_steps: int, strength: float = 1.0,
           generator: torch.Generator | None = None, stop_at: int | None = None) -> torch.Tensor:
    """The diffusers-style loop; `stop_at` returns x once it reaches that timestep instead of the clean image."""
    for t in sampler.set_timesteps(num_steps, strength):
        x = sampler.step(model(x, t), t, x, generator=generator)
        if stop_at is not None and sampler.prev_timestep(t) == stop_at:
            break
    return x


def standard_normal(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x_T with sample mean 0 and std 1 exactly, so that deterministic samplers have no sampling error."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((x - x.mean()) / x.std()).to(dtype)


# --- the noise schedule ---


def test_linear_schedule_is_ho_et_al() -> None:
    betas = SCHEDULES["linear"].betas
    assert betas.dtype == torch.float64 and len(betas) == 1000
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


def test_cosine_alpha_bar_matches_closed_form_before_clipping() -> None:
    schedule = SCHEDULES["cosine"]
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    unclipped = schedule.betas < 0.999
    assert unclipped[:-1].all() and not unclipped[-1]  # only the last β hits the 0.999 cap
    expected = torch.tensor([f(t + 1) / f(0) for t in range(999)], dtype=torch.float64)
    assert torch.allclose(schedule.alphas_cumprod[:999], expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_alpha_bar_strictly_decreasing_from_one(name: str) -> None:
    schedule = SCHEDULES[name]
    x = torch.zeros(2, 3, 4, 4)
    table = torch.stack([schedule.alpha_bar(t, x.double()).flatten()[0] for t in range(-1, 1000)])
    assert table[0].item() == 1.0  # t = −1 is the clean image
    assert (table.diff() < 0).all() and table[-1] > 0
    assert schedule.alpha_bar(5, x).shape == (1, 1, 1, 1) and schedule.alpha_bar(5, x).dtype == x.dtype
    assert schedule.alpha_bar(torch.tensor([3, 7]), x).shape == (2, 1, 1, 1)
    for t in (-2, 1000):  # out of range, rather than wrapping around to ᾱ_{T−1}
        with pytest.raises(IndexError):
            schedule.alpha_bar(t, x)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_split_prediction_inverts_target(name: str, prediction_type: str) -> None:
    schedule = SCHEDULES[name]
    x0, noise = torch.randn(3, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 5, 5, dtype=torch.float64)
    for t in (0, 1, 500, 998, 999):
        x_t = schedule.add_noise(x0, noise, t)
        got_x0, got_eps = schedule.split_prediction(schedule.target(x0, noise, t, prediction_type), x_t, t,
                                                    prediction_type)
        # ε-prediction recovers x₀ through a division by √ᾱ, which is ~5e-5 at the cosine schedule's T − 1
        assert torch.allclose(got_x0, x0, atol=1e-9) and torch.allclose(got_eps, noise, atol=1e-9)


# --- timesteps and configuration errors ---


def test_training_timesteps_uniform_and_logit_normal() -> None:
    torch.manual_seed(0)
    uniform = sample_timesteps(20_000, 1000)
    assert uniform.dtype == torch.long and uniform.min() == 0 and uniform.max() == 999
    assert abs(uniform.float().mean().item() - 499.5) < 10
    centred = sample_timesteps(20_000, 1000, "logit-normal")
    assert abs(centred.float().median().item() - 500) < 15  # sigmoid(0) = 1/2
    noisier = sample_timesteps(20_000, 1000, "logit-normal", mean=1.1)
    assert abs(noisier.float().median().item() - 750) < 15  # sigmoid(1.1) = 0.75
    assert noisier.min() >= 0 and noisier.max() <= 999
    narrow = sample_timesteps(20_000, 1000, "logit-normal", std=0.2)
    assert narrow.float().std() < 0.5 * centred.float().std()
    assert sample_timesteps(5, 10, "logit-normal", mean=30.0).tolist() == [9] * 5  # t/T → 1 stays below T
    with pytest.raises(ConfigError, match="unknown timestep sampling 'beta'"):
        sample_timesteps(1, 10, "beta")


def test_trailing_timesteps() -> None:
    sampler = DDIMSampler(SCHEDULES["linear"])
    ts = sampler.set_timesteps(10)
    assert ts.dtype == torch.long and ts.tolist() == list(range(999, 0, -100))
    assert sampler.timesteps is ts
    assert sampler.set_timesteps(1000).tolist() == list(range(999, -1, -1))
    assert sampler.set_timesteps(1).tolist() == [999]
    ts = sampler.set_timesteps(3)
    assert ts.tolist() == [999, 666, 332]  # 1000 − i·333.3, rounded, − 1
    assert [sampler.prev_timestep(t) for t in ts] == [666, 332, -1]
    assert DDPMSampler(NoiseSchedule.named("linear", 10)).set_timesteps(3).tolist() == [9, 6, 2]


def test_linspace_and_logsnr_spacings() -> None:
    schedule = SCHEDULES["cosine"]
    assert DDIMSampler(schedule, spacing="linspace").set_timesteps(5).tolist() == [999, 749, 500, 250, 0]
    ts = DPMSolverSampler(schedule, spacing="logsnr").set_timesteps(20)
    assert ts[0] == 999 and ts[-1] == 0 and len(torch.unique(ts)) == 20 and (ts[:-1] > ts[1:]).all()
    ab = schedule.alphas_cumprod
    lam = (0.5 * (ab.log() - (-ab).log1p()))[ts]
    gaps = lam[1:] - lam[:-1]  # λ grows by (nearly) equal steps, up to rounding to integer timesteps
    assert (gaps > 0).all() and torch.median(gaps) > 0.5 * (lam[-1] - lam[0]) / 19
    # λ-uniform points that round onto a taken timestep move down: N = T still visits every timestep once
    assert DPMSolverSampler(schedule, spacing="logsnr").set_timesteps(1000).tolist() == list(range(999, -1, -1))
    with pytest.raises(ConfigError, match="spacing"):
        DDIMSampler(schedule, spacing="karras")


@pytest.mark.parametrize("spacing", ["trailing", "linspace", "logsnr"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_delta_data_is_recovered_with_every_spacing(name: str, spacing: str) -> None:
    schedule = SCHEDULES["cosine"]
    x_star = torch.linspace(-1, 1, 16, dtype=torch.float64)
    for num_steps in (2, 7, 20):
        x = standard_normal(16, seed=num_steps).double()
        out = sample(make_sampler(name, schedule, "v", spacing=spacing), delta_oracle(schedule, x_star, "v"), x,
                     num_steps, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(out, x_star, atol=1e-5), (name, spacing, num_steps)


def test_strength_keeps_the_last_timesteps() -> None:
    sampler = DDPMSampler(SCHEDULES["linear"])
    full = sampler.set_timesteps(50).tolist()
    edit = sampler.set_timesteps(50, strength=0.6).tolist()
    assert len(edit) == 30 and edit == full[20:] and edit[0] == 599
    assert sampler.set_timesteps(50, strength=1e-6).tolist() == [19]  # at least one step
    assert sampler.set_timesteps(10, strength=0.25).tolist() == [199, 99]  # round(2.5) = 2


def test_unknown_sampler_lists_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        make_sampler("euler", SCHEDULES["linear"])
    assert all(name in str(err.value) for name in ("ddpm", "ddim", "dpm-solver++"))


@pytest.mark.parametrize("name", SAMPLERS)
def test_bad_steps_and_strength(name: str) -> None:
    sampler = make_sampler(name, SCHEDULES["linear"])
    with pytest.raises(ConfigError, match="--steps 1001 is more than the model's 1000 training timesteps"):
        sampler.set_timesteps(1001)
    with pytest.raises(ConfigError, match="--steps"):
        sampler.set_timesteps(0)
    for strength in (0, 1.5, -0.5):
        with pytest.raises(ConfigError, match="--strength"):
            sampler.set_timesteps(10, strength=strength)


def test_bad_options() -> None:
    schedule = SCHEDULES["linear"]
    with pytest.raises(ConfigError, match="epsilon, v, x0"):
        make_sampler("ddim", schedule, prediction_type="sample")
    with pytest.raises(ConfigError, match="no option 'eta'"):
        make_sampler("ddpm", schedule, eta=1.0)
    with pytest.raises(ConfigError, match="--eta"):
        make_sampler("ddim", schedule, eta=-0.1)


def test_make_sampler() -> None:
    assert SAMPLERS == {"ddpm": DDPMSampler, "ddim": DDIMSampler, "dpm-solver++": DPMSolverSampler}
    sampler = make_sampler("ddim", SCHEDULES["cosine"], prediction_type="v", eta=0.5, clip_x0=False)
    assert isinstance(sampler, DDIMSampler)
    assert (sampler.prediction_type, sampler.eta, sampler.clip_x0) == ("v", 0.5, False)


def test_step_misuse_is_a_plain_error() -> None:
    sampler = DDIMSampler(SCHEDULES["linear"])
    x = torch.zeros(1, 2)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sampler.step(x, 999, x)
    sampler.set_timesteps(10)
    with pytest.raises(ValueError, match="not in"):
        sampler.step(x, 500, x)


# --- delta data: every sampler returns x* exactly ---

STEPS = {"ddpm": [1, 2, 10, 50, 1000], "ddim": [1, 2, 10, 50, 1000], "dpm-solver++": [1, 2, 10, 50, 1000]}
CASES = [(name, n) for name, steps in STEPS.items() for n in steps]


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize(("name", "num_steps"), CASES)
def test_delta_data_is_recovered(schedule_name: str, prediction_type: str, name: str, num_steps: int) -> None:
    schedule = SCHEDULES[schedule_name]
    gen = torch.Generator().manual_seed(1)
    x_star = torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64) * 1.8 - 0.9
    model = delta_oracle(schedule, x_star, prediction_type)
    options = {"eta": 1.0} if name == "ddim" else {}  # η = 1 is the harder (stochastic) case
    for clip_x0 in (True, False):
        sampler = make_sampler(name, schedule, prediction_type, clip_x0=clip_x0, **options)
        x = torch.randn(x_star.shape, generator=gen, dtype=torch.float64)
        assert (sample(sampler, model, x, num_steps, generator=gen) - x_star).abs().max() < 1e-5


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_delta_data_img2img(schedule_name: str, prediction_type: str, name: str) -> None:
    schedule = SCHEDULES[schedule_name]
    gen = torch.Generator().manual_seed(2)
    x_star = torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64) * 2 - 1
    model = delta_oracle(schedule, x_star, prediction_type)
    sampler = make_sampler(name, schedule, prediction_type)
    for num_steps, strength in [(50, 0.6), (10, 0.3), (20, 0.01), (1000, 0.25)]:
        ts = sampler.set_timesteps(num_steps, strength)
        x = sampler.add_noise(x_star, torch.randn(x_star.shape, generator=gen, dtype=torch.float64), ts[0])
        out = sample(sampler, model, x, num_steps, strength, generator=gen)
        assert (out - x_star).abs().max() < 1e-5


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_delta_data_float32(schedule_name: str, prediction_type: str) -> None:
    schedule = SCHEDULES[schedule_name]
    x_star = torch.rand(2, 3, 6, 6) * 1.8 - 0.9
    # ε-prediction only pins x₀ down to (float32 rounding of ε)·√(1 − ᾱ)/√ᾱ; √ᾱ_{T−1} is 6e-3 (linear) and 5e-5 (cosine)
    ab_last = schedule.alphas_cumprod[-1].item()
    tol = 1e-5 + (16 * torch.finfo(torch.float32).eps / math.sqrt(ab_last) if prediction_type == "epsilon" else 0)
    for name in SAMPLERS:
        for num_steps in (1, 10, 50):
            out = sample(make_sampler(name, schedule, prediction_type, clip_x0=False),
                         delta_oracle(schedule, x_star, prediction_type), torch.randn(x_star.shape), num_steps)
            assert out.dtype == torch.float32 and (out - x_star).abs().max() < tol, (name, num_steps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_delta_data_half_precision(prediction_type: str, dtype: torch.dtype) -> None:
    """In float16, ᾱ_{T−1} of the cosine schedule (2.5e-9) underflows to 0; the coefficients √ᾱ are computed in
    float64 first, so sampling stays finite and lands on x* to a few units in the last place."""
    schedule = SCHEDULES["cosine"]
    x_star = (torch.rand(2, 3, 6, 6) * 1.8 - 0.9).to(dtype)
    for name in SAMPLERS:
        # trailing: the half-precision oracle itself cannot express t = 0 (1 − ᾱ_0 ≈ 4e-5 underflows in float16)
        sampler = make_sampler(name, schedule, prediction_type, spacing="trailing")
        out = sample(sampler, delta_oracle(schedule, x_star, prediction_type),
                     torch.randn(x_star.shape).to(dtype), 10, generator=torch.Generator().manual_seed(0))
        assert out.dtype == dtype and (out.float() - x_star.float()).abs().max() <= 4 * torch.finfo(dtype).eps


# --- Gaussian data: sample statistics and order of convergence ---

N_SAMPLES = 20_000


def final_std(schedule: NoiseSchedule, t_last: int) -> float:
    """The std a perfect solver gives: every sampler ends with x = x̂₀ = E[x₀ | x_{t_last}], whose std is
    s·√(ᾱs²/(ᾱs² + 1 − ᾱ)) < s; with trailing spacing t_last = T/N − 1, e.g. 49 for 20 steps."""
    ab = schedule.alphas_cumprod[t_last].item()
    return S * math.sqrt(ab * S**2 / (ab * S**2 + 1 - ab))


# (sampler, options, steps, allowed discretization bias as a fraction of s). The biases, measured with 200k samples:
# DDPM-1000 −1.1% (linear) / −0.7% (cosine): the β̃ posterior variance ignores Var(x₀ | x_t), Ho et al.'s lower bound;
# DDIM-100 η=0 −3.5% / −2.0% (first order); DDIM-100 η=1 (= DDPM-100) −8.0% / −4.5%; DPM-Solver++-20 −0.4% / +1.3%.
GAUSSIAN_CASES = [("ddpm", {}, 1000, 0.02), ("ddim", {"eta": 0.0}, 100, 0.05), ("ddim", {"eta": 1.0}, 100, 0.1),
                  ("dpm-solver++", {}, 20, 0.02)]


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize(("name", "options", "num_steps", "bias"), GAUSSIAN_CASES)
def test_gaussian_data_statistics(schedule_name: str, name: str, options: dict, num_steps: int, bias: float) -> None:
    schedule = SCHEDULES[schedule_name]
    sampler = make_sampler(name, schedule, clip_x0=False, spacing="trailing", **options)
    gen = torch.Generator().manual_seed(3)
    x = sample(sampler, gaussian_oracle(schedule), standard_normal(N_SAMPLES, seed=4), num_steps, generator=gen)
    # Five standard errors of the sample mean (s/√n) and std (s/√2n), plus the method's bias; the mean has no bias.
    se_mean, se_std = S / math.sqrt(N_SAMPLES), S / math.sqrt(2 * N_SAMPLES)
    assert abs(x.mean().item() - MU) < 5 * se_mean
    expected = final_std(schedule, int(sampler.timesteps[-1]))
    assert abs(x.std().item() - expected) < 5 * se_std + bias * S
    assert abs(x.std().item() - S) < 5 * se_std + bias * S + (S - expected)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_dpm_solver_beats_ddim_at_10_steps(schedule_name: str) -> None:
    schedule = SCHEDULES[schedule_name]
    x_T = standard_normal(N_SAMPLES, seed=5)
    err = {name: abs(sample(make_sampler(name, schedule, clip_x0=False, spacing="trailing"), gaussian_oracle(schedule),
                            x_T, 10).std()
                     .item() - S) for name in ("ddim", "dpm-solver++")}
    assert err["dpm-solver++"] < err["ddim"]


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_order_of_convergence(schedule_name: str) -> None:
    """At the fixed timestep 499 (in the trailing grid for N = 20, 40, 80), doubling N halves DDIM's error (first
    order) and quarters DPM-Solver++(2M)'s (second order)."""
    schedule = SCHEDULES[schedule_name]
    x_T = torch.linspace(-3, 3, 13, dtype=torch.float64)
    exact = gaussian_flow(schedule, x_T, 999, 499)
    for name, lo, hi in [("ddim", 1.7, 2.3), ("dpm-solver++", 3.2, 4.8)]:
        sampler = make_sampler(name, schedule, clip_x0=False, spacing="trailing")
        errors = [(sample(sampler, gaussian_oracle(schedule), x_T, n, stop_at=499) - exact).abs().max().item()
                  for n in (20, 40, 80)]
        ratios = [errors[0] / errors[1], errors[1] / errors[2]]
        assert all(lo < r < hi for r in ratios), (name, errors)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_gaussian_all_prediction_types_agree(prediction_type: str) -> None:
    schedule = SCHEDULES["cosine"]
    x_T = torch.linspace(-3, 3, 13, dtype=torch.float64)
    for name in SAMPLERS:
        ref = sample(make_sampler(name, schedule, clip_x0=False), gaussian_oracle(schedule), x_T, 25,
                     generator=torch.Generator().manual_seed(0))
        out = sample(make_sampler(name, schedule, prediction_type, clip_x0=False),
                     gaussian_oracle(schedule, prediction_type), x_T, 25, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(out, ref, atol=1e-9), name


# --- randomness, clipping, state ---


def test_ddim_eta0_is_deterministic() -> None:
    schedule = SCHEDULES["linear"]
    x_T = torch.randn(2, 3, 8, 8)
    model = gaussian_oracle(schedule)
    a = sample(DDIMSampler(schedule), model, x_T, 20, generator=torch.Generator().manual_seed(0))
    b = sample(DDIMSampler(schedule), model, x_T, 20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "options"), [("ddpm", {}), ("ddim", {"eta": 1.0}), ("ddim", {"eta": 0.3})])
def test_stochastic_samplers_follow_the_generator(name: str, options: dict) -> None:
    schedule = SCHEDULES["linear"]
    x_T = torch.randn(2, 3, 8, 8)
    model = gaussian_oracle(schedule)
    run = lambda seed: sample(make_sampler(name, schedule, **options), model, x_T, 20,  # noqa: E731
                              generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1), atol=1e-3)


@pytest.mark.parametrize("num_steps", [10, 1000])
def test_ddim_eta1_is_ddpm(num_steps: int) -> None:
    schedule = SCHEDULES["cosine"]
    x_T = torch.randn(4, 16, dtype=torch.float64)
    model = gaussian_oracle(schedule, "v")
    run = lambda sampler: sample(sampler, model, x_T, num_steps, generator=torch.Generator().manual_seed(7))  # noqa: E731
    assert torch.allclose(run(DDPMSampler(schedule, "v")), run(DDIMSampler(schedule, "v", eta=1.0)), atol=1e-10)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_clip_x0_rederives_eps(prediction_type: str) -> None:
    schedule = SCHEDULES["linear"]
    x0, noise = torch.randn(4, 8, dtype=torch.float64) * 3, torch.randn(4, 8, dtype=torch.float64)
    x = schedule.add_noise(x0, noise, 300)
    out = schedule.target(x0, noise, 300, prediction_type)
    sampler = DDIMSampler(schedule, prediction_type, clip_x0=True)
    got_x0, got_eps = sampler.predict(out, 300, x)
    assert torch.allclose(got_x0, x0.clamp(-1, 1), atol=1e-12) and got_x0.abs().max() <= 1
    ab = schedule.alpha_bar(300, x)
    assert torch.allclose(ab.sqrt() * got_x0 + (1 - ab).sqrt() * got_eps, x, atol=1e-12)
    unclipped = DDIMSampler(schedule, prediction_type, clip_x0=False).predict(out, 300, x)
    assert torch.allclose(unclipped[0], x0, atol=1e-10) and torch.allclose(unclipped[1], noise, atol=1e-10)


@pytest.mark.parametrize("name", SAMPLERS)
def test_tensor_timesteps_and_reuse(name: str) -> None:
    """0-d tensor t works like a python int, and set_timesteps resets DPM-Solver's history."""
    schedule = SCHEDULES["linear"]
    model = gaussian_oracle(schedule)
    x_T = torch.randn(2, 5)
    sampler = make_sampler(name, schedule, clip_x0=False)
    first = sample(sampler, model, x_T, 12, generator=torch.Generator().manual_seed(0))
    again = sample(sampler, model, x_T, 12, generator=torch.Generator().manual_seed(0))
    x, gen = x_T, torch.Generator().manual_seed(0)
    for t in sampler.set_timesteps(12).tolist():
        x = sampler.step(model(x, t), torch.tensor(t), x, generator=gen)
    assert torch.equal(first, again) and torch.equal(first, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SAMPLERS)
def test_cpu_generator_gives_the_same_images_on_cuda(name: str) -> None:
    schedule = SCHEDULES["cosine"]
    x_T = torch.randn(2, 3, 8, 8)
    options = {"eta": 1.0} if name == "ddim" else {}
    out = {}
    for device in ("cpu", "cuda"):
        sampler = make_sampler(name, schedule, "v", **options)
        out[device] = sample(sampler, gaussian_oracle(schedule, "v"), x_T.to(device), 20,
                             generator=torch.Generator().manual_seed(0))
        assert out[device].device.type == device
    assert torch.allclose(out["cpu"], out["cuda"].cpu(), atol=1e-4)
    sampler = make_sampler(name, schedule, **options)
    assert sample(sampler, gaussian_oracle(schedule), x_T.cuda(), 5).isfinite().all()  # global CUDA RNG
    half = sample(sampler, gaussian_oracle(schedule), x_T.cuda().half(), 5)
    assert half.dtype == torch.float16 and half.isfinite().all()
