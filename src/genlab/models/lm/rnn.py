"""Recurrent language models: Elman RNN (tanh), LSTM and GRU.

References: Elman 1990 (simple recurrent network); Hochreiter & Schmidhuber 1997 (LSTM);
Cho et al. 2014 (GRU); Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization"
(dropout between layers only, truncated BPTT with carried state); Press & Wolf 2017 (tied weights).

    tokens (B, T) -> embedding (B, T, E) -> dropout -> RNN stack (B, T, H) -> dropout -> head (B, T, V)
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from genlab.config import Choice, Range, option
from genlab.errors import ConfigError
from genlab.models.lm.base import LanguageModel, State
from genlab.registry import register


@dataclass
class RecurrentConfig:
    vocab_size: int = field(default=0, metadata={"derived": True})  # from the tokenizer
    n_embd: int = option(256, "embedding width", Choice((64, 128, 256)))
    n_hidden: int = option(256, "hidden units per layer", Choice((128, 256, 512)))
    n_layer: int = option(2, "stacked recurrent layers", Range(1, 3, integer=True))
    dropout: float = option(0.0, "dropout on embeddings, between layers and before the head (Zaremba et al.)",
                             Range(0.0, 0.5))
    tie_weights: bool = option(False, "share the embedding and output matrices (needs n_embd == n_hidden)")

    def validate(self) -> None:
        if min(self.n_embd, self.n_hidden, self.n_layer) < 1:
            raise ConfigError("n_embd, n_hidden and n_layer must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError("--dropout must be in [0, 1)")
        if self.tie_weights and self.n_embd != self.n_hidden:
            raise ConfigError("--tie-weights needs --n-embd equal to --n-hidden")


class RecurrentLM(LanguageModel):
    Config = RecurrentConfig
    cell: type[nn.RNNBase] = nn.RNN
    stateful_training = True

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        extra = {"nonlinearity": "tanh"} if self.cell is nn.RNN else {}
        # One single-layer module per layer, with our dropout between them, rather than nn.LSTM(num_layers=n,
        # dropout=p): on CUDA, cuDNN draws that dropout from a generator of its own that no checkpoint holds, so a
        # resumed run would not equal an uninterrupted one.
        self.layers = nn.ModuleList(self.cell(config.n_hidden if i else config.n_embd, config.n_hidden,
                                              batch_first=True, **extra) for i in range(config.n_layer))
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # Small uniform init as in Zaremba et al.; PyTorch's default for the head is too wide for large V.
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        if not self.config.tie_weights:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Top layer outputs (B, T, n_hidden) of tokens (B, T) from a fresh state: what a text encoder reads."""
        return self._recur(tokens, None)[0]

    def forward(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        out, state = self._recur(tokens, state)
        return self.head(self.drop(out)), state

    def _recur(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Top layer outputs (B, T, n_hidden) and the state after the last token."""
        # The LM interface keeps every state batch-first, (B, layers, H): h (and the LSTM's c).
        out = self.embed(tokens)
        finals = []
        for i, layer in enumerate(self.layers):
            hidden = None
            if state is not None:  # nn.RNN's own layout: (1, B, H)
                hidden = tuple(s[:, i].unsqueeze(0).contiguous() for s in state)
                hidden = hidden if self.cell is nn.LSTM else hidden[0]
            out, hidden = layer(self.drop(out), hidden)
            finals.append(hidden if isinstance(hidden, tuple) else (hidden,))
        return out, tuple(torch.cat(parts, 0).transpose(0, 1) for parts in zip(*finals, strict=True))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # Runs saved before the layers were split hold one stacked module: rnn.weight_ih_l1 -> layers.1.weight_ih_l0.
        for key in [k for k in state_dict if k.startswith(prefix + "rnn.")]:
            name, layer = key[len(prefix) + 4:].rsplit("_l", 1)
            state_dict[f"{prefix}layers.{layer}.{name}_l0"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


@register("rnn", task="text")
class RNNLM(RecurrentLM):
    """Elman RNN with tanh units."""

    cell = nn.RNN


@register("lstm", task="text")
class LSTMLM(RecurrentLM):
    """Long short-term memory."""

    cell = nn.LSTM


@register("gru", task="text")
class GRULM(RecurrentLM):
    """Gated recurrent unit."""

    cell = nn.GRU
