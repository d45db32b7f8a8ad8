"""Diffusion models: config checks, the U-Net, classifier-free guidance, training, the discretised decoder and the
variational bound (against analytic oracle denoisers), sampling and editing, and the CLI end to end with its
one-line errors. The sampler maths itself is tested in tests/test_schedulers.py."""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import genlab
from genlab.checkpoint import CHECKPOINT, WEIGHTS, load_tensors
from genlab.data.images import to_model_range
from genlab.errors import ConfigError
from genlab.models.diffusion.ddpm import Diffusion, DiffusionConfig, discretized_gaussian_log_likelihood
from genlab.models.diffusion.unet import UNet
from genlab.nn.attention import attention
from genlab.schedulers import SAMPLERS
from genlab.tasks.images import IMAGE_GEN, ImageSplit
from genlab.trainer import StepContext, TrainConfig, default_optimizer
from tests.helpers import add_captions, run_cli
from tests.test_image_task import _env, assert_one_line_error, cli  # noqa: F401 (_env: autouse fixture)
from tests.test_vae import SHAPES, make_tiny_npz, tiny_images

QUIET = {"OMP_NUM_THREADS": "1"}  # tiny models on a shared machine: see tests/test_vae.py
TINY_NET = {"base_channels": 8, "channel_mult": (1, 2), "cond_dim": 16, "attention_heads": 2}
TINY_NET_CLI = ["--base-channels", "8", "--channel-mult", "1,2", "--cond-dim", "16", "--attention-heads", "2"]
PAD = 2  # the frame between the images of a grid


def tiny_model(channels: int = 1, image_size: int = 16, num_classes: int = 4, **options: object) -> Diffusion:
    """A tiny 16×16 model, in eval mode, at its (seeded) initialisation."""
    cfg = DiffusionConfig(channels=channels, image_size=image_size, num_classes=num_classes,
                          **(TINY_NET | options))  # type: ignore[arg-type]
    cfg.validate()
    torch.manual_seed(0)
    return Diffusion(cfg).eval()


def randomize_zero_init(model: Diffusion, std: float = 0.05, seed: int = 0) -> Diffusion:
    """Small random values in every parameter that starts at zero (the U-Net's head, residual and attention
    output convs, norm biases), in the denoiser and its EMA copy: a fixed "untrained" network whose output
    depends on x, t and the label (at init it is exactly zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in (model.denoiser, model.ema):
            if net is None:
                continue
            for p in net.parameters():
                if not p.any():
                    p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_batch(n_per_class: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (4n, 1, 16, 16) images of the four tiny classes and their labels."""
    x, y = tiny_images(n_per_class, 16)
    return torch.from_numpy(x), torch.from_numpy(y)


# --- 1. config validation ---

@pytest.mark.parametrize(("options", "match"), [
    ({"prediction": "score"}, "unknown --prediction 'score'"),
    ({"noise_schedule": "quadratic"}, "unknown --noise-schedule 'quadratic'"),
    ({"sampler": "euler"}, "unknown sampler 'euler'"),
    ({"channel_mult": (1, 2), "attention_levels": 3}, r"--attention-levels must be in 0\.\.2"),
    ({"attention_levels": -1}, "--attention-levels"),
    ({"guidance": -0.5}, "--guidance must be non-negative"),
    ({"timesteps": 50, "sample_steps": 51}, "between 1 and the model's 50 training timesteps"),
    ({"sample_steps": 0}, "--steps"),
    ({"timesteps": 1}, "--timesteps must be at least 2"),
    ({"eta": 1.5}, "--eta"),
    ({"dropout": 1.0}, "--dropout"),
    ({"ema_decay": 1.0}, "--ema-decay"),
    ({"base_channels": 0}, "at least 1"),
    ({"patch_size": 0}, "patch_size must be at least 1"),
    ({"timestep_sampling": "beta"}, "unknown --timestep-sampling 'beta'; choose uniform, logit-normal"),
    ({"timestep_sampling": "logit-normal", "timestep_std": 0.0}, "--timestep-std must be positive"),
])
def test_bad_config_values(options: dict, match: str) -> None:
    DiffusionConfig().validate()  # the defaults are fine
    with pytest.raises(ConfigError, match=match):
        DiffusionConfig(**options).validate()


def test_bad_shapes_for_the_data() -> None:
    # 30 px through three levels: 30 → 15 → 7.5; the message names the multiple needed.
    with pytest.raises(ConfigError, match="multiple of 4; 30 is not"):
        Diffusion(DiffusionConfig(image_size=30, channel_mult=(1, 2, 2), base_channels=8))
    Diffusion(DiffusionConfig(image_size=30, **TINY_NET))  # two levels: 30 → 15 is fine
    with pytest.raises(ConfigError, match="--patch-size 3 must divide the image size 32"):
        Diffusion(DiffusionConfig(image_size=32, patch_size=3, **TINY_NET))
    # Patches of 2 first: 36 → 18, then through three levels 18 → 9 → 4.5.
    with pytest.raises(ConfigError, match="multiple of 4; 18 is not"):
        Diffusion(DiffusionConfig(image_size=36, patch_size=2, channel_mult=(1, 2, 2), base_channels=8))
    with pytest.raises(ConfigError, match="--conditional needs labelled images"):
        Diffusion(DiffusionConfig(conditional=True, num_classes=0, **TINY_NET))
    with pytest.raises(ConfigError, match="heads"):
        Diffusion(DiffusionConfig(image_size=16, base_channels=8, channel_mult=(1, 2), attention_heads=3))


# --- 2. the U-Net ---

