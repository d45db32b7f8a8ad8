"""Generative adversarial networks: a generator G(z) and a discriminator D(x) trained against each other.

References:
- Goodfellow et al. 2014, "Generative Adversarial Nets": the minimax game
  min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 − D(G(z)))] ("minimax", whose G loss saturates) and the
  practical non-saturating G loss −log D(G(z)) ("nonsat").
- Radford, Metz & Chintala 2016, "DCGAN": strided (transposed) convolutions, BatchNorm and ReLU in G,
  LeakyReLU(0.2) in D, N(0, 0.02) initialisation, Adam with betas (0.5, 0.999).
- Mao et al. 2017, "Least Squares GAN" ("lsgan", targets 0 for fakes and 1 for reals).
- Lim & Ye 2017 / Miyato et al. 2018, hinge loss ("hinge"); Miyato et al. 2018, "Spectral Normalization".
- Gulrajani et al. 2017, "Improved Training of Wasserstein GANs" ("wgan-gp": gradient penalty on random
  interpolates, n_critic = 5 critic updates per generator update, Adam betas (0, 0.9)).
- Heusel et al. 2017, two time-scale update rule (a separate learning rate for D: --lr-d).
- Miyato & Koyama 2018, "cGANs with Projection Discriminator" (conditional D); Mirza & Osindero 2014
  (conditional G by concatenating a label embedding to z).
- Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training" (EMA of G's weights).
- Lucic et al. 2018, "Are GANs Created Equal?" (compare losses at equal budget, over seeds).

Architectures (`--arch`), one registered name `gan`:

    mlp:   z (B, L) [+ label embedding (B, L)] -> mlp_layers × [Linear, ReLU] -> Linear -> tanh -> (B, C, H, W)
           x (B, C, H, W) -> flatten -> mlp_layers × [Linear, LeakyReLU] = φ(x) (B, d_width) -> score (B,)
    dcgan: z (B, L) [+ label] -> Linear -> (B, g_width·2^(k−1), s, s) -> k × [ConvT 4/2/1, BN, ReLU] -> tanh
           (the last transposed convolution outputs C channels) -> (B, C, s·2^k, s·2^k)
           x -> k × [Conv 4/2/1, LeakyReLU] -> φ(x) (B, d_width·2^(k−1)·s·s) -> score (B,)

DCGAN sizes: image_size = s · 2^k with a start size s in 4..7 and k ≥ 1 stride-2 layers, so 28 (7·2²),
32 (4·2³) and 64 (4·2⁴) all work without cropping: 28-pixel images start from 7 × 7, as in the usual MNIST
DCGANs. D has no BatchNorm (the gradient penalty is per sample; --spectral-norm is D's normaliser).

The conditional D is a projection discriminator: score = ψ(φ(x)) + ⟨embed(y), φ(x)⟩. With `--text-encoder`
(captioned images) y is a prompt and embed(y) its pooled text embedding (genlab.nn.conditioning); G and D each
have their own text conditioner (a scratch encoder in each is trained by that player's loss).

Training (`train_step`): each trainer step is one D update on a fresh real batch; every `n_critic`-th step
also updates G (so --max-steps counts D updates, and the G/D phase follows from the step number, which is
what makes resume exact). After each G update the EMA copy `G_ema` (part of the state dict, hence saved,
loaded and resumed) moves towards G; `generate` samples from G_ema when --ema-decay > 0.

Metrics per step: loss_d, loss_g (G's loss on the D step's fakes, against D before its update), d_real and
d_fake (D's mean probability of "real", sigmoid of the score for the logistic losses and hinge, the clamped
score for lsgan; for wgan-gp the raw critic scores and their difference `wasserstein`), gp when a gradient
penalty is used, and the trainer's grad_norm_generator / grad_norm_discriminator. If D's mean probability on
fakes stays below --collapse-threshold for --collapse-steps consecutive steps, training stops with
TrainingError (D has won; G gets no useful gradient), keeping the last checkpoint.

Command line (until the trainer takes per-model defaults, pass the GAN literature's training options; the
shared defaults are a language model's: lr 3e-3, warm-up, cosine decay, clipping at 1):

    genlab train gan --data mnist5k --lr 2e-4 --warmup-steps 0 --min-lr-ratio 1 --grad-clip 0 --batch-size 64
    genlab train gan --data fashion-mnist --conditional --loss hinge --spectral-norm --lr 2e-4 ...
    genlab sample runs/gan --label Sneaker

Under torchrun both networks are DDP-wrapped by the trainer. The gradient penalty's torch.autograd.grad
(create_graph) runs through the unwrapped D (`.module`); its second-order gradient lands on the same
parameters, whose gradients DDP all-reduces in the backward of D's loss (tests/test_gan.py checks that the
reduced gradients equal the mean of every rank's own gradients, penalty included).

Validation (`evaluate`): "loss" is the Fréchet distance between G_ema's samples (fixed noise) and validation
images in a fixed, cheap feature space (8 × 8 average-pooled pixels), so "best" (model.safetensors) is the
checkpoint whose samples match the validation statistics best; D's losses are not used because they say how
the two players stand against each other, not how good G is. `genlab eval` reports the proper metrics (FD and
KID in a trained feature net, precision/recall).
"""

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genlab.checkpoint import atomic_write_bytes
from genlab.config import Choice, option
from genlab.data.images import class_ids
from genlab.errors import ConfigError, TrainingError
from genlab.nn.conditioning import TextConditioner, TextConditioningConfig, as_prompts, load_pretrained_text
from genlab.nn.ema import update_ema
from genlab.registry import register
from genlab.trainer import StepContext, Trainable, TrainConfig


