"""Diffusion samplers ("schedulers" in diffusers' sense) over a discrete `NoiseSchedule`: DDPM, DDIM and
DPM-Solver++(2M). All share one interface:

    sampler = make_sampler("ddim", schedule, prediction_type="v", eta=0.0)
    for t in sampler.set_timesteps(num_steps, strength=1.0):
        x = sampler.step(model_fn(x, t), t, x, generator=gen)
"""

from genlab.errors import ConfigError
from genlab.schedulers.base import Sampler
from genlab.schedulers.ddim import DDIMSampler
from genlab.schedulers.ddpm import DDPMSampler
from genlab.schedulers.dpm_solver import DPMSolverSampler
from genlab.schedulers.schedule import NoiseSchedule

SAMPLERS: dict[str, type[Sampler]] = {cls.name: cls for cls in (DDPMSampler, DDIMSampler, DPMSolverSampler)}


def make_sampler(name: str, schedule: NoiseSchedule, prediction_type: str = "epsilon", **options: object) -> Sampler:
    """A fresh sampler by name, e.g. make_sampler("ddim", schedule, eta=0.5, clip_x0=False)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    cls = SAMPLERS[name]
    allowed = cls.option_names()
    for key in options:
        if key not in allowed:
            raise ConfigError(f"sampler {name!r} has no option {key!r}; its options are {', '.join(allowed)}")
    return cls(schedule, prediction_type, **options)


__all__ = ["SAMPLERS", "DDIMSampler", "DDPMSampler", "DPMSolverSampler", "NoiseSchedule", "Sampler", "make_sampler"]