@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("cond_dim", [0, 16])
def test_unet_shapes_zero_output_at_init_then_learns(size: int, channels: int, cond_dim: int) -> None:
    torch.manual_seed(0)
    net = UNet(channels, size, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=1,
               attention_heads=2, dropout=0.0, cond_dim=cond_dim)
    x, t = torch.randn(2, channels, size, size), torch.tensor([0, 999])
    cond = torch.randn(2, cond_dim) if cond_dim else None
    out = net(x, t, cond)
    assert out.shape == (2, channels, size, size)
    assert torch.equal(out, torch.zeros_like(out))  # the zero-initialised head: the first step starts from 0
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    (net(x, t, cond) - torch.randn_like(x)).pow(2).mean().backward()
    opt.step()
    out = net(x, t, cond)
    assert out.abs().min() > 0 and torch.isfinite(out).all()
    if cond_dim:
        with pytest.raises(ValueError, match="pass cond"):
            net(x, t)


def test_patches_fold_into_channels_around_a_unet_at_a_lower_resolution() -> None:
    kwargs = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=1, attention_heads=2,
                  cond_dim=4, position_embedding=True)
    torch.manual_seed(0)
    folded = UNet(3, 16, **kwargs, patch_size=2).eval()
    inner = UNet(12, 8, **kwargs).eval()  # 2 x 2 patches of 3 channels: 12 channels at 8 x 8
    inner.load_state_dict(folded.state_dict())  # the same parameters, shapes included
    with torch.no_grad():
        folded.head[-1].weight.normal_()  # the zero-initialised head would make any two nets agree
        inner.head[-1].weight.copy_(folded.head[-1].weight)
    x, t, cond = torch.randn(2, 3, 16, 16), torch.tensor([5, 50]), torch.randn(2, 4)
    out = folded(x, t, cond)
    assert out.shape == x.shape
    expected = torch.nn.functional.pixel_shuffle(inner(torch.nn.functional.pixel_unshuffle(x, 2), t, cond), 2)
    assert torch.equal(out, expected)
    assert out.abs().max() > 0


def test_attention_under_cpu_bf16_autocast_runs_in_fp32_and_returns_bf16() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 8, generator=gen) for _ in range(3))
    mask = torch.tensor([True] * 7 + [False] * 2)[None, None, None, :].expand(2, 1, 1, 9)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.05  # only the inputs' and output's bf16 rounding
    assert torch.equal(attention(q, k, v, mask), want)  # fp32 is SDPA itself


# --- 3. classifier-free guidance ---

def test_guided_output_is_the_classifier_free_combination() -> None:
    model = randomize_zero_init(tiny_model(conditional=True, timesteps=100))
    net = model.sampling_net
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t, labels = torch.tensor([3, 40, 77, 99]), torch.tensor([0, 1, 2, 3])
    null = torch.full_like(labels, model.null_label)
    out_c, out_u = net(x, t, labels), net(x, t, null)
    assert (out_c - out_u).abs().max() > 1e-3  # the label matters, so the checks below can fail
    cond, empty = model.conditions(4, labels)
    assert torch.allclose(model.guided_output(x, t, cond, empty, 0.0), out_c, atol=1e-6)  # w = 0: conditional
    for w in (0.5, 3.0):
        expected = out_u + (1 + w) * (out_c - out_u)
        assert torch.allclose(model.guided_output(x, t, cond, empty, w), expected, atol=1e-5), w


def test_unconditional_model_refuses_guidance_and_labels() -> None:
    model = tiny_model(num_classes=0, timesteps=100, sample_steps=2)
    assert model.sampling_options(guidance=0.0).guidance == 0.0
    assert model.sampling_options().guidance == 0.0  # the run's default w = 1 does not apply
    with pytest.raises(ConfigError, match="--guidance needs a conditional or text-conditioned model"):
        model.sampling_options(guidance=2.0)
    with pytest.raises(ConfigError, match="--guidance needs a conditional or text-conditioned model"):
        model.generate(2, guidance=2.0)
    with pytest.raises(ConfigError, match="without labels"):
        model.generate(2, labels=1)
    assert model.generate(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 16, 16)


# --- 4. training ---

def test_overfits_a_fixed_batch() -> None:
    model = tiny_model(conditional=True, timesteps=100, dropout=0.0, ema_decay=0.0).train()
    images, labels = tiny_batch(2)
    batch = {"x": to_model_range(images, model.pixel_range), "y": labels}
    cfg = TrainConfig(lr=3e-3)
    ctx = StepContext(model.networks(), {"model": default_optimizer(list(model.parameters()), cfg)}, cfg)
    split = ImageSplit(images, labels)
    before = model.evaluate(split)["loss"]  # fixed timesteps and noise: comparable across steps
    torch.manual_seed(0)
    for step in range(120):
        ctx.step = step
        metrics = model.train_step(batch, ctx)
        assert math.isfinite(metrics["loss"]) and metrics["items"] == 8
    after = model.evaluate(split)["loss"]
    assert after < 0.3 * before, (before, after)  # about 1.0 → 0.17


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def short_run(data: Path, out: Path, **extra: object) -> Path:
    """A few in-process training steps of a tiny conditional model with dropout and EMA."""
    opts = {"data": str(data), **TINY_NET, "channel_mult": "1,2", "conditional": True, "timesteps": 100,
            "sample_steps": 3, "dropout": 0.1, "ema_decay": 0.9, "max_steps": 6, "batch_size": 8,
            "warmup_steps": 2, "eval_interval": 6, "valid_fraction": 0.0} | extra
    genlab.train("diffusion", out, opts)
    return out


