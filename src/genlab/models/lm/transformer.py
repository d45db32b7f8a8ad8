"""Decoder-only Transformer language model (GPT), pre-norm, causal self-attention.

References: Vaswani et al. 2017; Radford et al. 2019 (GPT-2: pre-norm, learned positions, tied
embeddings); Karpathy's nanoGPT, whose layout this file follows.

    tokens (B, T) -> token + position embeddings (B, T, C) -> n_layer × [x + attn(ln(x)); x + mlp(ln(x))]
                  -> ln -> head (B, T, V)

State (what `forward` takes and returns to continue the same B streams), with W ≤ context_length − 1:

    (window, k_0, v_0, ..., k_{L-1}, v_{L-1})    L = n_layer, hs = n_embd // n_head
    window  (B, W) int64             the last W tokens seen; generation and evaluation run past the context by
                                     sliding it
    k_i, v_i  (B, n_head, W', hs)    block i's attention keys and values of the window tokens, at positions
                                     0..W'-1 (the key-value cache)

The cache is valid when W' == W. A call with n new tokens then computes only those, at positions W..W+n−1,
attending to the cache and causally to each other, provided W + n ≤ context_length. Otherwise the window is
recomputed from its tokens: once it slides, every token's learned absolute position changes and so does every
cached key and value. So once the stream is longer than the context, each step costs a full window, exactly as
without a cache and with the same outputs. A returned state whose window slid has W' = 0 (marked stale); a
state with the window only, or with keys and values of another length, is recomputed too. Every state tensor
is batch-first, so beam search can reorder streams with `s[idx]`.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import Choice, Range, option
from genlab.errors import ConfigError
from genlab.models.lm.base import LanguageModel, State
from genlab.nn.attention import attention
from genlab.nn.init import gpt2_init
from genlab.registry import register


@dataclass
class TransformerConfig:
    vocab_size: int = field(default=0, metadata={"derived": True})  # from the tokenizer
    context_length: int = field(default=0, metadata={"derived": True})  # from --seq-len
    n_layer: int = option(4, "Transformer blocks", Range(1, 6, integer=True))
    n_head: int = option(4, "attention heads per block", Choice((2, 4)))
    n_embd: int = option(128, "model width (must divide by n_head)", Choice((64, 128, 192, 256)))
    dropout: float = option(0.0, "dropout on attention weights, residual branches and embeddings",
                             Range(0.0, 0.3))
    bias: bool = option(True, "biases in linear layers and LayerNorms")

    def validate(self) -> None:
        if min(self.n_layer, self.n_head, self.n_embd) < 1:
            raise ConfigError("n_layer, n_head and n_embd must be at least 1")
        if self.n_embd % self.n_head:
            raise ConfigError(f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ConfigError("--dropout must be in [0, 1)")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, C) at positions P..P+T-1 after `past` keys and values (B, nh, P, hs) -> (y, keys and values
        (B, nh, P+T, hs)). With a past, `mask` (T, P+T) is added to the attention scores (`causal_mask`); without,
        the attention is causal."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = attention(q, k, v, mask, past is None, self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C))), (k, v)


def causal_mask(past: int, new: int, like: torch.Tensor) -> torch.Tensor:
    """(new, past+new), added to the attention scores: 0 where query i, at position past + i, sees key j ≤ past + i,
    -inf after. SDPA's is_causal aligns its mask top-left, which is this one only without a past. Additive rather
    than bool: SDPA would turn a bool mask into this in every block, a cost a one-token step notices."""
    return torch.full((new, past + new), float("-inf"), dtype=like.dtype, device=like.device).triu(past + 1)


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln1(x), past, mask)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


@register("transformer", task="text")
class TransformerLM(LanguageModel):
    """GPT-style decoder-only Transformer."""

    Config = TransformerConfig

    @classmethod
    def shapes_from_data(cls, vocab_size: int, seq_len: int) -> dict[str, int]:
        return {"vocab_size": vocab_size, "context_length": seq_len}

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.context_length, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017)
        self.apply(gpt2_init)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so the residual stream stays O(1).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm output (B, T, n_embd) of tokens (B, T), before the head: what a text encoder reads.

        Only the first context_length tokens are seen (positions beyond have no embedding), so T is cut to it.
        """
        return self._run(tokens[:, : self.config.context_length])[0]

    def _run(self, tokens: torch.Tensor, cache: tuple[torch.Tensor, ...] = ()
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final LayerNorm output (B, T, n_embd) of tokens at positions P..P+T-1 after the cached keys and values
        (k_0, v_0, ...) of P earlier tokens (none: P = 0), and every block's keys and values of all P+T."""
        P, T = (cache[0].size(2) if cache else 0), tokens.size(1)
        pos = torch.arange(P, P + T, device=tokens.device)
        h = self.drop(self.tok_emb(tokens) + self.pos_emb(pos))
        # The mask follows whether there is a cache, not the shapes, so one traced graph (the ONNX export) serves
        # every length, 0 included; built once for all blocks.
        mask = causal_mask(P, T, h) if cache else None
        kv: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            h, (k, v) = block(h, (cache[2 * i], cache[2 * i + 1]) if cache else None, mask)
            kv += [k, v]
        return self.ln_f(h), kv

    def without_cache(self, state: State) -> State:
        """The window only: the next call recomputes its keys and values."""
        return None if state is None else state[:1]

    def forward(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        ctx, n_new = self.config.context_length, tokens.size(1)
        if n_new > ctx:
            raise ValueError(f"at most {ctx} tokens per call (context length), got {n_new}")
        window = tokens[:, :0] if state is None else state[0]
        W = window.size(1)
        cache = state[1:] if state is not None and len(state) == 1 + 2 * self.config.n_layer else ()
        if cache and cache[0].size(2) == W and W + n_new <= ctx:
            h, kv = self._run(tokens, cache)  # only the new tokens, at positions W..W+n_new-1
        else:
            # Recompute the most recent ≤ ctx tokens from position 0 (the keys of a slid window are stale).
            h, kv = self._run(torch.cat([window[:, max(W - (ctx - n_new), 0):], tokens], dim=1))
        logits = self.head(h[:, -n_new:])
        seen = torch.cat([window, tokens], dim=1)
        window = seen[:, -(ctx - 1):] if ctx > 1 else seen[:, :0]
        if kv[0].size(2) != window.size(1):  # the window slid: its positions changed, so mark the cache stale
            kv = [t[:, :, :0] for t in kv]
        return logits, (window, *kv)
