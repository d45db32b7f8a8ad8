"""Denoising diffusion models on pixels: a U-Net learns to undo Gaussian noise; samplers turn it into images.

References:
    Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (the simple ε-prediction loss, linear β,
        the variational bound of §3.3 with the discretised Gaussian decoder of Eq. 13)
    Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models" (cosine schedule, respacing)
    Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models" (v-prediction)
    Ho & Salimans 2022, "Classifier-Free Diffusion Guidance" (label dropped with probability p in training;
        ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅) at sampling: w = 0 is the plain conditional model)
    Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations"
    Lugmayr et al. 2022, "RePaint" (inpainting: the known pixels, noised to the current level, replace the
        model's at every step; here without RePaint's resampling loops)
    Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models" (η = 0: a deterministic map from noise to
        images, which makes latent walks between noise vectors meaningful)

Training (`train_step`): x₀ in [−1, 1], t ~ U{0..T−1} (or logit-normal, `--timestep-sampling`), ε ~ N(0, I),
x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε; the network predicts ε, v or x₀ (`--prediction`) and the loss is the mean squared
error against it (plus `--grounding-weight` and `--grounding-pixel-weight` × genlab.nn.grounding's two losses on
the cross-attention maps, for captions whose phrases are placed in their images). A conditional model
replaces the label by the "null" label (index K) with probability `--cond-drop`, so the same network is also
the unconditional model that guidance needs. An EMA copy of the denoiser (saved, resumed) is what samples.

Validation ("loss"): the same squared error of the EMA denoiser on validation images at timesteps and noise
drawn from a fixed seed, so it is comparable across steps. `genlab eval` adds sample quality (FD/KID/precision/
recall, per-label accuracy) and the variational bound in bits per dimension.

    genlab train diffusion --data fashion-mnist --conditional --max-seconds 1200
    genlab sample runs/diffusion --sampler ddim --steps 50 --guidance 3 --label Sneaker --seed 1
    genlab edit runs/diffusion --image boot.png --strength 0.6 --label Sandal
    genlab edit runs/diffusion --image boot.png --mask mask.png          # white = repaint, black = keep
    genlab train diffusion --data fashion-mnist-captions --text-encoder minilm        # text to image
    genlab generate runs/t2i "a small dark ankle boot" --guidance 3

Text conditioning (`--text-encoder`, genlab.nn.conditioning): the prompt's pooled embedding joins the timestep
embedding (unless `--pooled-prompt false`) and, with `--cross-attention` (the default), the U-Net attends to its
token states (Rombach et al. 2022); the null condition of guidance is the empty prompt, trained with
probability `--cond-drop`.
"""

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import Choice, Range, option
from genlab.cpu import flush_denormals
from genlab.data.images import class_ids
from genlab.errors import ConfigError
from genlab.models.diffusion.unet import TextContext, UNet, check_unet_shape
from genlab.nn.conditioning import Condition, TextConditioner, TextConditioningConfig, as_prompts, load_pretrained_text
from genlab.nn.ema import update_ema
from genlab.nn.grounding import grounding_loss, phrase_targets, pixel_grounding_loss
from genlab.progress import progress_bar
from genlab.registry import register
from genlab.schedulers import SAMPLERS, NoiseSchedule, Sampler, make_sampler
from genlab.schedulers.base import SPACINGS
from genlab.schedulers.schedule import BETA_SCHEDULES, PREDICTION_TYPES, TIMESTEP_SAMPLINGS, sample_timesteps
from genlab.trainer import StepContext, Trainable