def test_same_seed_same_weights_and_load_is_exact(tiny: Path, tmp_path: Path) -> None:
    a, b, c = (short_run(tiny, tmp_path / name, seed=seed) for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    ta, tb, tc = (load_tensors(run / CHECKPOINT)[0] for run in (a, b, c))
    weights = [k for k in ta if k.startswith("model.")]
    assert any(k.startswith("model.ema.") for k in weights) and any(k.startswith("model.denoiser.") for k in weights)
    assert all(torch.equal(ta[k], tb[k]) for k in weights)
    assert not all(torch.equal(ta[k], tc[k]) for k in weights)  # another seed, other weights
    # the EMA copy is an average, not the denoiser itself
    assert not torch.equal(ta["model.ema.unet.head.2.weight"], ta["model.denoiser.unet.head.2.weight"])

    m1, m2 = genlab.load(a, device="cpu"), genlab.load(a, device="cpu")
    assert not m1.training
    state = m1.state_dict()
    assert all(torch.equal(state[k[len("model."):]], ta[k]) for k in weights)  # the last step is the best here
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([0, 30, 60, 99]), torch.tensor([0, 1, 2, 3])
    out = m1.sampling_net(x, t, y)
    assert out.abs().max() > 0 and torch.equal(out, m2.sampling_net(x, t, y))
    s1 = m1.generate(4, y, torch.Generator().manual_seed(3), sampler="ddpm", steps=3)
    s2 = m2.generate(4, y, torch.Generator().manual_seed(3), sampler="ddpm", steps=3)
    assert torch.equal(s1, s2)
    assert load_tensors(a / WEIGHTS)[0].keys() == state.keys()


def test_a_run_with_patches_saves_loads_and_samples_full_size_images(tiny: Path, tmp_path: Path) -> None:
    run = short_run(tiny, tmp_path / "p2", patch_size=2, seed=1)
    model = genlab.load(run, device="cpu")
    assert model.config.patch_size == 2 and model.denoiser.unet.stem.in_channels == 4  # 2 x 2 pixels of 1 channel
    images = model.generate(2, torch.tensor([0, 1]), torch.Generator().manual_seed(0), steps=3)
    assert images.shape == (2, 1, 16, 16)
    again = genlab.load(run, device="cpu").generate(2, torch.tensor([0, 1]), torch.Generator().manual_seed(0), steps=3)
    assert torch.equal(images, again)


# --- 5. the discretised Gaussian decoder ---

LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # the 256 pixel values in [-1, 1]


@pytest.mark.parametrize("mean", [-3.0, -1.0, -0.999, -0.37, 0.0, 0.5, 1.0, 1.2])
@pytest.mark.parametrize("std", [1e-4, 3e-3, 0.05, 0.7, 5.0])
def test_decoder_probabilities_sum_to_one(mean: float, std: float) -> None:
    logp = discretized_gaussian_log_likelihood(LEVELS, torch.full_like(LEVELS, mean), std)
    assert torch.isfinite(logp).all() and (logp <= 0).all()
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    if std >= 3e-3:  # float32 pixels are off by up to 6e-8 near 0: a visible shift only for stds near 1e-4
        x32 = (torch.arange(256) / 127.5 - 1).float()
        logp32 = discretized_gaussian_log_likelihood(x32, torch.full_like(x32, mean), std)
        assert logp32.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_decoder_matches_the_cdf_difference() -> None:
    means = torch.tensor([-1.2, -0.9, -0.2, 0.0, 0.33, 0.98, 1.5], dtype=torch.float64)
    for std in (0.004, 0.02, 0.3, 2.0):
        x, mean = LEVELS[None, :].expand(len(means), -1), means[:, None].expand(-1, 256)
        upper, lower = torch.special.ndtr((x - mean + 1 / 255) / std), torch.special.ndtr((x - mean - 1 / 255) / std)
        p = torch.where(x < -0.999, upper, torch.where(x > 0.999, 1 - lower, upper - lower))
        logp = discretized_gaussian_log_likelihood(x, mean, std)
        ok = p > 1e-8  # where the direct difference of two CDFs still has most of its digits
        assert ok.sum() >= 2 * len(means)
        assert torch.allclose(logp[ok], p[ok].log(), rtol=0, atol=1e-7), std


def test_decoder_is_accurate_far_in_the_tails() -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    h = 1 / 255
    # (pixel, mean, std): bins 10 to 190 standard deviations from the mean, where Φ(u) − Φ(l) underflows to 0
    cases = [(0.5, -0.5, 0.02), (-0.5, 0.5, 0.02), (LEVELS[200].item(), -1.0, 0.05), (-1.0, 0.5, 0.01),
             (1.0, -0.9, 0.01), (0.2, 0.25, 0.005), (-0.2, -0.25, 0.005)]
    for x, mean, std in cases:
        u, l = mpmath.mpf(x - mean + h) / std, mpmath.mpf(x - mean - h) / std
        if x < -0.999:
            exact = mpmath.log(mpmath.ncdf(u))
        elif x > 0.999:
            exact = mpmath.log(mpmath.ncdf(-l))
        elif l > 0:  # Φ(u) − Φ(l) = Φ(−l) − Φ(−u), computed where both are small
            exact = mpmath.log(mpmath.ncdf(-l) - mpmath.ncdf(-u))
        else:
            exact = mpmath.log(mpmath.ncdf(u) - mpmath.ncdf(l))
        got = discretized_gaussian_log_likelihood(torch.tensor([x], dtype=torch.float64),
                                                  torch.tensor([mean], dtype=torch.float64), std).item()
        assert math.isfinite(got) and got == pytest.approx(float(exact), rel=1e-6), (x, mean, std)


# --- 6. the variational bound ---

class Oracle(nn.Module):
    """The exact denoiser of data that is always `x_star`, in the model's prediction type, but believing x̂₀ =
    x_star + offset (offset 0: the perfect denoiser). Works in float64 inside."""

    def __init__(self, model: Diffusion, x_star: torch.Tensor, offset: float = 0.0):
        super().__init__()
        self.schedule, self.prediction = model.schedule, model.config.prediction
        self.x0 = x_star.double() + offset

    def condition(self, labels: torch.Tensor | None = None, prompts: list[str] | None = None) -> None:
        return None  # the oracle knows its data without being told

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                prompts: list[str] | None = None, cond: object = None) -> torch.Tensor:
        x = x.double()
        a, s = self.schedule.signal_noise(t, x)
        x0 = self.x0.expand_as(x)
        return self.schedule.target(x0, (x - a * x0) / s, t, self.prediction).float()


