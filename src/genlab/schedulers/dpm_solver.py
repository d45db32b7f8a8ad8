"""DPM-Solver++(2M): the multistep second-order solver of the diffusion ODE in data-prediction form (Lu, Zhou, Bao,
Chen, Li & Zhu 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", algorithm 2).

With α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), λ_t = log(α_t/σ_t), and D_i = x̂₀(x_{t_i}, t_i) from the network, the step from
t_i to t_{i+1} (the next timestep in the list, or −1 after the last: σ = 0, λ = +∞) is

    h = λ_{t_{i+1}} − λ_{t_i}
    first order (DDIM):   D = D_i
    second order:         r = (λ_{t_i} − λ_{t_{i−1}})/h,   D = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}
    x_{t_{i+1}} = (σ_{t_{i+1}}/σ_{t_i})·x_{t_i} − α_{t_{i+1}}·(e^{−h} − 1)·D

with α_{t+1}·(e^{−h} − 1) written as α_{t_{i+1}} − α_{t_i}·σ_{t_{i+1}}/σ_{t_i}, which stays finite at σ = 0.

The first step (no D_{i−1} yet; also the first step of a strength < 1 edit) is first order. So is the final step, as
in diffusers with lower_order_final (which it uses for fewer than 15 steps, for stability) and with its final σ = 0
(which forces it for every step count): at σ = 0, h = ∞ and r = 0, and the first-order step lands exactly on x̂₀.
For 2M these coincide, so the final step is first order for every number of steps.
"""

import torch

from genlab.schedulers.base import Sampler
from genlab.schedulers.schedule import NoiseSchedule


def _lambda(ab: torch.Tensor) -> torch.Tensor:
    """λ = log(α/σ) = ½·(log ᾱ − log(1 − ᾱ))."""
    return 0.5 * (ab.log() - (-ab).log1p())


class DPMSolverSampler(Sampler):
    name = "dpm-solver++"
    # As diffusers' DPMSolverMultistepScheduler: both ends included, so the last solver step starts at t = 0 and
    # not at T/N − 1, from where a one-step jump to the clean image loses detail (see benchmarks/diffusion.py).
    default_spacing = "linspace"

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "epsilon", clip_x0: bool = True,
                 spacing: str | None = None) -> None:
        super().__init__(schedule, prediction_type, clip_x0, spacing)
        self._history: tuple[int, torch.Tensor] | None = None  # (timestep, x̂₀ there) of the previous step

    def reset(self) -> None:
        self._history = None

    def step(self, model_output: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        t, t_next, x0, _, ab, ab_next = self.begin_step(model_output, t, x)
        d = x0
        prev = self._history
        # Second order only when the remembered x̂₀ is from the timestep just before t in this list.
        if t_next >= 0 and prev is not None and self._next.get(prev[0]) == t:
            lam_prev, lam, lam_next = _lambda(self.alpha_bar64(prev[0], x)), _lambda(ab), _lambda(ab_next)
            r = (lam - lam_prev) / (lam_next - lam)
            d = (1 + 0.5 / r).to(x.dtype) * x0 - (0.5 / r).to(x.dtype) * prev[1]
        self._history = (t, x0)
        a, s, a_next, s_next = ab.sqrt(), (1 - ab).sqrt(), ab_next.sqrt(), (1 - ab_next).sqrt()
        return (s_next / s).to(x.dtype) * x + (a_next - a * s_next / s).to(x.dtype) * d