@dataclass
class GANConfig(TextConditioningConfig):
    channels: int = field(default=1, metadata={"derived": True})  # from the images
    image_size: int = field(default=28, metadata={"derived": True})  # from the images (square)
    num_classes: int = field(default=0, metadata={"derived": True})  # from the labels (0: unlabelled)
    arch: str = option("dcgan", "mlp (Goodfellow et al. 2014) or dcgan (Radford et al. 2016)")
    loss: str = option("nonsat", "minimax, nonsat, hinge, lsgan or wgan-gp")
    latent_dim: int = option(64, "size of the noise vector z", Choice((32, 64, 128)))
    g_width: int = option(64, "G: hidden units (mlp) or channels of the last upsampling layer (dcgan)",
                         Choice((32, 64, 128)))
    d_width: int = option(64, "D: hidden units (mlp) or channels of the first downsampling layer (dcgan)",
                         Choice((32, 64, 128)))
    mlp_layers: int = option(2, "hidden layers of the mlp G and D (dcgan's depth follows the image size)")
    conditional: bool = option(False, "class-conditional G (label embedding) and projection D; needs labels")
    spectral_norm: bool = option(False, "spectral normalisation of every D layer (Miyato et al. 2018)")
    lr_d: float | None = option(None, "D's learning rate (TTUR, Heusel et al. 2017); default: the trainer's --lr")
    betas: tuple[float, float] | None = option(None, "Adam betas for G and D; default (0.5, 0.999), wgan-gp (0, 0.9)")
    n_critic: int | None = option(None, "D updates per G update; default 1, wgan-gp 5")
    gp_weight: float | None = option(None, "gradient-penalty weight λ; default 10 for wgan-gp, else 0 (off)")
    ema_decay: float = option(0.999, "EMA of G's weights used for sampling (Yazıcı et al. 2019); 0 disables")
    sample_interval: int = option(250, "save a fixed-noise grid to RUN/progress every this many steps; 0: never")
    collapse_steps: int = option(1000, "stop if D(G(z)) < collapse_threshold for this many steps in a row; 0: off")
    collapse_threshold: float = option(0.01, "D's mean probability of 'real' on fakes that counts as D winning")

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.loss not in OBJECTIVES:
            raise ConfigError(f"unknown --loss {self.loss!r}; choose one of {', '.join(OBJECTIVES)}")
        if min(self.latent_dim, self.g_width, self.d_width, self.mlp_layers) < 1:
            raise ConfigError("latent_dim, g_width, d_width and mlp_layers must be at least 1")
        if self.lr_d is not None and self.lr_d <= 0:
            raise ConfigError("--lr-d must be positive")
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"--betas takes two numbers in [0, 1) such as 0.5,0.999; got {self.betas}")
        if self.n_critic is not None and self.n_critic < 1:
            raise ConfigError("--n-critic must be at least 1")
        if self.gp_weight is not None and self.gp_weight < 0:
            raise ConfigError("--gp-weight must be non-negative")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("--ema-decay must be in [0, 1)")
        if self.sample_interval < 0 or self.collapse_steps < 0:
            raise ConfigError("--sample-interval and --collapse-steps must be non-negative")
        if not 0 < self.collapse_threshold < 1:
            raise ConfigError("--collapse-threshold must be in (0, 1)")
        self.validate_text()

    def validate_shapes(self) -> None:
        """Checks that need the data's shapes (called when the model is built)."""
        if self.channels < 1 or self.image_size < 1:
            raise ConfigError(f"images must have at least one channel and pixel, got {self.channels} × "
                              f"{self.image_size} × {self.image_size}")
        if self.conditional and self.num_classes < 2:
            raise ConfigError("--conditional needs labelled images with at least two classes; "
                              f"this data set has {self.num_classes}")
        ARCHS[self.arch].check_size(self.image_size)