def one_image() -> torch.Tensor:
    """uint8 (1, 1, 16, 16): black, a white square, and a row of mid-gray (interior bins as well as end bins)."""
    img = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    img[..., 4:12, 4:12] = 255
    img[..., 0, :] = torch.arange(16, dtype=torch.uint8) * 17
    return img


def expected_bound(model: Diffusion, img: torch.Tensor, offset: float) -> float:
    """Nats of the bound for an `Oracle(offset)`, from the schedule alone: the prior KL, the decoder's Gaussian
    integrated over each pixel's bin, and the middle terms, each ½(SNR_{t−1} − SNR_t)·offset²·D, which telescope
    to ½(SNR_0 − SNR_{T−1})·offset²·D."""
    x = img.double() / 127.5 - 1
    ab = model.schedule.alphas_cumprod
    prior = torch.distributions.kl_divergence(torch.distributions.Normal(ab[-1].sqrt() * x, (1 - ab[-1]).sqrt()),
                                              torch.distributions.Normal(0.0, 1.0)).sum()
    beta = model.schedule.betas
    std = math.sqrt(beta[1] * (1 - ab[0]) / (1 - ab[1]))  # β̃ of the second step (the first is 0)
    normal = torch.distributions.Normal(x + offset, std)
    cdf_hi, cdf_lo = normal.cdf(x + 1 / 255), normal.cdf(x - 1 / 255)
    p = torch.where(x < -0.999, cdf_hi, torch.where(x > 0.999, 1 - cdf_lo, cdf_hi - cdf_lo))
    snr = ab / (1 - ab)
    middle = 0.5 * (snr[0] - snr[-1]) * offset**2 * x.numel()
    return float(prior - p.log().sum() + middle)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_bound_of_an_oracle_denoiser(prediction: str, schedule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(num_classes=0, prediction=prediction, noise_schedule=schedule, timesteps=250)
    img = one_image()
    x_star = to_model_range(img, model.pixel_range)
    images = img.repeat(3, 1, 1, 1)
    full = {"likelihood_timesteps": 249}  # every middle term

    monkeypatch.setattr(Diffusion, "sampling_net", property(lambda self: Oracle(self, x_star)))
    r = model.likelihood_report(images, None, **full)
    # The perfect denoiser: every middle term vanishes; the prior KL (~0) and the decoder term remain.
    assert r["vlb_nats"] == pytest.approx(expected_bound(model, img, 0.0), abs=1e-3)
    # (the decoder's std √β̃ shrinks with T: about 0.8 bits/dim here at T = 250, 0.35 at T = 1000; raw pixels: 8)
    assert r["vlb_bits_per_dim"] < 1 and r["vlb_bits_per_dim_stderr"] < 1e-6  # three copies of one image

    monkeypatch.setattr(Diffusion, "sampling_net", property(lambda self: Oracle(self, x_star, offset=0.01)))
    r = model.likelihood_report(images, None, **full)
    assert r["vlb_nats"] == pytest.approx(expected_bound(model, img, 0.01), rel=2e-5)  # the net outputs float32
    assert r["vlb_nats"] > expected_bound(model, img, 0.0) + 20  # the middle terms are no longer 0


def test_stratified_estimate_is_unbiased_for_an_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a denoiser that is off by a constant, every term is a fixed function of t: the only randomness of the
    stratified estimate is the timestep drawn in each stratum, and its mean over seeds must be the exact sum."""
    model = tiny_model(num_classes=0, timesteps=200)
    img = one_image()
    monkeypatch.setattr(Diffusion, "sampling_net",
                        property(lambda self: Oracle(self, to_model_range(img, self.pixel_range), offset=0.01)))
    exact = expected_bound(model, img, 0.01)
    estimates = [model.likelihood_report(img, None, likelihood_timesteps=4, seed=s)["vlb_nats"] for s in range(300)]
    mean, se = statistics.mean(estimates), statistics.stdev(estimates) / math.sqrt(len(estimates))
    assert se > 0  # the strata are sampled
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    assert model.likelihood_report(img, None, likelihood_timesteps=500)["vlb_timesteps"] == 199  # capped at T − 1


def test_stratified_estimate_agrees_with_the_full_sum_on_a_tiny_model() -> None:
    model = randomize_zero_init(tiny_model(conditional=True, timesteps=20))
    images, labels = tiny_batch(1)
    full = [model.likelihood_report(images, labels, likelihood_timesteps=19, seed=s)["vlb_nats"] for s in range(3)]
    strat = [model.likelihood_report(images, labels, likelihood_timesteps=6, seed=s)["vlb_nats"] for s in range(30)]
    se_full = statistics.stdev(full) / math.sqrt(len(full))
    se_strat = statistics.stdev(strat) / math.sqrt(len(strat))
    assert abs(statistics.mean(full) - statistics.mean(strat)) < 4 * math.hypot(se_full, se_strat)
    assert statistics.mean(full) > 100  # far from the oracle's bound: the network is nothing like the data


def test_bound_report_keys_and_units(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(channels=3, image_size=8, num_classes=0, timesteps=100)
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    r = model.likelihood_report(images, None, likelihood_images=4, likelihood_timesteps=10)
    assert r["vlb_images"] == 4 and r["vlb_timesteps"] == 10
    for key, value in r.items():
        if isinstance(value, float):
            assert key.endswith(("_nats", "_bits_per_dim", "_bits_per_dim_stderr")), key
            assert math.isfinite(value), key
    assert r["vlb_bits_per_dim"] == pytest.approx(r["vlb_nats"] / (3 * 8 * 8 * math.log(2)), rel=1e-12)
    assert r["vlb_bits_per_dim_stderr"] > 0
    assert "T = 100" in r["likelihood_model"] and "10 strata" in r["likelihood_model"]
    assert isinstance(r["likelihood_note"], str) and "bits/dim" in r["likelihood_note"]
    # nats per image, not per batch: one image and three copies of it give the same bound for the oracle
    one = images[:1]
    monkeypatch.setattr(Diffusion, "sampling_net",
                        property(lambda self: Oracle(self, to_model_range(one, self.pixel_range))))
    single = model.likelihood_report(one, None)["vlb_nats"]
    assert model.likelihood_report(one.repeat(3, 1, 1, 1), None)["vlb_nats"] == pytest.approx(single, rel=1e-7)
    with pytest.raises(ConfigError, match="at least 1"):
        model.likelihood_report(images, None, likelihood_images=0)


def test_conditional_bound_without_labels_is_the_unconditional_bound() -> None:
    model = tiny_model(conditional=True, timesteps=20)
    images = tiny_batch(1)[0]
    r = model.likelihood_report(images, None, likelihood_timesteps=3)
    null = torch.full((len(images),), model.null_label)
    assert math.isfinite(r["vlb_nats"])
    assert r["vlb_nats"] == model.likelihood_report(images, null, likelihood_timesteps=3)["vlb_nats"]


# --- 7. sampling, editing, latent walks ---

@pytest.fixture(scope="module")
def fixed_model() -> Diffusion:
    """An untrained but fixed conditional model whose output depends on x, t and the label."""
    return randomize_zero_init(tiny_model(conditional=True, timesteps=100, sample_steps=5))


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_generate_shape_range_and_seeds(fixed_model: Diffusion, sampler: str) -> None:
    def sample(seed: int, **kw: object) -> torch.Tensor:
        return fixed_model.generate(6, torch.arange(6) % 4, torch.Generator().manual_seed(seed), sampler=sampler,
                                    steps=4, **kw)

    a = sample(1)
    assert a.shape == (6, 1, 16, 16) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.05
    assert torch.equal(a, sample(1))
    assert (a - sample(2)).abs().max() > 0.1
    assert (a - sample(1, guidance=0.0)).abs().max() > 1e-3  # the guidance scale is used
    # unlabelled calls draw the labels from the generator too, so they are reproducible as well
    drawn = fixed_model.generate(3, None, torch.Generator().manual_seed(5), sampler=sampler, steps=2)
    assert torch.equal(drawn, fixed_model.generate(3, None, torch.Generator().manual_seed(5), sampler=sampler, steps=2))
    with pytest.raises(ConfigError, match="class ids in 0..3"):
        fixed_model.generate(2, torch.tensor([0, 4]), sampler=sampler, steps=2)


def test_inpainting_keeps_the_unmasked_pixels_exactly(fixed_model: Diffusion) -> None:
    images, labels = tiny_batch(1)
    x = to_model_range(images, "symmetric")
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, :8] = 1  # repaint the left half
    for sampler in SAMPLERS:
        out = fixed_model.edit(x, labels, 1.0, mask, torch.Generator().manual_seed(0), sampler=sampler, steps=4)
        assert out.shape == x.shape
        assert torch.equal(out[..., 8:], x[..., 8:]), sampler
        assert (out[..., :8] - x[..., :8]).abs().max() > 0.1, sampler
        again = fixed_model.edit(x, labels, 1.0, mask, torch.Generator().manual_seed(0), sampler=sampler, steps=4)
        assert torch.equal(out, again)


def test_sdedit_moves_further_from_the_input_as_strength_grows(fixed_model: Diffusion) -> None:
    """The untrained network's x̂₀ is a shrunken copy of x_t, so the edit stays close to the noised input, and
    the noise (so the distance from the input) grows with the strength."""
    images, labels = tiny_batch(2)
    x = to_model_range(images, "symmetric")
    distance = [float((fixed_model.edit(x, labels, s, None, torch.Generator().manual_seed(1), steps=10) - x)
                      .pow(2).mean()) for s in (0.1, 0.3, 0.6, 1.0)]
    assert distance == sorted(distance) and distance[0] < 0.2 * distance[-1], distance
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match="--strength"):
            fixed_model.edit(x, labels, bad)


class Recorder(nn.Module):
    """Wraps a denoiser and records the condition vectors it is called with."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.vectors = net, []

    def condition(self, labels: torch.Tensor | None = None, prompts: list[str] | None = None) -> object:
        return self.net.condition(labels, prompts)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                prompts: list[str] | None = None, cond: object = None) -> torch.Tensor:
        cond = cond if cond is not None else self.net.condition(labels, prompts)
        self.vectors.append(cond.vector)
        return self.net(x, t, cond=cond)


