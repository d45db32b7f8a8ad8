"""Text encoders that condition image models on prompts: prompts → token states (B, L, dim) and a mask.

    spec = text_encoder_spec("scratch", captions)      # JSON-able: saved in the image run's config
    encoder = build_text_encoder(spec)                 # the architecture (minilm: with its package weights)
    load_pretrained_weights(encoder, spec)             # once, at training start (an LM run's weights)
    ids, mask = encoder.tokenize(["a red car", ""])
    states = encoder(ids, mask)                        # (B, L, dim); pool(states, mask) -> (B, dim)

Three kinds (see each module): `scratch` (a small Transformer trained with the image model), `minilm` (the
pretrained sentence encoder all-MiniLM-L6-v2, frozen, from the pip extra genlab[minilm]) and `lm` (a genlab
neural language model run, frozen). The spec holds everything that rebuilds the architecture, never weights.
"""

from collections.abc import Iterable
from pathlib import Path

from genlab.errors import ConfigError
from genlab.text_encoders.base import PromptTruncatedWarning, TextEncoder, pool
from genlab.text_encoders.lm import LMTextEncoder
from genlab.text_encoders.minilm import MiniLMTextEncoder
from genlab.text_encoders.scratch import ScratchTextEncoder

ENCODER_CHOICES = ("scratch", "minilm")  # plus any language-model run directory
ENCODERS: dict[str, type[TextEncoder]] = {c.kind: c for c in (ScratchTextEncoder, MiniLMTextEncoder, LMTextEncoder)}

__all__ = ["ENCODER_CHOICES", "PromptTruncatedWarning", "TextEncoder", "build_text_encoder",
           "load_pretrained_weights", "pool", "text_encoder_spec"]


DEFAULT_MAX_TOKENS = 32  # words and word pieces: a built-in caption has at most 12


def text_encoder_spec(choice: str, captions: Iterable[str], *, max_tokens: int | None = None, width: int = 128,
                      layers: int = 2, heads: int = 4) -> dict:
    """A JSON-able spec that rebuilds the encoder's architecture (no weights): "kind", "dim", "max_tokens" and
    per kind scratch {"vocab", "width", "layers", "heads", "word_dropout"}, minilm {"package"},
    lm {"source", "model", "model_config", "tokenizer"}. width, layers and heads apply to scratch only."""
    if choice in ENCODER_CHOICES:
        return ENCODERS[choice].make_spec(captions, max_tokens=max_tokens or DEFAULT_MAX_TOKENS, width=width,
                                          layers=layers, heads=heads)
    if Path(choice).is_dir():
        return LMTextEncoder.make_spec(choice, captions, max_tokens=max_tokens)
    raise ConfigError(f"unknown text encoder {choice!r}: choose scratch, minilm or a language-model run directory")


def build_text_encoder(spec: dict) -> TextEncoder:
    """The encoder's architecture from its spec; minilm loads its package weights here, lm's stay random."""
    kind = spec.get("kind")
    if kind not in ENCODERS:
        raise ConfigError(f"unknown text encoder kind {kind!r} in the spec; known kinds: {', '.join(ENCODERS)}")
    return ENCODERS[kind].from_spec(spec)


def load_pretrained_weights(encoder: TextEncoder, spec: dict) -> None:
    """lm: copy the language-model run's model.safetensors in (once, at training start); others: nothing."""
    encoder.load_pretrained(spec)
