"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12 and 16).

From timestep t to the next one t' in the list (t' = −1 after the last, ᾱ_{−1} = 1), with (x̂₀, ε̂) from the network:

    σ = η · √((1 − ᾱ_{t'})/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_{t'})
    x_{t'} = √ᾱ_{t'} · x̂₀ + √(1 − ᾱ_{t'} − σ²) · ε̂ + σ · z,   z ~ N(0, I)

η = 0 is the deterministic DDIM (an ODE solver: the same x_T always gives the same image); η = 1 makes σ² the DDPM
posterior variance β̃, and the step is then exactly DDPM's ancestral step. On the last step σ = 0 and x_{−1} = x̂₀.
"""

import torch

from genlab.errors import ConfigError
from genlab.schedulers.base import Sampler
from genlab.schedulers.schedule import NoiseSchedule


class DDIMSampler(Sampler):
    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "epsilon", clip_x0: bool = True,
                 eta: float = 0.0, spacing: str | None = None) -> None:
        super().__init__(schedule, prediction_type, clip_x0, spacing)
        if not 0 <= eta <= 1:
            raise ConfigError(f"--eta must be in [0, 1] (got {eta}): 0 is deterministic DDIM, 1 is DDPM-like")
        self.eta = eta

    def step(self, model_output: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        t, t_next, x0, eps, ab, ab_next = self.begin_step(model_output, t, x)
        sigma = self.eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).sqrt()
        c_eps = (1 - ab_next - sigma**2).clamp_min(0).sqrt()
        out = ab_next.sqrt().to(x.dtype) * x0 + c_eps.to(x.dtype) * eps
        if self.eta == 0 or t_next < 0:
            return out
        return out + sigma.to(x.dtype) * self.noise_like(x, generator)
