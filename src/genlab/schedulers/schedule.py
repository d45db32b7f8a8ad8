"""The forward (noising) process of a discrete-time diffusion model: β_t, ᾱ_t = Π(1 − β_s), and the maps
between the three things a network may predict (ε, v, x₀).

    q(x_t | x₀) = N(√ᾱ_t · x₀, (1 − ᾱ_t) I),      x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε
    v = √ᾱ_t · ε − √(1 − ᾱ_t) · x₀                  (Salimans & Ho 2022, "Progressive Distillation")

Timesteps are integers 0..T−1 (0 is the least noisy); the samplers treat "−1" as the clean image (ᾱ = 1).

Training draws each image's timestep from `sample_timesteps`: uniformly (Ho et al.) or from a logit-normal
density that spends the steps on the middle noise levels (Esser et al.).

References:
    Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (linear β from 1e-4 to 0.02, T = 1000)
    Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models" (cosine ᾱ, β clipped at 0.999)
    Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis" (§3.1:
        timesteps t/T = sigmoid(m + s·n), n ~ N(0, 1), logit-normal; m = 0, s = 1 was their best)
"""

import math
from dataclasses import dataclass

import torch

from genlab.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v", "x0")
BETA_SCHEDULES = ("linear", "cosine")
TIMESTEP_SAMPLINGS = ("uniform", "logit-normal")


def sample_timesteps(n: int, num_timesteps: int, sampling: str = "uniform", mean: float = 0.0, std: float = 1.0,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """n training timesteps in 0..T−1 (long): uniform, or ⌊T·sigmoid(mean + std·N(0, 1))⌋ ("logit-normal":
    mean 0 centres them on T/2, mean > 0 on noisier levels; std widens them)."""
    if sampling == "uniform":
        return torch.randint(0, num_timesteps, (n,), device=device)
    if sampling == "logit-normal":
        u = torch.sigmoid(mean + std * torch.randn(n, device=device))
        return (u * num_timesteps).long().clamp_(0, num_timesteps - 1)
    raise ConfigError(f"unknown timestep sampling {sampling!r}; choose one of {', '.join(TIMESTEP_SAMPLINGS)}")


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s schedule, rescaled so that any T gives the same ᾱ curve as their T = 1000."""
    scale = 1000 / num_timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), as β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at 0.999."""
    t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class NoiseSchedule:
    """β_1..β_T (index 0..T−1) in float64; every coefficient is looked up per sample and cast to x's dtype."""

    betas: torch.Tensor  # (T,) float64

    @classmethod
    def named(cls, name: str, num_timesteps: int = 1000) -> "NoiseSchedule":
        if name not in BETA_SCHEDULES:
            raise ConfigError(f"unknown noise schedule {name!r}; choose one of {', '.join(BETA_SCHEDULES)}")
        if num_timesteps < 2:
            raise ConfigError("a diffusion model needs at least 2 timesteps")
        return cls(linear_betas(num_timesteps) if name == "linear" else cosine_betas(num_timesteps))

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas, 0)  # (T,) ᾱ_t

    def alpha_bar(self, t: torch.Tensor | int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """ᾱ_t per sample, shaped (B, 1, 1, ...) to broadcast against `like`, on its device and in its dtype (or
        `dtype`); t = −1 gives 1 (the clean image)."""
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()
        if ((t < -1) | (t >= self.num_timesteps)).any():  # a negative index would silently wrap around
            raise IndexError(f"timesteps must be in -1..{self.num_timesteps - 1}, got {t.tolist()}")
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])  # index t + 1
        ab = table[t + 1].to(device=like.device, dtype=dtype or like.dtype)
        return ab.reshape(-1, *[1] * (like.dim() - 1))

    def signal_noise(self, t: torch.Tensor | int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(√ᾱ_t, √(1 − ᾱ_t)) in like's dtype, computed in float64: in float16 ᾱ_{T−1} of the cosine schedule
        (2.5e-9) underflows to 0, while its square root (5e-5) does not."""
        ab = self.alpha_bar(t, like, dtype=torch.float64)
        return ab.sqrt().to(like.dtype), (1 - ab).sqrt().to(like.dtype)

    # --- q(x_t | x₀) and the prediction targets ---

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        a, s = self.signal_noise(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int,
               prediction_type: str) -> torch.Tensor:
        """What a network trained for `prediction_type` should output at x_t = add_noise(x0, noise, t)."""
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "x0":
            return x0
        if prediction_type == "v":
            a, s = self.signal_noise(t, x0)
            return a * noise - s * x0
        raise ConfigError(f"unknown prediction type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")

    def split_prediction(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                         prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x₀, ε) implied by a network's output at (x_t, t); the inverse of `target`."""
        a, s = self.signal_noise(t, x_t)
        if prediction_type == "epsilon":
            eps = model_output
            return (x_t - s * eps) / a, eps
        if prediction_type == "x0":
            x0 = model_output
            return x0, (x_t - a * x0) / s.clamp_min(1e-12)
        if prediction_type == "v":
            v = model_output
            return a * x_t - s * v, s * x_t + a * v
        raise ConfigError(f"unknown prediction type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")
