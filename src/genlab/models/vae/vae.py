"""Variational autoencoders on images: MLP or convolutional encoder/decoder, Bernoulli or Gaussian pixel
likelihood, β-VAE, KL warm-up, label conditioning (CVAE); the ELBO and the IWAE bound of -log p(x).

References:
    Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (the VAE, reparameterisation trick)
    Rezende, Mohamed & Wierstra 2014, "Stochastic Backpropagation and Approximate Inference in Deep
        Generative Models"
    Higgins et al. 2017, "β-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework"
    Bowman et al. 2016, "Generating Sentences from a Continuous Space"; Sønderby et al. 2016, "Ladder
        Variational Autoencoders" (KL warm-up: the KL weight rises linearly from 0)
    Sohn, Lee & Yan 2015, "Learning Structured Output Representation using Deep Conditional Generative
        Models" (CVAE: encoder and decoder both see the label)
    Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders" (the IWAE-k bound for evaluation;
        stochastically binarised MNIST, dynamic binarisation in training)
    Rybkin, Daniilidis & Levine 2021, "Simple and Effective VAE Training with Calibrated Decoders"
        (σ-VAE: one learned decoder σ shared by all pixels)

    x (B,C,H,W) in [0,1] ─ encoder ─> μ, log σ² (B,Z) ─ z = μ + σ·ε ─ decoder ─> pixel parameters (B,C,H,W)
    negative ELBO per image = -log p(x|z) + KL(q(z|x) || N(0, I))         (nats per image)

With `--text-encoder` (captioned images) the condition is a prompt: its pooled embedding, projected to
`latent_dim` (genlab.nn.conditioning), takes the one-hot label's place in encoder and decoder.

`genlab train vae --arch mlp|conv` picks the network; everything else (objective, likelihood, conditioning,
bounds) is shared by both. Units: nats per image; bits per dimension = nats / (C·H·W · ln 2) (for the
Gaussian, + 8 bits for the 8-bit bin width, as for dequantised flows).
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import Choice, Range, option
from genlab.errors import ConfigError
from genlab.nn.conditioning import TextConditioner, TextConditioningConfig, as_prompts, load_pretrained_text
from genlab.registry import register
from genlab.trainer import StepContext, Trainable

LOG_2PI = math.log(2 * math.pi)
MIN_LOG_SIGMA = math.log(1e-3)  # floor of the Gaussian decoder's σ on [0,1] pixels: keeps the density finite


@dataclass
class VAEConfig(TextConditioningConfig):
    # Decided by the data (names apart from the data options --channels/--image-size, which set the data):
    in_channels: int = field(default=0, metadata={"derived": True})  # 1 gray, 3 RGB
    resolution: int = field(default=0, metadata={"derived": True})  # square images: height = width
    n_classes: int = field(default=0, metadata={"derived": True})  # 0 when unlabelled
    arch: str = option("mlp", "mlp (fully connected) or conv (two stride-2 convolutions: size a multiple of 4)")
    latent_dim: int = option(32, "size of the latent z", Choice((8, 16, 32, 64)))
    hidden: int = option(512, "mlp: units per hidden layer; conv: width of the fully connected layer",
                        Choice((256, 512, 1024)))
    n_layer: int = option(2, "mlp: hidden layers in the encoder and in the decoder", Range(1, 3, integer=True))
    conv_channels: int = option(32, "conv: channels of the first convolution (doubled in the second)")
    likelihood: str = option("bernoulli", "decoder p(x|z): bernoulli (pixel = probability of 1) or gaussian")
    binarize: str | None = option(None, "dynamic (fresh binary pixels each batch; test binarised once, "
                                        "as Burda et al.), threshold (> 0.5), none (grey levels); "
                                        "default dynamic for bernoulli, none for gaussian")
    gaussian_std: float | None = option(None, "gaussian: fixed decoder σ on [0,1] pixels; unset: learn one σ")
    beta: float = option(1.0, "KL weight in training (β-VAE); evaluation always reports the β = 1 ELBO")
    kl_warmup_steps: int = option(0, "raise the KL weight linearly from 0 to beta over this many steps")
    conditional: bool = option(False, "condition encoder and decoder on the class label (CVAE)")

    def validate(self) -> None:
        if self.arch not in ("mlp", "conv"):
            raise ConfigError(f"--arch must be mlp or conv, not {self.arch!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ConfigError(f"--likelihood must be bernoulli or gaussian, not {self.likelihood!r}")
        if self.binarize not in (None, "dynamic", "threshold", "none"):
            raise ConfigError(f"--binarize must be dynamic, threshold or none, not {self.binarize!r}")
        if min(self.latent_dim, self.hidden, self.n_layer, self.conv_channels) < 1:
            raise ConfigError("latent_dim, hidden, n_layer and conv_channels must be at least 1")
        if self.gaussian_std is not None and self.gaussian_std <= 0:
            raise ConfigError("--gaussian-std must be positive")
        if self.beta < 0 or self.kl_warmup_steps < 0:
            raise ConfigError("--beta and --kl-warmup-steps must not be negative")
        self.validate_text()

    @property
    def cond_width(self) -> int:
        """Width of the condition vector beside the image or latent: a one-hot label or a pooled prompt."""
        return self.n_classes if self.conditional else self.latent_dim if self.text_conditioned else 0

    @property
    def binarize_mode(self) -> str:
        if self.binarize is not None:
            return self.binarize
        return "dynamic" if self.likelihood == "bernoulli" else "none"


# --- networks: images (and one-hot labels) in, vectors out; and back ---

def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        d = c.in_channels * c.resolution ** 2
        self.net = mlp([d + c.cond_width] + [c.hidden] * c.n_layer + [2 * c.latent_dim])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = x.flatten(1)  # (B, C·H·W)
        if y is not None:
            h = torch.cat([h, y], 1)
        return self.net(h)  # (B, 2Z)


class MLPDecoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        self.shape = (c.in_channels, c.resolution, c.resolution)
        d = c.in_channels * c.resolution ** 2
        self.net = mlp([c.latent_dim + c.cond_width] + [c.hidden] * c.n_layer + [d])

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = z if y is None else torch.cat([z, y], 1)  # (B, Z [+K])
        return self.net(h).view(-1, *self.shape)  # (B, C, H, W)


class ConvEncoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        w, s = c.conv_channels, c.resolution // 4
        self.conv = nn.Sequential(
            nn.Conv2d(c.in_channels, w, 4, 2, 1), nn.ReLU(),  # (B, w, H/2, W/2)
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),  # (B, 2w, H/4, W/4)
        )
        self.fc = mlp([2 * w * s * s + c.cond_width, c.hidden, 2 * c.latent_dim])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.conv(x).flatten(1)
        if y is not None:
            h = torch.cat([h, y], 1)
        return self.fc(h)  # (B, 2Z)


class ConvDecoder(nn.Module):
    def __init__(self, c: VAEConfig):
        super().__init__()
        w, s = c.conv_channels, c.resolution // 4
        self.start = (2 * w, s, s)
        self.fc = nn.Sequential(mlp([c.latent_dim + c.cond_width, c.hidden, 2 * w * s * s]),
                                nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),  # (B, w, H/2, W/2)
            nn.ConvTranspose2d(w, c.in_channels, 4, 2, 1),  # (B, C, H, W)
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = z if y is None else torch.cat([z, y], 1)
        return self.deconv(self.fc(h).view(-1, *self.start))


# --- the model: objective, bounds, generation ---

@register("vae", task="images")
class VAE(Trainable, nn.Module):
    """Variational autoencoder (MLP or conv, Bernoulli or Gaussian decoder, β, warm-up, conditional)."""

    Config = VAEConfig
    pixel_range = "unit"  # the decoder's Bernoulli means / Gaussian means live in [0, 1]
    item_name = "images"

    def __init__(self, config: VAEConfig):
        super().__init__()
        c = self.config = config
        if c.in_channels < 1 or c.resolution < 1:
            raise ConfigError("the VAE needs the image shape from the data (in_channels and resolution)")
        if c.arch == "conv" and c.resolution % 4:
            raise ConfigError(f"--arch conv halves the image size twice and cannot produce {c.resolution}x"
                              f"{c.resolution} images; use a size that is a multiple of 4 (--image-size) or --arch mlp")
        if c.conditional and c.n_classes < 2:
            raise ConfigError("--conditional needs a labelled data set with at least two classes")
        self.encoder = (ConvEncoder if c.arch == "conv" else MLPEncoder)(c)
        self.decoder = (ConvDecoder if c.arch == "conv" else MLPDecoder)(c)
        self.text = TextConditioner(c.text_spec, c.latent_dim) if c.text_conditioned else None
        learn_sigma = c.likelihood == "gaussian" and c.gaussian_std is None
        self.log_sigma = nn.Parameter(torch.zeros(())) if learn_sigma else None
        self.dims = c.in_channels * c.resolution ** 2

    @classmethod
    def shapes_from_data(cls, channels: int, image_size: int, num_classes: int) -> dict[str, int]:
        return {"in_channels": channels, "resolution": image_size, "n_classes": num_classes}

    @property
    def conditional(self) -> bool:
        return self.config.conditional

    @property
    def text_conditioned(self) -> bool:
        return self.config.text_conditioned

    def load_pretrained(self) -> None:
        load_pretrained_text(self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- pieces ---

    def condition(self, labels: torch.Tensor | None, n: int, prompts: Any = None) -> torch.Tensor | None:
        """The condition vector (B, cond_width): (B,) class indices (or (B,K) soft labels) as one-hot floats, or
        prompts (one for all or one each; none: the empty prompt) as their pooled embedding; None for an
        unconditional model."""
        if self.text is not None:
            return self.text(as_prompts("" if prompts is None else prompts, n)).vector
        if prompts is not None:
            raise ConfigError("this VAE was trained without text; a prompt needs a model trained with --text-encoder")
        if not self.config.conditional:
            return None
        if labels is None:
            labels = torch.arange(n, device=self.device) % self.config.n_classes  # every class in turn
        labels = labels.to(self.device)
        if labels.is_floating_point():
            return labels
        return F.one_hot(labels, self.config.n_classes).float()

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, y).chunk(2, dim=1)  # (B, Z) each
        return mu, logvar.clamp(-30.0, 20.0)

    def sigma(self) -> torch.Tensor:
        if self.log_sigma is not None:
            return self.log_sigma.clamp(min=MIN_LOG_SIGMA).exp()
        return torch.tensor(float(self.config.gaussian_std or 1.0), device=self.device)

    def log_px(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, summed over pixels (B,), from decoder outputs `out` (B,C,H,W)."""
        if self.config.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        mean, sigma = torch.sigmoid(out), self.sigma()
        return (-0.5 * ((x - mean) / sigma) ** 2 - sigma.log() - 0.5 * LOG_2PI).flatten(1).sum(1)

    def targets(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels in [0,1] → what the likelihood scores: binary samples, thresholded, or unchanged."""
        mode = self.config.binarize_mode
        if mode == "dynamic":
            u = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
            return (u.to(x.device) < x).float()
        if mode == "threshold":
            return (x > 0.5).float()
        return x

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
                prompts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction NLL -log p(x|z), z ~ q(z|x) once, and the analytic KL, both (B,)."""
        y = self.condition(labels, len(x), prompts)
        mu, logvar = self.posterior(x, y)
        eps = torch.randn(mu.shape, generator=generator, device=generator.device if generator else mu.device)
        z = mu + (0.5 * logvar).exp() * eps.to(mu.device)
        rec = -self.log_px(self.decoder(z, y), x)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return rec, kl

    # --- trainer contract ---

    def kl_weight(self, step: int) -> float:
        warm = self.config.kl_warmup_steps
        return self.config.beta * (min(1.0, (step + 1) / warm) if warm else 1.0)

    def train_step(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        x = self.targets(batch["x"])
        rec, kl = ctx.nets["model"](x, batch.get("y") if self.conditional else None, None, batch.get("text"))
        weight = self.kl_weight(ctx.step)
        loss = (rec + weight * kl).mean()
        # Optimised per dimension: the same Adam steps, but gradient norms on the scale the trainer's clipping
        # expects (a sum over 784 pixels would have every step clipped).
        ctx.optimize("model", loss / self.dims)
        metrics = {"loss": loss.item(), "nelbo": (rec + kl).mean().item(), "rec": rec.mean().item(),
                   "kl": kl.mean().item(), "kl_weight": weight, "items": float(len(x))}
        if self.log_sigma is not None:
            metrics["sigma"] = float(self.sigma().detach())
        return metrics

    @torch.no_grad()
    def evaluate(self, split: Any, max_batches: int | None = None) -> dict[str, float]:
        """Negative ELBO per image in nats (β = 1, one z per image, fixed noise), its parts and bits/dim."""
        gen = torch.Generator(self.device).manual_seed(0)  # the same noise at every validation
        rec_sum = kl_sum = 0.0
        n = 0
        for batch in split.batches(self.pixel_range, self.device, max_batches):
            rec, kl = self(self.targets(batch["x"], gen), batch["y"] if self.conditional else None, gen,
                           batch.get("text"))
            rec_sum, kl_sum, n = rec_sum + rec.sum().item(), kl_sum + kl.sum().item(), n + len(rec)
        nelbo = (rec_sum + kl_sum) / max(n, 1)
        return {"loss": nelbo, "rec": rec_sum / max(n, 1), "kl": kl_sum / max(n, 1),
                "bits_per_dim": self.bits_per_dim(nelbo)}

    # --- the image-generator contract (genlab.tasks.images) ---

    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None, prompts: Any = None) -> torch.Tensor:
        """Posterior means μ(x) (B, Z) of images x (B,C,H,W) in [0,1]."""
        x = x.to(self.device)
        return self.posterior(x, self.condition(labels, len(x), prompts))[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None, prompts: Any = None) -> torch.Tensor:
        """Mean images (B,C,H,W) in [0,1] of latents z (B, Z): E[x|z], not a noisy draw."""
        z = z.to(self.device)
        out = self.decoder(z, self.condition(labels, len(z), prompts))
        return torch.sigmoid(out)

    @torch.no_grad()
    def generate(self, num_samples: int, labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, prompts: Any = None) -> torch.Tensor:
        """z ~ N(0, I) decoded to mean images (N,C,H,W) in [0,1]; a conditional model without labels cycles
        through the classes; a text model takes prompts."""
        dev = generator.device if generator is not None else self.device
        return self.decode(self.noise(num_samples, dev, generator), labels, prompts)

    def noise(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, Z) of the prior N(0, I)."""
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device)

    # --- likelihood bounds ---

    def likelihood_model(self) -> str:
        c = self.config
        data = {"dynamic": "stochastically binarised pixels (training: fresh each batch; evaluation: once, seed 0)",
                "threshold": "pixels binarised at 0.5",
                "none": "grey levels in [0,1]"}[c.binarize_mode]
        if c.likelihood == "bernoulli":
            note = "" if c.binarize_mode != "none" else " (soft targets: not a normalised likelihood)"
            return f"Bernoulli decoder on {data}{note}"
        learned = f"learned σ={float(self.sigma().detach()):.4g}"
        sigma = f"fixed σ={c.gaussian_std}" if c.gaussian_std is not None else learned
        return (f"Gaussian decoder ({sigma}) on {data}: a density, bits/dim include +8 for the 8-bit bin width "
                "(no dequantisation)")

    def bits_per_dim(self, nats: float) -> float:
        bits = nats / (self.dims * math.log(2))
        return bits + 8.0 if self.config.likelihood == "gaussian" else bits

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, labels: torch.Tensor | None, k: int,
                    generator: torch.Generator | None = None, chunk: int = 8192,
                    prompts: list[str] | None = None) -> torch.Tensor:
        """Importance log-weights log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x), i = 1..k: (B, k).
        `x` are likelihood targets; decoder passes are batched `chunk` at a time."""
        y = self.condition(labels, len(x), prompts)
        mu, logvar = self.posterior(x, y)
        std = (0.5 * logvar).exp()
        B, Z = mu.shape
        per = max(1, chunk // B)  # samples per image per decoder call
        out = []
        for start in range(0, k, per):
            kk = min(per, k - start)
            eps = torch.randn((B, kk, Z), generator=generator,
                              device=generator.device if generator else mu.device).to(mu.device)
            z = mu[:, None] + std[:, None] * eps  # (B, kk, Z)
            log_q = (-0.5 * eps.pow(2) - 0.5 * logvar[:, None] - 0.5 * LOG_2PI).sum(2)
            log_prior = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(2)
            yk = None if y is None else y.repeat_interleave(kk, 0)
            dec = self.decoder(z.reshape(B * kk, Z), yk)  # (B·kk, C, H, W)
            log_px = self.log_px(dec, x.repeat_interleave(kk, 0)).view(B, kk)
            out.append(log_px + log_prior - log_q)
        return torch.cat(out, 1)

    @torch.no_grad()
    def likelihood_report(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                          num_importance_samples: int = 64, batch_size: int = 100, seed: int = 0,
                          prompts: list[str] | None = None) -> dict[str, Any]:
        """Test ELBO and IWAE-k bounds of -log p(x) (nats per image, bits per dimension).

        images: uint8 (N,C,H,W). The k importance samples give both bounds: ELBO = mean_i log w_i,
        IWAE = logsumexp_i log w_i - log k (Burda et al.); IWAE ≥ ELBO for every image, equal at k = 1.
        """
        from genlab.data.images import to_model_range
        from genlab.progress import progress_bar

        was_training = self.training
        self.eval()
        k = num_importance_samples
        gen = torch.Generator(self.device).manual_seed(seed)
        elbo_sum = iwae_sum = 0.0
        for start in progress_bar(range(0, len(images), batch_size), desc=f"ELBO and IWAE-{k} bounds", unit="batch",
                                  leave=False):
            x = to_model_range(images[start:start + batch_size], self.pixel_range)
            x = torch.as_tensor(x, dtype=torch.float32).to(self.device)
            x = self.targets(x, gen)
            y = labels[start:start + batch_size] if (labels is not None and self.conditional) else None
            text = prompts[start:start + batch_size] if (prompts is not None and self.text_conditioned) else None
            logw = self.log_weights(x, y, k, gen, prompts=text)
            elbo_sum += logw.mean(1).sum().item()
            iwae_sum += (torch.logsumexp(logw, 1) - math.log(k)).sum().item()
        self.train(was_training)
        n = len(images)
        nelbo, nll = -elbo_sum / n, -iwae_sum / n
        return {
            "likelihood_model": self.likelihood_model(),
            "binarised": self.config.binarize_mode != "none",
            "n_images": n,
            "neg_elbo_nats": nelbo,
            "neg_elbo_bits_per_dim": self.bits_per_dim(nelbo),
            "iwae_k": k,
            "iwae_nll_nats": nll,
            "iwae_bits_per_dim": self.bits_per_dim(nll),
        }
