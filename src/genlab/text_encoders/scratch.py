"""A small bidirectional Transformer text encoder, trained from scratch jointly with the image model.

References: Vaswani et al. 2017 (the Transformer); Devlin et al. 2019 (BERT: a bidirectional encoder over
padded sequences); Xiong et al. 2020 (pre-norm blocks train without warm-up tricks); Iyyer et al. 2015 and
Gal & Ghahramani 2016 (word dropout: replacing input words by <unk> so unseen words at test time are familiar).

    prompt -> lowercase words and punctuation -> <bos> w1 .. wn (B, L) -> token + position embeddings (B, L, W)
           -> layers × [x + attn(ln(x), key padding mask); x + mlp(ln(x))] -> ln -> states (B, L, W)

The vocabulary is every word of the training captions; a prompt's word outside it becomes <unk>.
"""

import re
from collections import Counter
from collections.abc import Iterable

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.nn.attention import attention
from genlab.nn.init import gpt2_init
from genlab.text_encoders.base import TextEncoder

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIALS = (PAD, UNK, BOS)  # ids 0, 1, 2
WORD_DROPOUT = 0.1
_WORDS = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lowercase words and single punctuation marks: "A red, Car!" -> ["a", "red", ",", "car", "!"]."""
    return _WORDS.findall(text.lower())


def caption_vocab(captions: Iterable[str]) -> list[str]:
    """The specials, then every word of the captions, most frequent first (ties alphabetical: deterministic)."""
    counts = Counter(w for c in captions for w in words(c))
    for s in SPECIALS:
        counts.pop(s, None)
    return list(SPECIALS) + sorted(counts, key=lambda w: (-counts[w], w))


def check_spec(spec: dict) -> None:
    """ConfigError for sizes that cannot build (checked at spec time, before any training starts)."""
    width, layers, heads = spec["width"], spec["layers"], spec["heads"]
    if min(width, layers, heads) < 1:
        raise ConfigError(f"scratch text encoder: width, layers and heads must be at least 1, got "
                          f"{width}, {layers}, {heads}")
    if width % heads:
        raise ConfigError(f"scratch text encoder: width ({width}) must be divisible by heads ({heads})")
    if not 0 <= spec["word_dropout"] < 1:
        raise ConfigError(f"scratch text encoder: word_dropout must be in [0, 1), got {spec['word_dropout']}")
    if spec["max_tokens"] < 2:
        raise ConfigError(f"max_tokens must be at least 2 (<bos> and one word), got {spec['max_tokens']}")


class SelfAttention(nn.Module):
    """Multi-head self-attention over every real token (no causal mask); padding keys are masked out."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, L, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hs)
        y = attention(q, k, v, mask[:, None, None, :])  # mask: True = attend
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class ScratchTextEncoder(TextEncoder):
    """Word-level bidirectional Transformer; word dropout in training mode only."""

    kind = "scratch"
    trainable = True
    persistent = True

    @classmethod
    def make_spec(cls, captions: Iterable[str], *, max_tokens: int, width: int, layers: int, heads: int) -> dict:
        spec = {"kind": cls.kind, "dim": width, "max_tokens": max_tokens, "vocab": caption_vocab(captions),
                "width": width, "layers": layers, "heads": heads, "word_dropout": WORD_DROPOUT}
        check_spec(spec)
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> "ScratchTextEncoder":
        check_spec(spec)
        return cls(spec["vocab"], spec["max_tokens"], spec["width"], spec["layers"], spec["heads"],
                   spec["word_dropout"])

    def __init__(self, vocab: list[str], max_tokens: int, width: int = 128, layers: int = 2, heads: int = 4,
                 word_dropout: float = WORD_DROPOUT):
        super().__init__(width, max_tokens, prefix=[SPECIALS.index(BOS)], pad_id=SPECIALS.index(PAD))
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ConfigError(f"scratch text encoder vocabulary must start with {', '.join(SPECIALS)}")
        self.vocab, self.word_dropout = list(vocab), word_dropout
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.unk, self.bos = self.index[UNK], self.index[BOS]
        self.tok_emb = nn.Embedding(len(self.vocab), width)
        self.pos_emb = nn.Embedding(max_tokens, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.apply(gpt2_init)


    def encode_text(self, prompt: str) -> list[int]:
        get = self.index.get
        return [get(w, self.unk) for w in words(prompt)]

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & mask & (ids != self.bos)
            ids = ids.masked_fill(drop, self.unk)
        pos = torch.arange(ids.size(1), device=ids.device)
        h = self.tok_emb(ids) + self.pos_emb(pos)  # (B, L, W)
        for block in self.blocks:
            h = block(h, mask)
        return self.ln_f(h)
