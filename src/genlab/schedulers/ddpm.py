"""DDPM ancestral sampling (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", algorithm 2), on the
respaced process when sampling with fewer steps than the T training timesteps (Nichol & Dhariwal 2021, "Improved
Denoising Diffusion Probabilistic Models", §4).

From timestep t to the next one t' in the list (t' = −1 after the last, ᾱ_{−1} = 1), with x̂₀ from the network:

    β' = 1 − ᾱ_t/ᾱ_{t'}                                       (the respaced β; = β_t when t' = t − 1)
    μ̃ = √ᾱ_{t'}·β'/(1 − ᾱ_t) · x̂₀ + √(1 − β')·(1 − ᾱ_{t'})/(1 − ᾱ_t) · x_t
    β̃ = (1 − ᾱ_{t'})/(1 − ᾱ_t) · β'
    x_{t'} = μ̃ + √β̃ · z,   z ~ N(0, I)

i.e. a draw from the posterior q(x_{t'} | x_t, x₀ = x̂₀). On the last step β̃ = 0 and x_{−1} = x̂₀, and no noise is drawn.
"""

import torch

from genlab.schedulers.base import Sampler


class DDPMSampler(Sampler):
    name = "ddpm"

    def step(self, model_output: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        t, t_next, x0, _, ab, ab_next = self.begin_step(model_output, t, x)
        beta = 1 - ab / ab_next
        c_x0 = ab_next.sqrt() * beta / (1 - ab)
        c_xt = (1 - beta).sqrt() * (1 - ab_next) / (1 - ab)
        mean = c_x0.to(x.dtype) * x0 + c_xt.to(x.dtype) * x
        if t_next < 0:
            return mean
        std = ((1 - ab_next) / (1 - ab) * beta).sqrt()
        return mean + std.to(x.dtype) * self.noise_like(x, generator)
