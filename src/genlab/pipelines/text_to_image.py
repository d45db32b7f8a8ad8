"""Text to image: prompts → text encoder → image model (and its sampler) → images, in one call.

    import genlab
    from genlab.pipelines import TextToImagePipeline

    pipe = TextToImagePipeline(genlab.load("runs/t2i"))
    out = pipe(["a small dark ankle boot", "a wide bright pullover"], num_samples=8, guidance=3, seed=0)
    out.images        # uint8 (16, C, H, W): 8 images of the first prompt, then 8 of the second
    out.grid()        # (H', W', C) uint8 array, one row per prompt

The model is any text-conditioned image model of genlab (diffusion with cross-attention or pooled text, the
conditional VAE, the conditional GAN): the pipeline only asks it to `generate(n, prompts=..., generator=...)`,
so the same call serves all of them. `guidance`, `steps` and `sampler` are a diffusion model's; an empty prompt
samples unconditionally (guidance off). Prompts longer than the encoder's limit are truncated with a warning.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genlab.data.images import image_grid
from genlab.errors import ConfigError
from genlab.pipelines.images import generate_uint8


def describe_conditioning(model: Any) -> str:
    """How a run's model is conditioned, in words, for error messages."""
    if getattr(model, "text_conditioned", False):
        return "on text"
    if getattr(model, "conditional", False):
        names = (getattr(model, "artifacts", None) or {}).get("class_names") or []
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        return f"on class labels ({shown}): use `genlab sample RUN --label NAME`" if names else "on class labels"
    return "without any condition (unconditional): use `genlab sample RUN`"


@dataclass
class TextToImageOutput:
    images: torch.Tensor  # uint8 (N, C, H, W) on the CPU, `num_samples` per prompt, prompt after prompt
    prompts: list[str]  # the prompt of each image
    num_samples: int  # images per prompt
    seed: int | None
    options: dict[str, Any] = field(default_factory=dict)  # the sampling options given

    def grid(self) -> np.ndarray:
        """One row per prompt: (H', W', C) uint8."""
        return image_grid(self.images, nrow=self.num_samples)


class TextToImagePipeline:
    """A text-conditioned image model behind one call: prompts in, uint8 images out."""

    def __init__(self, model: Any, batch_size: int = 256):
        if not getattr(model, "text_conditioned", False):
            raise ConfigError(f"this run's model was trained {describe_conditioning(model)}; a prompt needs a model "
                              "trained with --text-encoder on captioned images")
        self.model, self.batch_size = model, batch_size

    def __call__(self, prompt: str | Sequence[str], num_samples: int = 1, *, guidance: float | None = None,
                 steps: int | None = None, sampler: str | None = None, seed: int | None = None,
                 progress: bool = False) -> TextToImageOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError("give at least one prompt (a string; \"\" samples unconditionally)")
        if num_samples < 1:
            raise ConfigError("--num-samples must be at least 1")
        options = {"guidance": guidance, "steps": steps, "sampler": sampler}
        every = [p.strip() for p in prompts for _ in range(num_samples)]
        images = generate_uint8(self.model, len(every), prompts=every, seed=seed, batch_size=self.batch_size,
                                progress=progress, desc="generating", **options)
        options = {k: v for k, v in options.items() if v is not None}
        return TextToImageOutput(images, every, num_samples, seed, options)
