"""Image generation in batches, the loop that every image command and pipeline shares."""

import inspect
from typing import Any

import torch

from genlab.data.images import from_model_range
from genlab.errors import ConfigError
from genlab.progress import progress_bar


def sampling_options(model: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The given (not None) sampling options, checked against those the model's `generate` takes."""
    given = {k: v for k, v in options.items() if v is not None}
    known = getattr(model, "sampling_option_names", ())
    bad = sorted(set(given) - set(known))
    if bad:
        name = getattr(model, "registry_name", type(model).__name__)
        raise ConfigError(f"--{bad[0]} applies to diffusion models; a {name!r} model samples in one pass")
    if known:
        model.sampling_options(**given)  # checks the values now, before any work is done
    return given


def generate_uint8(model: Any, num_samples: int, labels: torch.Tensor | None = None, seed: int | None = None,
                   batch_size: int = 500, progress: bool = False, prompts: list[str] | None = None,
                   desc: str = "sampling", **options: Any) -> torch.Tensor:
    """`num_samples` images from `model` as uint8 (N,C,H,W) on the CPU, in batches, reproducible with `seed`.
    `labels` (class ids) or `prompts` (strings): one per image, for conditional or text-conditioned models;
    `options`: the model's sampling options (a diffusion model's sampler, steps, guidance), None for defaults."""
    if num_samples < 1:
        raise ConfigError("--num-samples must be at least 1")
    options = sampling_options(model, options)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out = []
    # A model that samples in many steps (diffusion) shows them too: a batch of 500 can take minutes.
    steps_bar = {"progress": progress} if "progress" in inspect.signature(model.generate).parameters else {}
    with torch.no_grad(), progress_bar(total=num_samples, unit="image", desc=desc, leave=False,
                                       disable=not progress) as bar:
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            extra = {"prompts": prompts[start:start + n]} if prompts is not None else {}
            extra |= steps_bar
            y = labels[start:start + n] if labels is not None else None
            x = model.generate(n, labels=y, generator=gen, **extra, **options)
            out.append(from_model_range(x.detach().float().cpu(), model.pixel_range))
            bar.update(n)
    return torch.cat(out)