def test_sdedit_without_a_label_is_unconditional(fixed_model: Diffusion, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(fixed_model.ema)
    null = fixed_model.ema.label_embed.weight[fixed_model.null_label]
    monkeypatch.setattr(Diffusion, "sampling_net", property(lambda self: recorder))
    x = to_model_range(tiny_batch(1)[0], "symmetric")
    fixed_model.edit(x, None, 0.5, None, torch.Generator().manual_seed(0), steps=4)
    assert recorder.vectors
    for vectors in recorder.vectors:  # a conditional pass on the null label only
        assert torch.equal(vectors, null.expand_as(vectors)), vectors


def test_decode_is_deterministic_and_walk_endpoints_reproducible(fixed_model: Diffusion) -> None:
    z = fixed_model.noise(4, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert z.shape == (4, 16 * 16)
    labels = torch.tensor([0, 1, 2, 3])
    a = fixed_model.decode(z, labels)
    assert a.shape == (4, 1, 16, 16) and torch.equal(a, fixed_model.decode(z, labels))  # DDIM with η = 0
    assert (a - fixed_model.decode(z + 0.5, labels)).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="needs a label"):
        fixed_model.decode(z)
    artifacts = {"num_classes": 4, "class_names": SHAPES}
    t = torch.linspace(0, 1, 5)
    grid, _ = IMAGE_GEN._walk_between_noise(fixed_model, artifacts, 2, t, seed=7)
    again, _ = IMAGE_GEN._walk_between_noise(fixed_model, artifacts, 2, t, seed=7)
    assert grid.shape == (10, 1, 16, 16) and torch.equal(grid, again)
    ends = fixed_model.noise(4, torch.device("cpu"), torch.Generator().manual_seed(7))  # rows: 0 → 2, 1 → 3
    want = ((fixed_model.decode(ends, torch.tensor([0, 1, 0, 1])) + 1) * 127.5).round()
    got = grid[[0, 5, 4, 9]].float()
    assert (got - want[[0, 1, 2, 3]]).abs().max() <= 1  # the walk starts and ends at the decoded draws


# --- 8. the CLI end to end ---

@pytest.fixture(scope="module")
def cond_run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conditional diffusion model trained by the real console entry point in a subprocess."""
    out = tmp_path_factory.mktemp("runs") / "diffusion"
    r = run_cli("train", "diffusion", "--data", str(tiny), "--out", str(out), "--conditional", *TINY_NET_CLI,
                "--timesteps", "100", "--sample-steps", "4", "--max-steps", "30", "--batch-size", "16",
                "--eval-interval", "15", "--warmup-steps", "5", "--log-interval", "10", env=QUIET)
    assert r.returncode == 0, r.stderr
    assert "finished after 30 steps" in r.stderr
    return out


@pytest.fixture(scope="module")
def input_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32×32 picture of a square (a different size from the model's: it is resized)."""
    path = tmp_path_factory.mktemp("inputs") / "square.png"
    img = np.zeros((32, 32), np.uint8)
    img[8:20, 10:22] = 255
    Image.fromarray(img).save(path)
    return path


def grid_size(columns: int, rows: int, size: int = 16) -> tuple[int, int]:
    return columns * (size + PAD) + PAD, rows * (size + PAD) + PAD


def test_run_directory(cond_run: Path) -> None:
    cfg = json.loads((cond_run / "config.json").read_text())
    assert cfg["model"] == "diffusion"
    mc = cfg["model_config"]
    assert (mc["channels"], mc["image_size"], mc["num_classes"], mc["conditional"]) == (1, 16, 4, True)
    art = json.loads((cond_run / "images.json").read_text())
    assert art["pixel_range"] == "symmetric" and art["class_names"] == SHAPES
    records = genlab.api.RunDir(cond_run).read_metrics()
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [10, 20, 30] and all(math.isfinite(r["loss"]) for r in train)
    assert [r["step"] for r in records if r["split"] == "val"] == [15, 30]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_cli_sample_each_sampler(cond_run: Path, sampler: str, tmp_path: Path, monkeypatch, capsys) -> None:
    grid, npz = tmp_path / "grid.png", tmp_path / "raw.npz"
    code, _, err = cli(["sample", cond_run, "--sampler", sampler, "--steps", 3, "--guidance", 3, "--label", "Square",
                        "--num-samples", 6, "--seed", 1, "--npz", npz, "--out", grid], monkeypatch, capsys)
    assert code == 0, err
    assert "'square'" in err and Image.open(grid).size == grid_size(3, 2)
    raw = np.load(npz)
    assert raw["images"].shape == (6, 1, 16, 16) and raw["images"].dtype == np.uint8
    assert raw["labels"].tolist() == [2] * 6 and raw["class_names"].tolist() == SHAPES
    first = raw["images"].copy()
    code, _, err = cli(["sample", cond_run, "--sampler", sampler, "--steps", 3, "--guidance", 3, "--label", "2",
                        "--num-samples", 6, "--seed", 1, "--npz", npz, "--out", grid], monkeypatch, capsys)
    assert code == 0 and np.array_equal(np.load(npz)["images"], first)  # a class index; the same seed


def test_cli_sample_defaults(cond_run: Path, monkeypatch, capsys) -> None:
    code, _, err = cli(["sample", cond_run, "--num-samples", 8, "--seed", 0], monkeypatch, capsys)
    assert code == 0, err
    assert Image.open(cond_run / "samples.png").size == grid_size(4, 2)  # one class per column


def test_cli_edit_sdedit_and_inpainting(cond_run: Path, input_png: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    code, _, err = cli(["edit", cond_run, "--image", input_png, "--strength", 0.5, "--label", "vertical",
                        "--num-samples", 3, "--steps", 4], monkeypatch, capsys)
    assert code == 0, err
    assert "SDEdit at strength 0.5" in err and "'vertical'" in err
    assert Image.open(cond_run / "edit.png").size == grid_size(1 + 3, 1)  # the input, then the edits

    mask = tmp_path / "mask.png"
    m = np.zeros((32, 32), np.uint8)
    m[:, :16] = 255  # repaint the left half
    Image.fromarray(m).save(mask)
    out = tmp_path / "inpainted.png"
    code, _, err = cli(["edit", cond_run, "--image", input_png, "--mask", mask, "--num-samples", 2, "--seed", 3,
                        "--sampler", "ddpm", "--steps", 4, "--out", out], monkeypatch, capsys)
    assert code == 0, err
    assert "inpainted" in err
    grid = np.array(Image.open(out))
    assert grid.shape[::-1][:2] == grid_size(1 + 1 + 2, 1)  # the input, the masked input, the edits
    tile = [grid[PAD:PAD + 16, PAD + i * 18:PAD + i * 18 + 16] for i in range(4)]
    for edit in tile[2:]:
        assert np.array_equal(edit[:, 8:], tile[0][:, 8:])  # the kept half is the input's, exactly
    assert (tile[1][:, :8] == 0).all()  # the masked input shows the repainted region black


def test_cli_interpolate(cond_run: Path, monkeypatch, capsys) -> None:
    code, _, err = cli(["interpolate", cond_run, "--pairs", 2, "--steps", 4, "--seed", 1], monkeypatch, capsys)
    assert code == 0, err
    first = (cond_run / "interpolations.png").read_bytes()
    assert Image.open(cond_run / "interpolations.png").size == grid_size(4, 2)
    code, _, err = cli(["interpolate", cond_run, "--pairs", 2, "--steps", 4, "--seed", 1], monkeypatch, capsys)
    assert code == 0 and (cond_run / "interpolations.png").read_bytes() == first


def test_cli_eval(cond_run: Path, monkeypatch, capsys) -> None:
    code, out, err = cli(["eval", cond_run, "--num-samples", 64, "--likelihood-images", 16,
                          "--likelihood-timesteps", 8, "--steps", 4, "--json"], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads((cond_run / "eval.json").read_text())
    assert report["model"] == "diffusion" and report["vlb_images"] == 16 and report["vlb_timesteps"] == 8
    assert 0 < report["vlb_bits_per_dim"] and math.isfinite(report["vlb_bits_per_dim"])
    assert report["vlb_bits_per_dim"] == pytest.approx(report["vlb_nats"] / (256 * math.log(2)))
    assert report["sampling"]["steps"] == 4 and report["sampling"]["sampler"] == "dpm-solver++"
    assert report["n_generated"] == 64 and set(report["per_label_accuracy"]) == set(SHAPES)
    for key in ("fd", "kid", "precision", "recall"):
        assert math.isfinite(report[key]), key
    md = (cond_run / "eval.md").read_text()
    assert "vlb_bits_per_dim" in md and "variational bound" in md and "eval_samples.png" in md
    assert (cond_run / "eval_samples.png").is_file()


def test_models_show_lists_the_options(monkeypatch, capsys) -> None:
    code, out, err = cli(["models", "show", "diffusion"], monkeypatch, capsys)
    assert code == 0, err
    for option in ("--prediction", "--noise-schedule", "--timesteps", "--channel-mult", "--attention-levels",
                   "--conditional", "--cond-drop", "--ema-decay", "--sampler", "--sample-steps", "--guidance",
                   "--data", "--lr"):
        assert option in out, option
    assert "--image-size" in out and "--num-classes" not in out  # derived from the data, not an option
    code, out, _ = cli(["models", "list"], monkeypatch, capsys)
    assert code == 0 and "diffusion" in out


# --- 9. bad input: one line, no traceback, nothing written ---

def refused(args: list, out: Path, monkeypatch, capsys, *needles: str) -> None:
    code, _, err = cli([*args, "--out", out], monkeypatch, capsys)
    assert_one_line_error(code, err, *needles)
    assert not out.exists(), out


def test_bad_input_one_clear_line(cond_run: Path, input_png: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out.png"
    edit = ["edit", cond_run, "--image", input_png, "--steps", 2, "--num-samples", 1]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    refused(["edit", cond_run, "--image", corrupt], out, monkeypatch, capsys, "not a readable image")
    refused(["edit", cond_run, "--image", tmp_path / "missing.png"], out, monkeypatch, capsys, "not found")
    small_mask = tmp_path / "mask8.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(small_mask)
    refused([*edit, "--mask", small_mask], out, monkeypatch, capsys, "8×8", "32×32")
    refused([*edit, "--strength", 0], out, monkeypatch, capsys, "--strength")
    refused([*edit, "--strength", 1.5], out, monkeypatch, capsys, "--strength")
    refused([*edit, "--sampler", "euler"], out, monkeypatch, capsys, "unknown sampler 'euler'")
    refused([*edit, "--label", "Trouser"], out, monkeypatch, capsys, "Trouser", "'square'")
    refused(["sample", cond_run, "--sampler", "euler"], out, monkeypatch, capsys, "unknown sampler 'euler'")
    refused(["sample", cond_run, "--label", "Trouser"], out, monkeypatch, capsys, "Trouser")
    refused(["sample", cond_run, "--label", "4"], out, monkeypatch, capsys, "'4'")
    refused(["sample", cond_run, "--steps", 101], out, monkeypatch, capsys, "100 training timesteps")
    refused(["sample", cond_run, "--guidance", -1], out, monkeypatch, capsys, "--guidance")
    refused(["sample", cond_run, "--eta", 2, "--sampler", "ddim"], out, monkeypatch, capsys, "--eta")
    code, _, err = cli(["eval", cond_run, "--likelihood-images", 0, "--num-samples", 4], monkeypatch, capsys)
    assert_one_line_error(code, err, "--likelihood-images")


def test_steps_zero_is_refused(cond_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    refused(["sample", cond_run, "--steps", 0], tmp_path / "out.png", monkeypatch, capsys, "--steps")


def test_bad_training_options_one_clear_line(tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    base = ["train", "diffusion", "--data", tiny, *TINY_NET_CLI, "--max-steps", 2, "--batch-size", 8]
    for extra, needles in [(["--prediction", "score"], ("--prediction",)),
                           (["--noise-schedule", "quadratic"], ("--noise-schedule",)),
                           (["--sampler", "euler"], ("euler",)),
                           (["--attention-levels", 3], ("--attention-levels",)),
                           (["--image-size", 30, "--channel-mult", "1,2,2"], ("multiple of 4", "30")),
                           (["--guidance", -1, "--conditional"], ("--guidance",)),
                           (["--timesteps", 10, "--sample-steps", 20], ("10 training timesteps",))]:
        run = tmp_path / "bad"
        code, _, err = cli([*base, *extra, "--out", run], monkeypatch, capsys)
        assert_one_line_error(code, err, *needles)
        assert not run.exists(), extra
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=tiny_images(8, 16)[0])
    run = tmp_path / "bad"
    code, _, err = cli(["train", "diffusion", "--data", unlabelled, "--conditional", *TINY_NET_CLI, "--batch-size", 8,
                        "--out", run], monkeypatch, capsys)
    assert_one_line_error(code, err, "--conditional needs labelled images")
    assert not run.exists()


def test_guidance_on_an_unconditional_run(tiny: Path, input_png: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    run = short_run(tiny, tmp_path / "plain", conditional=False, max_steps=2)
    capsys.readouterr()  # the progress bar
    out = tmp_path / "out.png"
    refused(["sample", run, "--guidance", 2], out, monkeypatch, capsys,
            "--guidance needs a conditional or text-conditioned model")
    refused(["edit", run, "--image", input_png, "--guidance", 2], out, monkeypatch, capsys, "--guidance")
    refused(["sample", run, "--label", "square"], out, monkeypatch, capsys, "without labels")
    code, _, err = cli(["sample", run, "--guidance", 0, "--num-samples", 2, "--out", out], monkeypatch, capsys)
    assert code == 0 and out.is_file(), err


def test_other_families_refuse_diffusion_commands(tiny: Path, input_png: Path, tmp_path: Path, monkeypatch,
                                                  capsys) -> None:
    vae, gan = tmp_path / "vae", tmp_path / "gan"
    genlab.train("vae", vae, {"data": str(tiny), "max_steps": 2, "batch_size": 16, "hidden": 16, "latent_dim": 2})
    genlab.train("gan", gan, {"data": str(tiny), "arch": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 8,
                              "batch_size": 16, "max_steps": 2, "eval_interval": 2, "sample_interval": 0})
    capsys.readouterr()
    out = tmp_path / "out.png"
    for run, name in ((vae, "vae"), (gan, "gan")):
        refused(["edit", run, "--image", input_png], out, monkeypatch, capsys, "needs a diffusion model", name)
        refused(["sample", run, "--sampler", "ddim"], out, monkeypatch, capsys, "--sampler applies to diffusion")
        refused(["sample", run, "--steps", 4], out, monkeypatch, capsys, "--steps")
    code, _, err = cli(["eval", vae, "--likelihood-timesteps", 4], monkeypatch, capsys)
    assert_one_line_error(code, err, "--likelihood")



# --- distributed ---

@pytest.mark.parametrize("condition", ["labels", "text"])
def test_torchrun_two_processes(tiny: Path, tmp_path: Path, condition: str) -> None:
    """DDP over two gloo processes: the wrapped denoiser (with its text encoder, for captions) trains, rank 0 logs
    every step and keeps the EMA."""
    import os
    import shutil
    import subprocess
    import sys

    out = tmp_path / "ddp"
    if condition == "labels":
        data, flags = tiny, ["--conditional"]
    else:
        data = add_captions(Path(shutil.copy(tiny, tmp_path / "captioned.npz")))
        flags = ["--text-encoder", "scratch", "--text-width", "16", "--text-layers", "1"]
    args = ["train", "diffusion", "--data", str(data), "--out", str(out), "--device", "cpu", *flags,
            *TINY_NET_CLI, "--timesteps", "100", "--batch-size", "8", "--max-steps", "6", "--log-interval", "1",
            "--eval-interval", "3"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "genlab", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    train = [r for r in genlab.api.RunDir(out).read_metrics() if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6] and all(math.isfinite(r["loss"]) for r in train)
    tensors, _ = load_tensors(out / CHECKPOINT)
    assert any(k.startswith("model.ema.") for k in tensors)
