"""Decoder-only Transformer language model (GPT), pre-norm, causal self-attention.

References: Vaswani et al. 2017; Radford et al. 2019 (GPT-2: pre-norm, learned positions, tied
embeddings); Karpathy's nanoGPT, whose layout this file follows.

    tokens (B, T) -> token + position embeddings (B, T, C) -> n_layer × [x + attn(ln(x)); x + mlp(ln(x))]
                  -> ln -> head (B, T, V)

The state passed between calls is the recent tokens (B, ≤ context_length − 1): generation and evaluation
run past the context by sliding this window.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import option
from genlab.errors import ConfigError
from genlab.models.lm.base import LanguageModel, State
from genlab.nn.init import gpt2_init
from genlab.registry import register


@dataclass
class TransformerConfig:
    vocab_size: int = field(default=0, metadata={"derived": True})  # from the tokenizer
    context_length: int = field(default=0, metadata={"derived": True})  # from --seq-len
    n_layer: int = option(4, "Transformer blocks")
    n_head: int = option(4, "attention heads per block")
    n_embd: int = option(128, "model width (must divide by n_head)")
    dropout: float = option(0.0, "dropout on attention weights, residual branches and embeddings")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


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
        x = tokens[:, : self.config.context_length]
        pos = torch.arange(x.size(1), device=x.device)
        h = self.drop(self.tok_emb(x) + self.pos_emb(pos))
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)

    def forward(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        ctx, n_new = self.config.context_length, tokens.size(1)
        if n_new > ctx:
            raise ValueError(f"at most {ctx} tokens per call (context length), got {n_new}")
        x = tokens
        if state is not None and n_new < ctx:
            x = torch.cat([state[0][:, -(ctx - n_new):], tokens], dim=1)
        logits = self.head(self.hidden_states(x)[:, -n_new:])
        return logits, (x[:, -(ctx - 1):] if ctx > 1 else x[:, :0],)