@dataclass
class DiffusionConfig(TextConditioningConfig):
    channels: int = field(default=1, metadata={"derived": True})  # from the images
    image_size: int = field(default=28, metadata={"derived": True})  # from the images (square)
    num_classes: int = field(default=0, metadata={"derived": True})  # from the labels (0: unlabelled)
    base_channels: int = option(32, "U-Net: channels of the first level", Choice((16, 32, 48)))
    channel_mult: tuple[int, ...] = option((1, 2, 2), "U-Net: width of each level as a multiple of base_channels; "
                                                      "each level after the first halves the resolution")
    num_res_blocks: int = option(1, "U-Net: residual blocks per level (the decoder has one more)")
    attention_levels: int = option(1, "U-Net: self-attention in the lowest this many levels (and the middle)")
    attention_heads: int = option(4, "U-Net: heads of each self-attention layer")
    position_embedding: bool = option(False, "U-Net: a learned position embedding in every attention layer (tells "
                                             "each part of the image where it is)")
    patch_size: int = option(1, "U-Net: fold each patch of this many pixels square into channels, so the U-Net "
                                "runs at a 1/patch_size resolution (2: about 4x faster; Hoogeboom et al. 2023)")
    dropout: float = option(0.1, "U-Net: dropout in the residual blocks", Range(0.0, 0.3))
    cond_dim: int = option(64, "size of the conditioning vector (class or pooled text embedding) and of the "
                               "projected prompt tokens")
    cross_attention: bool = option(True, "text models: U-Net features attend to the prompt's tokens (false: the "
                                         "pooled embedding alone)")
    pooled_prompt: bool = option(True, "text models with cross-attention: the prompt's pooled embedding also joins "
                                       "the timestep embedding (false: the prompt enters through cross-attention "
                                       "alone, as in Stable Diffusion)")
    timesteps: int = option(1000, "T, the number of noise levels of training")
    noise_schedule: str = option("cosine", "linear (Ho et al. 2020) or cosine (Nichol & Dhariwal 2021)")
    prediction: str = option("v", "what the U-Net predicts: epsilon, v (Salimans & Ho 2022) or x0")
    timestep_sampling: str = option("uniform", "how training draws noise levels: uniform, or logit-normal (t/T = "
                                               "sigmoid(mean + std·N(0, 1)), Esser et al. 2024)")
    timestep_mean: float = option(0.0, "logit-normal timesteps: the centre (0: T/2; 1.1: about 0.75·T, noisier)")
    timestep_std: float = option(1.0, "logit-normal timesteps: the spread")
    grounding_weight: float = option(0.0, "text models: weight of a loss that asks cross-attention to read each "
                                          "phrase where its item lies (TokenCompose); needs grounded captions "
                                          "(the built-in scenes sets)")
    grounding_pixel_weight: float = option(0.0, "text models: weight of TokenCompose's second grounding loss, which "
                                                "asks each position inside a phrase's box to read that phrase")
    conditional: bool = option(False, "class-conditional with classifier-free guidance; needs labels")
    cond_drop: float = option(0.1, "probability of training on the null label (Ho & Salimans 2022)")
    ema_decay: float = option(0.999, "EMA of the denoiser's weights used for sampling; 0 disables")
    sampler: str = option("dpm-solver++", f"default sampler of sample/eval: {', '.join(SAMPLERS)}")
    sample_steps: int = option(20, "default number of sampling steps")
    guidance: float = option(1.0, "default guidance scale w of conditional and text models (0: no guidance)")
    eta: float = option(0.0, "default DDIM η (0: deterministic, 1: as DDPM)")

    def validate(self) -> None:
        if self.noise_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"unknown --noise-schedule {self.noise_schedule!r}; choose {', '.join(BETA_SCHEDULES)}")
        if self.prediction not in PREDICTION_TYPES:
            raise ConfigError(f"unknown --prediction {self.prediction!r}; choose {', '.join(PREDICTION_TYPES)}")
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ConfigError(f"unknown --timestep-sampling {self.timestep_sampling!r}; "
                              f"choose {', '.join(TIMESTEP_SAMPLINGS)}")
        if self.timestep_std <= 0:
            raise ConfigError("--timestep-std must be positive")
        if min(self.grounding_weight, self.grounding_pixel_weight) < 0:
            raise ConfigError("--grounding-weight and --grounding-pixel-weight must be non-negative")
        if self.grounded and not (self.text_encoder and self.cross_attention):
            raise ConfigError("--grounding-weight and --grounding-pixel-weight act on cross-attention to the "
                              "prompt: they need --text-encoder and --cross-attention true")
        if not self.pooled_prompt and not (self.text_encoder and self.cross_attention):
            raise ConfigError("--pooled-prompt false leaves cross-attention as the prompt's only way in: it needs "
                              "--text-encoder and --cross-attention true")
        if min(self.base_channels, self.num_res_blocks, self.attention_heads, self.cond_dim, self.patch_size) < 1 or \
                not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError("base_channels, channel_mult entries, num_res_blocks, attention_heads, cond_dim and "
                              "patch_size must be at least 1")
        if not 0 <= self.attention_levels <= len(self.channel_mult):
            raise ConfigError(f"--attention-levels must be in 0..{len(self.channel_mult)} (the U-Net's levels)")
        if self.timesteps < 2:
            raise ConfigError("--timesteps must be at least 2")
        if not 0 <= self.dropout < 1 or not 0 <= self.cond_drop < 1:
            raise ConfigError("--dropout and --cond-drop must be in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("--ema-decay must be in [0, 1)")
        SamplingOptions(self.sampler, self.sample_steps, self.guidance, self.eta).validate(self.timesteps)
        self.validate_text()

    @property
    def grounded(self) -> bool:
        """Whether training adds a grounding loss (genlab.nn.grounding)."""
        return self.grounding_weight > 0 or self.grounding_pixel_weight > 0

    def validate_shapes(self) -> None:
        """Checks that need the data's shapes (called when the model is built)."""
        if self.conditional and self.num_classes < 2:
            raise ConfigError("--conditional needs labelled images with at least two classes; "
                              f"this data set has {self.num_classes}")
        check_unet_shape(self.image_size, self.channel_mult, self.patch_size)


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: the sampler's name, its number of steps, the guidance scale w, DDIM's η and the timestep
    spacing (None: the sampler's own default; see genlab.schedulers.base)."""

    sampler: str
    steps: int
    guidance: float
    eta: float
    spacing: str | None = None

    def validate(self, num_timesteps: int) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not 1 <= self.steps <= num_timesteps:
            raise ConfigError(f"--steps must be between 1 and the model's {num_timesteps} training timesteps, "
                              f"not {self.steps}")
        if self.guidance < 0:
            raise ConfigError(f"--guidance must be non-negative, not {self.guidance}")
        if not 0 <= self.eta <= 1:
            raise ConfigError(f"--eta must be in [0, 1], not {self.eta}")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise ConfigError(f"unknown --spacing {self.spacing!r}; choose one of {', '.join(SPACINGS)}")

    def make(self, schedule: NoiseSchedule, prediction: str) -> Sampler:
        options: dict[str, Any] = {"eta": self.eta} if self.sampler == "ddim" else {}
        return make_sampler(self.sampler, schedule, prediction_type=prediction, spacing=self.spacing, **options)


class Denoiser(nn.Module):
    """(x_t, t, condition) → the U-Net's prediction. The condition is given as labels, indexing a learned table
    whose last row is the null label ∅ of classifier-free guidance, as prompts, read by a text conditioner
    (the empty prompt is ∅), or already encoded (`cond`: samplers encode the prompts once, not at every step)."""

    def __init__(self, c: DiffusionConfig):
        super().__init__()
        self.label_embed = nn.Embedding(c.num_classes + 1, c.cond_dim) if c.conditional else None
        cross = c.text_conditioned and c.cross_attention
        pooled = c.text_conditioned and c.pooled_prompt
        self.text = TextConditioner(c.text_spec, c.cond_dim if pooled else None, c.cond_dim if cross else None) \
            if c.text_conditioned else None
        self.vector_conditioned = c.conditional or pooled
        self.unet = UNet(c.channels, c.image_size, c.base_channels, tuple(c.channel_mult), c.num_res_blocks,
                         c.attention_levels, c.attention_heads, c.dropout, c.cond_dim if self.vector_conditioned else 0,
                         c.cond_dim if cross else 0, c.position_embedding, c.patch_size)

    def condition(self, labels: torch.Tensor | None = None, prompts: list[str] | None = None) -> Condition | None:
        if self.text is not None:
            if prompts is None:
                raise ValueError("a text-conditioned denoiser needs prompts")
            return self.text(prompts)
        if self.label_embed is not None:
            return Condition(self.label_embed(labels))  # (B, cond_dim)
        return None

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                prompts: list[str] | None = None, cond: Condition | None = None,
                attention_maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`attention_maps`: a list that each cross-attention layer appends its map (B, H, W, L) to."""
        if cond is None:
            cond = self.condition(labels, prompts)
        if cond is None:
            return self.unet(x, t)
        context = TextContext(cond.tokens, cond.mask, attention_maps) if cond.tokens is not None else None
        return self.unet(x, t, cond.vector if self.vector_conditioned else None, context)


@register("diffusion", task="images")
class Diffusion(Trainable, nn.Module):
    """Denoising diffusion model (U-Net; ε/v/x₀; DDPM, DDIM, DPM-Solver++; guidance, SDEdit, inpainting)."""

    Config = DiffusionConfig
    pixel_range = "symmetric"
    item_name = "images"
    sampling_option_names = ("sampler", "steps", "guidance", "eta", "spacing")
    # The validation loss (denoising error) does not measure samples: `genlab tune` scores trials by their FD.
    tune_by_sample_fd = True
    # A small U-Net learns fastest with a higher lr than Ho et al.'s 2e-4; validation is a full U-Net pass per
    # image, so it uses a few batches.
    train_defaults = {"lr": 1e-3, "batch_size": 64, "warmup_steps": 200, "weight_decay": 0.0,
                      "eval_interval": 500, "eval_batches": 4}

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        config.validate_shapes()
        self.config = config
        self.schedule = NoiseSchedule.named(config.noise_schedule, config.timesteps)
        self.denoiser = Denoiser(config)
        # The EMA copy is a submodule, so it is in state_dict: saved, loaded and resumed with the rest.
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False) if config.ema_decay > 0 else None

    @classmethod
    def shapes_from_data(cls, channels: int, image_size: int, num_classes: int) -> dict[str, int]:
        return {"channels": channels, "image_size": image_size, "num_classes": num_classes}

    @property
    def conditional(self) -> bool:
        return self.config.conditional

    @property
    def text_conditioned(self) -> bool:
        return self.config.text_conditioned

    def load_pretrained(self) -> None:
        """At training start: a pretrained text encoder's weights (a language-model run) into the denoiser and
        its EMA copy."""
        load_pretrained_text(self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def sampling_net(self) -> Denoiser:
        return self.ema if self.ema is not None else self.denoiser

    @property
    def null_label(self) -> int:
        return self.config.num_classes

    # --- training ---

    def networks(self) -> dict[str, nn.Module]:
        return {"model": self.denoiser}

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        x0 = batch["x"]  # (B, C, H, W) in [−1, 1]
        B = x0.shape[0]
        labels = prompts = None
        if self.conditional:
            drop = torch.rand(B, device=x0.device) < self.config.cond_drop
            labels = torch.where(drop, torch.full_like(batch["y"], self.null_label), batch["y"])
        elif self.text_conditioned:
            drop = (torch.rand(B) < self.config.cond_drop).tolist()
            prompts = ["" if d else p for d, p in zip(drop, batch["text"], strict=True)]
        c = self.config
        t = sample_timesteps(B, c.timesteps, c.timestep_sampling, c.timestep_mean, c.timestep_std, x0.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.add_noise(x0, noise, t)
        maps: list[torch.Tensor] | None = [] if c.grounded else None
        with ctx.autocast():
            out = ctx.nets["model"](x_t, t, labels, prompts, attention_maps=maps)
        loss = F.mse_loss(out.float(), self.schedule.target(x0, noise, t, self.config.prediction))
        logs = {"loss": loss.item(), "items": float(B)}
        if maps is not None:  # grounding: validated to come with a text encoder, so prompts are given
            if "grounding" not in batch:
                raise ConfigError("--grounding-weight needs batches with grounded captions")
            phrases = [[] if p == "" else g for p, g in zip(prompts, batch["grounding"], strict=True)]
            targets = phrase_targets(self.denoiser.text.encoder, prompts, phrases, maps[0].shape[-1], x0.device)
            for name, weight, term in (("grounding", c.grounding_weight, grounding_loss),
                                       ("grounding_pixel", c.grounding_pixel_weight, pixel_grounding_loss)):
                if weight > 0:
                    value = term(maps, *targets)
                    loss = loss + weight * value
                    logs[name] = value.item()
        ctx.optimize("model", loss)
        if self.ema is not None:
            update_ema(self.ema, self.denoiser, self.config.ema_decay, ctx.step + 1)
        return logs

    @torch.no_grad()
    def evaluate(self, val_data: Any, max_batches: int | None = None) -> dict[str, float]:
        """{"loss": the sampling (EMA) denoiser's squared error on validation images at timesteps and noise
        drawn from a fixed seed}. `val_data` is genlab.tasks.images.ImageSplit."""
        net, device = self.sampling_net, self.device
        gen = torch.Generator().manual_seed(0)
        total, count = 0.0, 0
        for batch in val_data.batches(self.pixel_range, device, max_batches):
            x0 = batch["x"]
            t = torch.randint(0, self.config.timesteps, (len(x0),), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            out = net(self.schedule.add_noise(x0, noise, t), t, batch["y"] if self.conditional else None,
                      batch.get("text") if self.text_conditioned else None)
            target = self.schedule.target(x0, noise, t, self.config.prediction)
            total += float(F.mse_loss(out.float(), target, reduction="sum"))
            count += target.numel()
        return {"loss": total / max(count, 1)}

    # --- sampling ---

    def sampling_options(self, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                         eta: float | None = None, spacing: str | None = None) -> SamplingOptions:
        """The run's defaults with any given option in their place, checked."""
        c = self.config
        guided = self.conditional or self.text_conditioned
        if guidance is not None and guidance != 0 and not guided:
            raise ConfigError("--guidance needs a conditional or text-conditioned model; this one is unconditional")
        opts = SamplingOptions(c.sampler if sampler is None else sampler, c.sample_steps if steps is None else steps,
                               (c.guidance if guidance is None else guidance) if guided else 0.0,
                               c.eta if eta is None else eta, spacing)
        opts.validate(c.timesteps)
        if eta is not None and opts.sampler != "ddim":
            raise ConfigError(f"--eta applies to the ddim sampler, not {opts.sampler}")
        return opts

    def _labels(self, labels: Any, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """Class ids (N,) on the model's device: given (one for all or one each) or drawn uniformly."""
        if not self.conditional:
            if labels is not None:
                raise ConfigError("this diffusion model was trained without labels; --label needs a model trained "
                                  "with --conditional on labelled images")
            return None
        if labels is None:
            gen_device = generator.device if generator is not None else self.device
            labels = torch.randint(0, self.config.num_classes, (n,), generator=generator, device=gen_device)
        return class_ids(labels, n, self.config.num_classes).to(self.device)

    def conditions(self, n: int, labels: Any = None, prompts: Any = None, generator: torch.Generator | None = None,
                   null: bool = False) -> tuple[Condition | None, Condition | None]:
        """(condition, null condition) of n images for the sampling net: from class ids, from prompts (one for all
        or one each), or the null condition twice when `null` (no new condition: unconditional denoising)."""
        net = self.sampling_net
        if prompts is not None and not self.text_conditioned:
            raise ConfigError("this diffusion model was trained without text; a prompt needs a model trained with "
                              "--text-encoder on captioned images")
        if self.text_conditioned:
            if labels is not None:
                raise ConfigError("this diffusion model is conditioned on text; give a prompt, not a label")
            empty = net.condition(prompts=[""] * n)
            return (empty, empty) if null or prompts is None else (net.condition(prompts=as_prompts(prompts, n)), empty)
        if not self.conditional:
            self._labels(labels, n, generator)  # the error for a label given to an unconditional model
            return None, None
        empty = net.condition(torch.full((n,), self.null_label, device=self.device))
        return (empty, empty) if null else (net.condition(self._labels(labels, n, generator)), empty)

    def guided_output(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None, null: Condition | None,
                      guidance: float) -> torch.Tensor:
        """The network's output with classifier-free guidance: out_∅ + (1 + w)(out_c − out_∅), one batched pass.
        Guidance is linear in the output, so it is the same whether the net predicts ε, v or x₀."""
        net = self.sampling_net
        if cond is None or null is None or guidance == 0:
            return net(x, t, cond=cond).float()
        out_c, out_u = net(torch.cat([x, x]), torch.cat([t, t]), cond=cond.cat(null)).float().chunk(2)
        return out_u + (1 + guidance) * (out_c - out_u)

    def _randn(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        # Drawn on the generator's device, so a seeded CPU generator gives the same images on every device.
        device = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=device).to(self.device)

    def make_sampler(self, opts: SamplingOptions, strength: float = 1.0) -> Sampler:
        """A fresh sampler for `opts`, its timesteps set (the last `strength` of them)."""
        sampler = opts.make(self.schedule, self.config.prediction)
        sampler.set_timesteps(opts.steps, strength)
        return sampler

    @torch.no_grad()
    def denoise(self, x: torch.Tensor, cond: Condition | None, null: Condition | None, sampler: Sampler,
                guidance: float, generator: torch.Generator | None = None, known: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
        """Run `sampler` from x, the noisy images at its first timestep, to clean images in [−1, 1], guided from
        the null condition towards `cond` (see `conditions`).

        With `known` (clean images) and `mask` (1 = generate, 0 = keep), the kept pixels are replaced after every
        step by `known` noised to the next step's level (inpainting)."""
        net = self.sampling_net
        was_training = net.training
        net.eval()
        with flush_denormals():
            try:
                bar = progress_bar([int(t) for t in sampler.timesteps], desc="denoising", unit="step", leave=False,
                           disable=not progress)
                for t in bar:
                    t_batch = torch.full((len(x),), t, device=x.device, dtype=torch.long)
                    x = sampler.step(self.guided_output(x, t_batch, cond, null, guidance), t, x, generator=generator)
                    if mask is not None and known is not None:
                        t_next = sampler.prev_timestep(t)
                        kept = known if t_next < 0 else self.schedule.add_noise(
                            known, self._randn(tuple(known.shape), generator), t_next)
                        x = mask * x + (1 - mask) * kept
            finally:
                net.train(was_training)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def generate(self, num_samples: int, labels: Any = None, generator: torch.Generator | None = None, *,
                 prompts: Any = None, sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, eta: float | None = None, spacing: str | None = None,
                 batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """(num_samples, C, H, W) in [−1, 1]: pure noise denoised by the sampler (run defaults for what is not
        given). `labels`: class ids for a conditional model (one for all or one each; None draws them);
        `prompts`: text for a text-conditioned model (one for all or one each; "" or None: unconditional)."""
        opts = self.sampling_options(sampler, steps, guidance, eta, spacing)
        if self.text_conditioned and labels is not None:
            raise ConfigError("this diffusion model is conditioned on text; give a prompt, not a label")
        text = None if prompts is None else as_prompts(prompts, num_samples)
        # An empty prompt is the null condition, for which guidance changes nothing: one pass per step, not two.
        unconditional = self.text_conditioned and (text is None or all(p == "" for p in text))
        y = None if self.text_conditioned else self._labels(labels, num_samples, generator)
        c = self.config
        out = []
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            cond, null = self.conditions(n, None if y is None else y[start:start + n],
                                         None if text is None else text[start:start + n], generator,
                                         null=unconditional)
            x = self._randn((n, c.channels, c.image_size, c.image_size), generator)
            out.append(self.denoise(x, cond, null, self.make_sampler(opts), 0.0 if unconditional else opts.guidance,
                                    generator, progress=progress))
        return torch.cat(out) if out else torch.empty(0, c.channels, c.image_size, c.image_size, device=self.device)

    # --- latent walks: the noise x_T is the latent, DDIM (η = 0) the deterministic decoder ---

    def noise(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        return torch.randn(n, c.channels * c.image_size**2, device=device, generator=generator)  # (n, C·H·W)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: Any = None, prompts: Any = None) -> torch.Tensor:
        """Images (N, C, H, W) in [−1, 1] from noise vectors z (N, C·H·W) by deterministic DDIM with the run's
        step count and guidance; a conditional model needs labels, a text model takes prompts."""
        c = self.config
        opts = self.sampling_options("ddim", eta=0.0)
        if self.conditional and labels is None:
            raise ConfigError("a conditional diffusion model needs a label for every image")
        cond, null = self.conditions(len(z), labels, prompts, null=self.text_conditioned and prompts is None)
        x = z.to(self.device).reshape(len(z), c.channels, c.image_size, c.image_size)
        return self.denoise(x, cond, null, self.make_sampler(opts), opts.guidance)

    # --- editing ---

    @torch.no_grad()
    def edit(self, images: torch.Tensor, labels: Any = None, strength: float = 0.6, mask: torch.Tensor | None = None,
             generator: torch.Generator | None = None, *, prompts: Any = None, sampler: str | None = None,
             steps: int | None = None, guidance: float | None = None, eta: float | None = None,
             spacing: str | None = None) -> torch.Tensor:
        """SDEdit: noise `images` (N, C, H, W in [−1, 1]) to level `strength` ∈ (0, 1] and denoise them with
        `labels` or `prompts` (the new condition; neither: unconditional). With `mask` (N or 1, 1, H, W;
        1 = generate, 0 = keep), inpainting: the kept pixels are re-imposed at every step and are exactly the
        input's at the end."""
        opts = self.sampling_options(sampler, steps, guidance, eta, spacing)
        if not 0 < strength <= 1:
            raise ConfigError(f"--strength must be in (0, 1], not {strength}")
        stepper = self.make_sampler(opts, strength)
        x0 = images.to(self.device, torch.float32)
        keep = labels is None and (prompts is None or prompts == "")
        if keep and (self.conditional or self.text_conditioned):  # no new condition: denoise unconditionally
            opts = dataclasses.replace(opts, guidance=0.0)
        cond, null = self.conditions(len(x0), labels, None if keep else prompts, generator, null=keep)
        x = self.schedule.add_noise(x0, self._randn(tuple(x0.shape), generator), int(stepper.timesteps[0]))
        if mask is None:
            return self.denoise(x, cond, null, stepper, opts.guidance, generator)
        m = mask.to(self.device, torch.float32)
        out = self.denoise(x, cond, null, stepper, opts.guidance, generator, known=x0, mask=m)
        return m * out + (1 - m) * x0

    # --- likelihood: the variational bound of Ho et al. 2020, §3.3 ---

    @torch.no_grad()
    def likelihood_report(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                          prompts: list[str] | None = None, likelihood_images: int = 256,
                          likelihood_timesteps: int = 100, batch_size: int = 128,
                          seed: int = 0, **unused: Any) -> dict[str, Any]:
        """An upper bound of −log p(x) on the first `likelihood_images` images (uint8, N×C×H×W), in nats per
        image and bits per dimension: L_T + Σ_{t=1}^{T−1} L_t + L_0 (terms indexed 0..T−1 as the schedule):

            L_T  = KL(q(x_T | x₀) ‖ N(0, I))                        the prior term (no network)
            L_t  = KL(q(x_{t−1} | x_t, x₀) ‖ p_θ(x_{t−1} | x_t))    = c_t²·‖x₀ − x̂₀‖² / (2 β̃_t)
            L_0  = −log p_θ(x₀ | x₁), a Gaussian discretised to the 256 pixel levels (Ho et al., Eq. 13)

        with the reverse process's variances fixed to the posterior's, β̃_t (β̃_1 at the first step, where β̃ = 0).
        Each term is a one-noise-sample estimate, as in Ho et al. With `likelihood_timesteps` K < T − 1 the sum of
        the T − 1 middle terms is estimated by stratified sampling (K equal strata, one timestep drawn in each,
        weighted by the stratum's size): an unbiased estimate of the same bound, its standard error reported.
        A conditional model is scored given each image's label, without guidance (given the null label, i.e. as
        the unconditional model, when the split has no labels); a text model given each image's caption
        (`prompts`; the empty prompt without them)."""

        if likelihood_images < 1 or likelihood_timesteps < 1:
            raise ConfigError("--likelihood-images and --likelihood-timesteps must be at least 1")
        T = self.config.timesteps
        images = images[:likelihood_images]
        if self.conditional:
            labels = labels[:likelihood_images] if labels is not None else torch.full((len(images),), self.null_label)
        else:
            labels = None
        if self.text_conditioned:
            prompts = list(prompts[:likelihood_images]) if prompts is not None else [""] * len(images)
        else:
            prompts = None
        net = self.sampling_net
        was_training = net.training
        net.eval()
        try:
            nats = self._bound(net, images, labels, prompts, likelihood_timesteps, batch_size, seed)
        finally:
            net.train(was_training)
        K = min(likelihood_timesteps, T - 1)
        dims = math.prod(images.shape[1:])
        to_bpd = 1 / (dims * math.log(2))
        mean = float(nats.mean())
        stderr = float(nats.std() / math.sqrt(len(nats))) if len(nats) > 1 else math.nan
        terms = "all" if K == T - 1 else f"{K} strata (stratified estimate)"
        return {
            "likelihood_model": f"diffusion variational bound (Ho et al. 2020, §3.3), T = {T}, middle terms: {terms}",
            "likelihood_note": (
                f"Likelihood: an upper bound of -log p(x) from the diffusion variational bound (Ho et al. 2020, §3.3; "
                f"discretised Gaussian decoder on 8-bit pixels; reverse variances fixed to the posterior's), on the "
                f"first {len(nats)} images of the split, {terms} of the T - 1 = {T - 1} middle terms; "
                "`vlb_bits_per_dim_stderr` is the standard error over images. Lower is better; for reference, "
                "Ho et al. report <= 3.70 bits/dim on CIFAR-10 (not comparable across data sets)."),
            "vlb_images": len(nats),
            "vlb_timesteps": K,
            "vlb_nats": mean,
            "vlb_bits_per_dim": mean * to_bpd,
            "vlb_bits_per_dim_stderr": stderr * to_bpd,
        }

    def _bound(self, net: Denoiser, images: torch.Tensor, labels: torch.Tensor | None, prompts: list[str] | None,
               strata: int, batch_size: int, seed: int) -> torch.Tensor:
        """The bound's estimate for each image (nats), see `likelihood_report`."""
        from genlab.data.images import to_model_range

        gen = torch.Generator().manual_seed(seed)
        middle = list(range(1, self.config.timesteps))
        K = min(strata, len(middle))
        edges = torch.linspace(0, len(middle), K + 1).round().long().tolist()
        per_image = []
        for start in progress_bar(range(0, len(images), batch_size), desc=f"variational bound ({K} strata)",
                                  unit="batch", leave=False):
            x0 = to_model_range(images[start:start + batch_size], self.pixel_range).to(self.device).double()
            y = net.condition(None if labels is None else labels[start:start + batch_size].to(self.device),
                              None if prompts is None else prompts[start:start + batch_size])
            nats = self._prior_kl(x0) + self._decoder_nll(net, x0, y, gen)
            for a, b in zip(edges[:-1], edges[1:], strict=True):
                t = middle[a + int(torch.randint(0, b - a, (1,), generator=gen))]
                nats = nats + (b - a) * self._kl_term(net, x0, y, t, gen)
            per_image.append(nats.cpu())
        return torch.cat(per_image)

    def _alpha_bars(self, t: int) -> tuple[float, float]:
        ab = self.schedule.alphas_cumprod
        return float(ab[t]), (float(ab[t - 1]) if t > 0 else 1.0)

    def _posterior_variance(self, t: int) -> float:
        ab_t, ab_prev = self._alpha_bars(t)
        return (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)  # β̃_t

    def _predict_x0(self, net: nn.Module, x0: torch.Tensor, y: Condition | None, t: int,
                    gen: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64).to(x0.device)
        x_t = self.schedule.add_noise(x0, noise, t)
        t_batch = torch.full((len(x0),), t, device=x0.device, dtype=torch.long)
        out = net(x_t.float(), t_batch, cond=y).double()
        return self.schedule.split_prediction(out, x_t, t, self.config.prediction)[0]

    def _prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        ab = float(self.schedule.alphas_cumprod[-1])
        mean_sq, var = ab * x0**2, 1 - ab
        return (0.5 * (var + mean_sq - 1 - math.log(var))).flatten(1).sum(1)

    def _kl_term(self, net: nn.Module, x0: torch.Tensor, y: Condition | None, t: int,
                 gen: torch.Generator) -> torch.Tensor:
        ab_t, ab_prev = self._alpha_bars(t)
        coef = math.sqrt(ab_prev) * (1 - ab_t / ab_prev) / (1 - ab_t)  # weight of x₀ in the posterior mean
        x0_hat = self._predict_x0(net, x0, y, t, gen)
        return (coef**2 * (x0 - x0_hat) ** 2 / (2 * self._posterior_variance(t))).flatten(1).sum(1)

    def _decoder_nll(self, net: nn.Module, x0: torch.Tensor, y: Condition | None,
                     gen: torch.Generator) -> torch.Tensor:
        x0_hat = self._predict_x0(net, x0, y, 0, gen)  # the posterior mean at t = 0 is x̂₀ itself
        std = math.sqrt(self._posterior_variance(1))
        return -discretized_gaussian_log_likelihood(x0, x0_hat, std).flatten(1).sum(1)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log P(pixel) per element for 8-bit pixels x in [−1, 1] under N(mean, std²) integrated over the pixel's
    bin of width 2/255, the two end bins reaching to ±∞ (Ho et al. 2020, Eq. 13)."""
    half_bin = 1.0 / 255
    upper = (x - mean + half_bin) / std
    lower = (x - mean - half_bin) / std
    log_cdf_upper = torch.special.log_ndtr(upper)  # log Φ(upper): the lowest bin
    log_sf_lower = torch.special.log_ndtr(-lower)  # log(1 − Φ(lower)): the highest bin
    # log(Φ(u) − Φ(l)) computed as log Φ(u) + log(1 − exp(log Φ(l) − log Φ(u))), stable in both tails
    log_mid = torch.where(
        lower > 0,
        log_sf_lower + torch.log1p(-torch.exp(torch.special.log_ndtr(-upper) - log_sf_lower).clamp(max=1 - 1e-12)),
        log_cdf_upper + torch.log1p(-torch.exp(torch.special.log_ndtr(lower) - log_cdf_upper).clamp(max=1 - 1e-12)),
    )
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))