# --- losses: each player's loss from D's raw scores (logits for the logistic losses) ---

@dataclass(frozen=True)
class Objective:
    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (scores on reals, scores on fakes) -> scalar
    g_loss: Callable[[torch.Tensor], torch.Tensor]  # scores on fakes -> scalar
    prob: Callable[[torch.Tensor], torch.Tensor] | None  # scores -> D's probability of "real" (None: a critic)
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1
    gp_weight: float = 0.0


def logistic_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # −log D(x) − log(1 − D(G(z)))


def minimax_g(fake: torch.Tensor) -> torch.Tensor:
    return -F.softplus(fake).mean()  # log(1 − D(G(z))): saturates when D rejects fakes confidently


def nonsat_g(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()  # −log D(G(z))


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def negative_mean(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()  # hinge and Wasserstein G loss


def lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()


def lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake - 1) ** 2).mean()


def wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


OBJECTIVES: dict[str, Objective] = {
    "minimax": Objective(logistic_d, minimax_g, torch.sigmoid),
    "nonsat": Objective(logistic_d, nonsat_g, torch.sigmoid),
    "hinge": Objective(hinge_d, negative_mean, torch.sigmoid),
    "lsgan": Objective(lsgan_d, lsgan_g, lambda s: s.clamp(0, 1)),
    "wgan-gp": Objective(wasserstein_d, negative_mean, None, betas=(0.0, 0.9), n_critic=5, gp_weight=10.0),
}


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                     ) -> torch.Tensor:
    """E[(‖∇_x̂ D(x̂)‖₂ − 1)²] on x̂ = εx + (1 − ε)G(z), ε ~ U[0, 1] per sample (Gulrajani et al. 2017).

    The graph is kept (create_graph) so that the penalty's own gradient reaches D's weights."""
    eps = torch.rand(real.shape[0], *[1] * (real.dim() - 1), device=real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat, labels).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


# --- networks ---

def _init_dcgan(module: nn.Module) -> None:
    # Radford et al.: weights N(0, 0.02); BatchNorm scale N(1, 0.02).
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


Cond = torch.Tensor | list[str] | None  # class ids (B,), prompts (B strings), or nothing


def embed_condition(y: Cond, table: nn.Embedding | None, text: TextConditioner | None) -> torch.Tensor | None:
    """The condition's vector: a label's row of `table` or a prompt's pooled embedding (None: unconditional)."""
    if table is not None:
        return table(y)
    if text is not None:
        return text(y).vector  # type: ignore[arg-type]
    return None


class Generator(nn.Module):
    """z (B, L), condition y -> images (B, C, H, W) in [−1, 1]; `body` maps (B, L or 2L) to images."""

    def __init__(self, config: GANConfig, body: nn.Module):
        super().__init__()
        self.embed = nn.Embedding(config.num_classes, config.latent_dim) if config.conditional else None
        self.text = TextConditioner(config.text_spec, config.latent_dim) if config.text_conditioned else None
        self.body = body

    def forward(self, z: torch.Tensor, y: Cond = None) -> torch.Tensor:
        e = embed_condition(y, self.embed, self.text)
        if e is not None:
            z = torch.cat([z, e], dim=1)  # (B, 2L)
        return torch.tanh(self.body(z))


class Discriminator(nn.Module):
    """images (B, C, H, W), condition y -> scores (B,); `features` is φ, giving (B, F)."""

    def __init__(self, config: GANConfig, features: nn.Module, num_features: int):
        super().__init__()
        sn = spectral_norm if config.spectral_norm else (lambda m: m)
        self.features = features
        self.head = sn(nn.Linear(num_features, 1))  # ψ
        self.embed = sn(nn.Embedding(config.num_classes, num_features)) if config.conditional else None
        self.text = TextConditioner(config.text_spec, num_features) if config.text_conditioned else None

    def forward(self, x: torch.Tensor, y: Cond = None) -> torch.Tensor:
        h = self.features(x)  # (B, F)
        score = self.head(h).squeeze(1)  # (B,)
        e = embed_condition(y, self.embed, self.text)
        if e is not None:
            score = score + (e * h).sum(1)  # projection: ⟨embed(y), φ(x)⟩
        return score


