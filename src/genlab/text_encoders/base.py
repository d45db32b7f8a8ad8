"""What every text encoder shares: prompts → padded token ids and mask → token states; masked mean pooling.

    prompts (B strings) -> tokenize -> ids (B, L) int64, mask (B, L) bool -> forward -> states (B, L, dim)
    pool(states, mask) -> (B, dim)

Sequences are padded on the right and every row holds at least one real token (a start token), so the empty
prompt "" is a valid condition: the null prompt of classifier-free guidance (Ho & Salimans 2022). States at
padding positions are zero; only the real positions carry meaning.
"""

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from genlab.errors import ConfigError


class PromptTruncatedWarning(UserWarning):
    """A prompt had more tokens than the encoder's max_tokens and was cut."""


class TextEncoder(nn.Module):
    """Base class. A subclass sets the class attributes and `prefix`/`suffix`/`pad_id` in its constructor, and
    implements `encode_text` (a prompt's tokens without specials) and `encode` (the states of ids and mask)."""

    kind: str  # "scratch" | "minilm" | "lm": the spec's "kind"
    trainable: bool  # True: trained jointly with the image model; False: frozen, always in eval mode
    persistent: bool  # True: its weights belong in the image model's state dict; False: they come from a package

    def __init__(self, dim: int, max_tokens: int, prefix: Sequence[int] = (), suffix: Sequence[int] = (),
                 pad_id: int = 0):
        super().__init__()
        if max_tokens < len(prefix) + len(suffix) + 1:
            raise ConfigError(f"max_tokens must be at least {len(prefix) + len(suffix) + 1} for a {self.kind} "
                              f"text encoder, got {max_tokens}")
        self.dim, self.max_tokens = dim, max_tokens
        self.prefix, self.suffix, self.pad_id = list(prefix), list(suffix), pad_id

    # --- tokens ---

    def encode_text(self, prompt: str) -> list[int]:
        """The token ids of one prompt, without the prefix and suffix specials and untruncated."""
        raise NotImplementedError

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, L) int64 and mask (B, L) bool (True = real token) on the CPU, L = the longest prompt's length
        (≤ max_tokens). Prompts longer than max_tokens keep their beginning; one PromptTruncatedWarning per call
        names the first such prompt."""
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a sequence of prompts; wrap a single prompt in a list")
        room = self.max_tokens - len(self.prefix) - len(self.suffix)
        rows, cut = [], []
        for prompt in prompts:
            body = self.encode_text(prompt)
            if len(body) > room:
                cut.append(prompt)
                body = body[:room]
            rows.append(self.prefix + body + self.suffix)
        if cut:
            words = " ".join(cut[0].split()[:6])
            more = f" (and {len(cut) - 1} more in this batch)" if len(cut) > 1 else ""
            warnings.warn(f"prompt '{words} ...' is longer than max_tokens={self.max_tokens} tokens{more}; "
                          "it was truncated", PromptTruncatedWarning, stacklevel=2)
        length = max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask

    def span_tokens(self, prompt: str, start: int, end: int) -> list[int]:
        """Positions in `tokenize`'s row of `prompt` of the tokens that spell its characters [start, end) (a
        phrase that starts and ends at word boundaries), less any that truncation cut off: the tokens of the
        text before the span come first, so the span's are the ones its end adds."""
        first = len(self.prefix) + len(self.encode_text(prompt[:start].rstrip()))
        last = len(self.prefix) + len(self.encode_text(prompt[:end]))
        return list(range(first, min(last, self.max_tokens - len(self.suffix))))

    # --- states ---

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, L, dim) of ids and mask on the encoder's device; padding positions may hold anything."""
        raise NotImplementedError

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, L, dim), zero at padding. Frozen encoders run without gradients."""
        device = self.device
        ids, mask = ids.to(device), mask.to(device)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            states = self.encode(ids, mask)
        return states.masked_fill(~mask[..., None], 0.0)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> "TextEncoder":
        # A frozen encoder stays in eval mode whatever its parent does (no dropout in a pretrained network).
        return super().train(mode and self.trainable)

    def load_pretrained(self, spec: dict) -> None:
        """Copy in weights that the spec points to (a language-model run); most encoders have none."""


def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of token states (B, L, D) over the real tokens of mask (B, L): (B, D).

    With a sentence encoder's last layer this is its sentence embedding (Reimers & Gurevych 2019, mean pooling).
    """
    weights = mask.to(states.dtype)[..., None]
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
