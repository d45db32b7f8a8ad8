"""What the three samplers share: the timestep list, the previous-timestep lookup, turning a network's output into
(x̂₀, ε̂) with optional clipping, and drawing noise from a possibly-CPU generator.

Timestep spacings (`spacing`), each starting at t = T−1 so that sampling starts from (almost) pure noise:

    trailing  t_i = round(T − i·T/N) − 1, i = 0..N−1 (Lin, Liu, Li & Yang 2024, "Common Diffusion Noise
              Schedules and Sample Steps are Flawed", table 2): N = T visits every timestep; the last is T/N − 1
    linspace  t_i = round((T − 1)·(1 − i/(N − 1))): both ends included, so the last step starts at t = 0
    logsnr    uniform in λ = log(α/σ) from λ(T−1) to λ(0) (Lu et al. 2022, "DPM-Solver", §3.3/Appendix D),
              each point rounded to the nearest timestep, moved down where it would repeat the one before

The step after the last one goes to t = −1 (ᾱ = 1, the clean image). `strength` < 1 (SDEdit, Meng et al. 2022)
keeps only the last max(1, round(N·strength)).
"""

import inspect

import torch

from genlab.errors import ConfigError
from genlab.schedulers.schedule import PREDICTION_TYPES, NoiseSchedule

SPACINGS = ("trailing", "linspace", "logsnr")


class Sampler:
    """Base class; a subclass implements `step`. Cheap to build: make a fresh one for each sampling call."""

    name: str = ""
    default_spacing = "trailing"

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "epsilon", clip_x0: bool = True,
                 spacing: str | None = None) -> None:
        if prediction_type not in PREDICTION_TYPES:
            choices = ", ".join(PREDICTION_TYPES)
            raise ConfigError(f"unknown prediction type {prediction_type!r}; choose one of {choices}")
        spacing = spacing or self.default_spacing
        if spacing not in SPACINGS:
            raise ConfigError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
        self.spacing = spacing
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.clip_x0 = clip_x0
        self.timesteps = torch.empty(0, dtype=torch.long)
        self._next: dict[int, int] = {}  # timestep -> the one after it in the list (−1 after the last)

    @classmethod
    def option_names(cls) -> list[str]:
        """Keyword options a user may set (everything in the constructor but the schedule and prediction type)."""
        params = inspect.signature(cls.__init__).parameters
        return [p for p in params if p not in ("self", "schedule", "prediction_type")]

    def set_timesteps(self, num_steps: int, strength: float = 1.0) -> torch.Tensor:
        """The descending training timesteps to visit; also kept as `self.timesteps`. Resets any history."""
        T = self.schedule.num_timesteps
        if num_steps < 1:
            raise ConfigError(f"--steps must be at least 1 (got {num_steps})")
        if num_steps > T:
            raise ConfigError(f"--steps {num_steps} is more than the model's {T} training timesteps; use at most {T}")
        if not 0 < strength <= 1:
            raise ConfigError(f"--strength must be in (0, 1] (got {strength}); 1 samples from pure noise")
        ts = self._spaced(num_steps)
        ts = ts[num_steps - max(1, round(num_steps * strength)):]
        self.timesteps = ts
        as_list = ts.tolist()
        self._next = dict(zip(as_list, [*as_list[1:], -1], strict=True))
        self.reset()
        return ts

    def _spaced(self, num_steps: int) -> torch.Tensor:
        """`num_steps` distinct descending timesteps from T − 1, spaced as `self.spacing` says."""
        T = self.schedule.num_timesteps
        if self.spacing == "trailing" or num_steps == 1:
            # torch.round is round-half-even, like numpy (and so diffusers' "trailing" spacing).
            return torch.round(T - torch.arange(num_steps, dtype=torch.float64) * (T / num_steps)).long() - 1
        if self.spacing == "linspace":
            return torch.round(torch.linspace(T - 1, 0, num_steps, dtype=torch.float64)).long()
        ab = self.schedule.alphas_cumprod
        lam = 0.5 * (torch.log(ab) - torch.log1p(-ab))  # λ_t, decreasing in t
        targets = torch.linspace(float(lam[-1]), float(lam[0]), num_steps, dtype=torch.float64)
        nearest = (lam[None, :] - targets[:, None]).abs().argmin(1).tolist()
        out: list[int] = []
        for i, t in enumerate(nearest):  # strictly decreasing, leaving room for the steps still to come
            out.append(max(min(t, out[-1] - 1 if out else T - 1), num_steps - 1 - i))
        return torch.tensor(out, dtype=torch.long)

    def reset(self) -> None:
        """Forget any multistep history (DPM-Solver's previous x̂₀); nothing to forget here."""

    def prev_timestep(self, t: torch.Tensor | int) -> int:
        """The timestep that `step(…, t, …)` moves to: the next one in the list, or −1 after the last."""
        t = int(t)
        if not self._next:
            raise RuntimeError("call set_timesteps(num_steps) before step()")
        if t not in self._next:
            raise ValueError(f"timestep {t} is not in this sampler's timesteps {self.timesteps.tolist()}")
        return self._next[t]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return self.schedule.add_noise(x0, noise, t)

    def alpha_bar64(self, t: int, x: torch.Tensor) -> torch.Tensor:
        """ᾱ_t in float64 on x's device, shaped to broadcast against x; coefficients are combined in float64 and
        only then cast to x's dtype, so that e.g. 1 − ᾱ near ᾱ = 1 keeps its precision."""
        return self.schedule.alpha_bar(t, x, dtype=torch.float64)

    def predict(self, model_output: torch.Tensor, t: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀, ε̂) from the network's output at (x, t); with clip_x0, x̂₀ is clamped to [−1, 1] and ε̂ re-derived
        from it so that x = √ᾱ·x̂₀ + √(1 − ᾱ)·ε̂ still holds."""
        x0, eps = self.schedule.split_prediction(model_output, x, t, self.prediction_type)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            a, s = self.schedule.signal_noise(t, x)
            eps = (x - a * x0) / s
        return x0, eps

    def begin_step(self, model_output: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor,
                   ) -> tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What every `step` starts from: (t, the timestep it moves to, x̂₀, ε̂, ᾱ_t, ᾱ there), ᾱs in float64."""
        t = int(t)
        t_next = self.prev_timestep(t)
        x0, eps = self.predict(model_output, t, x)
        return t, t_next, x0, eps, self.alpha_bar64(t, x), self.alpha_bar64(t_next, x)

    @staticmethod
    def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise shaped like x, drawn on the generator's device (so a seeded CPU generator gives the
        same images on any device), or from the global RNG on x's device."""
        device = generator.device if generator is not None else x.device
        # Drawn in float32 (float64 for float64 x) whatever x's dtype: the same seed gives the same noise in float16,
        # bfloat16 and float32, and a CPU generator is several times faster in float32 than in half precision.
        dtype = torch.promote_types(x.dtype, torch.float32)
        return torch.randn(x.shape, generator=generator, device=device, dtype=dtype).to(x.device, x.dtype)

    def step(self, model_output: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x at `prev_timestep(t)` (the clean image after the last timestep), given the network's output at (x, t)."""
        raise NotImplementedError