class MLP:
    """Fully connected G and D on flattened images (the seeds' GAN)."""

    @staticmethod
    def check_size(image_size: int) -> None:
        pass  # any size: the last layer has C·H·W outputs

    @staticmethod
    def generator(c: GANConfig) -> Generator:
        in_dim = c.latent_dim * (2 if c.conditional or c.text_conditioned else 1)
        layers: list[nn.Module] = []
        for i in range(c.mlp_layers):
            layers += [nn.Linear(in_dim if i == 0 else c.g_width, c.g_width), nn.ReLU()]
        layers += [nn.Linear(c.g_width, c.channels * c.image_size**2),
                   nn.Unflatten(1, (c.channels, c.image_size, c.image_size))]
        return Generator(c, nn.Sequential(*layers))

    @staticmethod
    def discriminator(c: GANConfig) -> Discriminator:
        sn = spectral_norm if c.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(c.mlp_layers):
            layers += [sn(nn.Linear(c.channels * c.image_size**2 if i == 0 else c.d_width, c.d_width)),
                       nn.LeakyReLU(0.2)]
        return Discriminator(c, nn.Sequential(*layers), c.d_width)


class DCGAN:
    """Convolutional G and D (Radford et al. 2016); image_size = start · 2^k with start in 4..7, k ≥ 1."""

    @staticmethod
    def plan(image_size: int) -> tuple[int, int]:
        """(start size s, number k of stride-2 layers) with s · 2^k = image_size."""
        s, k = image_size, 0
        while s > 7 and s % 2 == 0:
            s, k = s // 2, k + 1
        return s, k

    @staticmethod
    def check_size(image_size: int) -> None:
        s, k = DCGAN.plan(image_size)
        if k < 1 or not 4 <= s <= 7:
            raise ConfigError(f"--arch dcgan cannot produce {image_size}-pixel images: the size must be a start size "
                              "of 4 to 7 doubled at least once (8, 14, 16, 28, 32, 48, 56, 64, ...); resize the "
                              "images or use --arch mlp")

    @staticmethod
    def generator(c: GANConfig) -> Generator:
        s, k = DCGAN.plan(c.image_size)
        ch = [c.g_width * 2 ** (k - 1 - i) for i in range(k)]  # channels at s, 2s, ..., s·2^(k−1)
        in_dim = c.latent_dim * (2 if c.conditional or c.text_conditioned else 1)
        layers: list[nn.Module] = [nn.Linear(in_dim, ch[0] * s * s, bias=False), nn.Unflatten(1, (ch[0], s, s)),
                                   nn.BatchNorm2d(ch[0]), nn.ReLU()]  # (B, ch0, s, s)
        for i in range(k - 1):
            layers += [nn.ConvTranspose2d(ch[i], ch[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[i + 1]), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ch[-1], c.channels, 4, 2, 1)]  # (B, C, s·2^k, s·2^k)
        g = Generator(c, nn.Sequential(*layers))
        _init_dcgan(g)
        return g

    @staticmethod
    def discriminator(c: GANConfig) -> Discriminator:
        s, k = DCGAN.plan(c.image_size)
        sn = spectral_norm if c.spectral_norm else (lambda m: m)
        ch = [c.channels] + [c.d_width * 2**i for i in range(k)]
        layers: list[nn.Module] = []
        for i in range(k):
            layers += [nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1), nn.LeakyReLU(0.2)]  # halves H and W
        layers.append(nn.Flatten())  # (B, ch[k]·s·s)
        features = nn.Sequential(*layers)
        _init_dcgan(features)
        if c.spectral_norm:  # after the init: the parametrization keeps the initial direction
            for i, m in enumerate(features):
                if isinstance(m, nn.Conv2d):
                    features[i] = sn(m)
        return Discriminator(c, features, ch[k] * s * s)


ARCHS = {"mlp": MLP, "dcgan": DCGAN}


# --- the model ---

def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)  # DistributedDataParallel keeps the network in .module


@register("gan", task="images")
class GAN(Trainable, nn.Module):
    """Generative adversarial network (MLP or DCGAN; minimax, non-saturating, hinge, LS, WGAN-GP losses)."""

    Config = GANConfig
    pixel_range = "symmetric"  # G ends in tanh
    item_name = "images"
    # Literature values for `genlab train gan` (DCGAN's lr 2e-4, constant, no clipping); see the report.
    train_defaults = {"lr": 2e-4, "warmup_steps": 0, "min_lr_ratio": 1.0, "grad_clip": 0.0, "batch_size": 64}

    def __init__(self, config: GANConfig):
        super().__init__()
        config.validate_shapes()
        self.config = config
        self.objective = OBJECTIVES[config.loss]
        arch = ARCHS[config.arch]
        self.G = arch.generator(config)
        self.D = arch.discriminator(config)
        # The EMA copy is a submodule, so it is in state_dict: saved, loaded and resumed with the rest.
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if config.ema_decay > 0 else None
        self.progress_prompts: list[str] | None = None  # a text model's progress grids: the first batch's captions
        self.n_critic = config.n_critic or self.objective.n_critic
        self.gp_weight = config.gp_weight if config.gp_weight is not None else self.objective.gp_weight

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
        load_pretrained_text(self)

    def batch_condition(self, batch: dict) -> Cond:
        return batch["y"] if self.conditional else batch.get("text") if self.text_conditioned else None

    # --- trainer contract ---

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.G, "discriminator": self.D}

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        # Plain Adam (no weight decay), as the GAN literature; "generator" first so the logged lr is G's --lr.
        betas = tuple(self.config.betas or self.objective.betas)
        return {"generator": torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas),
                "discriminator": torch.optim.Adam(self.D.parameters(), lr=self.config.lr_d or cfg.lr, betas=betas)}

    def noise(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, device=device, generator=generator)  # (n, L)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        G, D, obj = ctx.nets["generator"], ctx.nets["discriminator"], self.objective
        real = batch["x"]  # (B, C, H, W) in [−1, 1]
        B = real.shape[0]
        y = self.batch_condition(batch)  # fakes take the real batch's labels or captions
        if self.text_conditioned and self.progress_prompts is None:
            self.progress_prompts = list(y[:8])  # type: ignore[index]
        if ctx.step == 0 and ctx.run_dir is not None:
            self.save_progress(ctx.run_dir, 0)

        # --- D update: reals and fakes in one forward pass (one DDP gradient reduction) ---
        with torch.no_grad():
            fake = G(self.noise(B, real.device), y)
        scores = D(torch.cat([real, fake]), _twice(y))  # (2B,)
        real_s, fake_s = scores[:B], scores[B:]
        loss_d = obj.d_loss(real_s, fake_s)
        metrics = {"loss_d": loss_d.detach(), "loss_g": obj.g_loss(fake_s.detach())}
        if self.gp_weight > 0:
            # Through the unwrapped D: DDP does not take part in autograd.grad; the penalty's gradient still
            # reaches the same parameters, whose gradients DDP all-reduces in the backward of loss_d.
            gp = gradient_penalty(_unwrap(D), real, fake, y)
            loss_d = loss_d + self.gp_weight * gp
            metrics["gp"] = gp.detach()
        ctx.optimize("discriminator", loss_d)

        # --- G update every n_critic-th step (the phase follows from the step, so it survives resume) ---
        if (ctx.step + 1) % self.n_critic == 0:
            fake = G(self.noise(B, real.device), y)
            ctx.optimize("generator", obj.g_loss(D(fake, y)))
            self.update_ema(num_updates=(ctx.step + 1) // self.n_critic)

        if obj.prob is not None:
            metrics |= {"d_real": obj.prob(real_s.detach()).mean(), "d_fake": obj.prob(fake_s.detach()).mean()}
        else:
            metrics |= {"d_real": real_s.detach().mean(), "d_fake": fake_s.detach().mean(),
                        "wasserstein": (real_s - fake_s).detach().mean()}
        out = dict(zip(metrics, torch.stack(list(metrics.values())).tolist(), strict=True))  # one device sync
        self.check_collapse(ctx, out["d_fake"])
        every = self.config.sample_interval
        if ctx.run_dir is not None and every and (ctx.step + 1) % every == 0:
            self.save_progress(ctx.run_dir, ctx.step + 1)
        return out | {"items": float(B)}

    def update_ema(self, num_updates: int) -> None:
        if self.G_ema is not None:
            update_ema(self.G_ema, self.G, self.config.ema_decay, num_updates)

    def check_collapse(self, ctx: StepContext, d_fake: float) -> None:
        """Raise TrainingError once D has rejected the fakes (prob < threshold) for collapse_steps steps in a row.

        The run length is in ctx.carry, so it is checkpointed; under torchrun the ranks average d_fake first, so
        that all of them stop together."""
        if self.objective.prob is None or not self.config.collapse_steps:
            return
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([d_fake], device=self._device())
            dist.all_reduce(t)
            d_fake = float(t.item()) / dist.get_world_size()
        run = ctx.carry.get("gan_d_wins", torch.zeros((), dtype=torch.long, device=self._device()))
        run = run + 1 if d_fake < self.config.collapse_threshold else torch.zeros_like(run)
        ctx.carry["gan_d_wins"] = run
        if int(run) >= self.config.collapse_steps:
            raise TrainingError(
                f"GAN training failed at step {ctx.step + 1}: the discriminator has won for {int(run)} steps in a "
                f"row (mean D(G(z)) < {self.config.collapse_threshold}), so the generator gets no useful gradient. "
                "Try --loss nonsat or hinge, --spectral-norm, a lower --lr-d or a larger --g-width; the last good "
                "checkpoint is kept")

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # --- sampling ---

    @torch.no_grad()
    def generate(self, num_samples: int, labels: Any = None, generator: torch.Generator | None = None,
                 batch_size: int = 256, prompts: Any = None) -> torch.Tensor:
        """(num_samples, C, H, W) floats in [−1, 1] from G_ema (or G without EMA), in eval mode.

        `labels`: class ids (an int, a sequence or a (N,) tensor) for a conditional model; None draws them
        uniformly. `prompts`: a text model's (one for all or one each). The noise is drawn on `generator`'s
        device, so a seeded CPU generator gives the same images on every device."""
        if labels is not None and not self.conditional:
            raise ConfigError("this GAN was trained without labels; --label needs a model trained with --conditional "
                              "on labelled images")
        noise_device = generator.device if generator is not None else self._device()
        z = self.noise(num_samples, noise_device, generator)
        if self.conditional and labels is None:
            labels = torch.randint(0, self.config.num_classes, (num_samples,), generator=generator, device=noise_device)
        return self.decode(z, labels, batch_size, prompts)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: Any = None, batch_size: int = 256, prompts: Any = None) -> torch.Tensor:
        """Images (N, C, H, W) in [−1, 1] that G_ema (or G) makes of noise z (N, L), in eval mode; a conditional
        model needs `labels`, class ids as in `generate` (one for all, or one per row of z); a text model takes
        `prompts` (none: the empty prompt)."""
        net = self.G_ema if self.G_ema is not None else self.G
        device = self._device()
        z = z.to(device)
        n = len(z)
        y: Cond = None
        if prompts is not None and not self.text_conditioned:
            raise ConfigError("this GAN was trained without text; a prompt needs a model trained with --text-encoder")
        if self.conditional:
            if labels is None:
                raise ConfigError("a conditional GAN needs a label for every image")
            y = class_ids(labels, n, self.config.num_classes).to(device)
        elif self.text_conditioned:
            y = as_prompts("" if prompts is None else prompts, n)
        was_training = net.training
        net.eval()
        try:
            out = [net(z[i:i + batch_size], None if y is None else y[i:i + batch_size])
                   for i in range(0, n, batch_size)]
        finally:
            net.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.config.channels, self.config.image_size,
                                                      self.config.image_size, device=device)

    # --- training visibility ---

    def fixed_samples(self, n: int = 64) -> torch.Tensor:
        """The same n samples at every call (fixed noise, labels 0, 1, 2, ... by row), as uint8 images."""
        from genlab.data.images import from_model_range

        gen = torch.Generator().manual_seed(0)
        labels = torch.arange(n) * self.config.num_classes // n if self.conditional else None
        prompts = None
        if self.text_conditioned and self.progress_prompts:
            prompts = [self.progress_prompts[i * len(self.progress_prompts) // n] for i in range(n)]
        return from_model_range(self.generate(n, labels, gen, prompts=prompts).cpu(), self.pixel_range)

    def save_progress(self, run_dir: Path, step: int) -> None:
        """RUN/progress/step_XXXXXX.png (8 × 8 grid) and RUN/progress/strip.png (first 8 samples, a row per
        saved step, so that the whole run reads top to bottom)."""
        from genlab.data.images import save_image_grid

        folder = Path(run_dir) / "progress"
        folder.mkdir(parents=True, exist_ok=True)
        images = self.fixed_samples()  # (64, C, H, W) uint8
        save_image_grid(images, folder / f"step_{step:06d}.png", nrow=8)
        rows = sorted(folder.glob("step_*.png"))
        rows = [r for r in rows if int(r.stem[5:]) <= step]  # after a resume, later grids are stale
        strip = _read_strip(folder / "strip.png", images.shape[1:], len(rows) - 1)
        _write_strip(folder / "strip.png", torch.cat([strip, images[:8].unsqueeze(0)]))

    # --- validation ---

    @torch.no_grad()
    def evaluate(self, val_data: Any, max_batches: int | None = None) -> dict[str, float]:
        """{"loss": Fréchet distance between G_ema's samples and validation images in 8 × 8 average-pooled pixel
        space}, plus D's loss on validation reals against fakes. Cheap (no feature network) and comparable
        across steps (fixed noise), so the trainer's "best" checkpoint is the one whose samples are closest to
        the held-out data. `val_data` is genlab.tasks.images.ImageSplit."""
        device = self._device()
        reals, conds = [], []
        for batch in val_data.batches(self.pixel_range, device, max_batches):
            reals.append(batch["x"])
            conds.append(self.batch_condition(batch))
        real = torch.cat(reals)  # (N, C, H, W) in [−1, 1]
        y = torch.cat(conds) if self.conditional else None
        prompts = [p for c in conds for p in c] if self.text_conditioned else None
        fake = self.generate(len(real), y, torch.Generator().manual_seed(1), prompts=prompts)
        fd = pooled_frechet_distance(real, fake)
        real_s = torch.cat([self.D(r, yy) for r, yy in zip(reals, conds, strict=True)])
        fake_s = torch.cat([self.D(f, yy) for f, yy in zip(fake.split([len(r) for r in reals]), conds, strict=True)])
        return {"loss": fd, "fd_pool8": fd, "loss_d_val": float(self.objective.d_loss(real_s, fake_s))}


# --- helpers ---

def _twice(y: Cond) -> Cond:
    """The condition of reals and fakes in one batch."""
    if y is None:
        return None
    return y + y if isinstance(y, list) else torch.cat([y, y])


def pooled_frechet_distance(a: torch.Tensor, b: torch.Tensor, size: int = 8) -> float:
    """Fréchet distance between Gaussians fitted to two image sets after average pooling to size × size."""
    fa, fb = (F.adaptive_avg_pool2d(x.float(), min(size, x.shape[-1])).flatten(1).double() for x in (a, b))
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca, cb = torch.cov(fa.T).reshape(fa.shape[1], -1), torch.cov(fb.T).reshape(fb.shape[1], -1)
    # tr(sqrt(ca·cb)) = sum of sqrt of the eigenvalues of sqrt(ca)·cb·sqrt(ca) (symmetric, PSD)
    vals, vecs = torch.linalg.eigh(ca)
    sqrt_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cb @ sqrt_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + ca.trace() + cb.trace() - 2 * cross)


def _read_strip(path: Path, shape: torch.Size, rows: int) -> torch.Tensor:
    """The first `rows` rows of the strip at `path` as (rows, 8, C, H, W) uint8 (empty if there is none)."""
    C, H, W = shape
    if rows <= 0 or not path.is_file():
        return torch.empty(0, 8, C, H, W, dtype=torch.uint8)
    from PIL import Image

    arr = torch.from_numpy(np.array(Image.open(path)))  # (R·H, 8·W[, C])
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)[..., :C]
    if arr.shape[0] % H or arr.shape[1] != 8 * W:
        return torch.empty(0, 8, C, H, W, dtype=torch.uint8)  # written for other images: start again
    strip = arr.reshape(-1, H, 8, W, C).permute(0, 2, 4, 1, 3)  # (R, 8, C, H, W)
    return strip[:rows]


def _write_strip(path: Path, strip: torch.Tensor) -> None:
    from PIL import Image

    R, n, C, H, W = strip.shape
    arr = strip.permute(0, 3, 1, 4, 2).reshape(R * H, n * W, C).numpy()  # rows of images, no padding
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if C == 1 else arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
