"""Held-out likelihood of a token stream under a language model with carried state."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenSplit:
    """A held-out token stream and how to walk it: `streams` parallel rows, `window` tokens at a time."""

    def __init__(self, tokens: torch.Tensor, window: int, streams: int = 16):
        self.tokens, self.window, self.streams = tokens, window, streams


@torch.no_grad()
def stream_nll(model: nn.Module, tokens: torch.Tensor, window: int, streams: int = 16,
               max_windows: int | None = None) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of every token of `tokens[1:]` given the tokens before it.

    The stream is cut into `streams` contiguous rows walked `window` tokens at a time with the model's
    state carried, so each token is predicted once with as much context as the model keeps.
    """
    device = next(model.parameters()).device
    inputs, targets = tokens[:-1], tokens[1:]
    n = len(targets)
    streams = max(1, min(streams, n))
    row = math.ceil(n / streams)
    pad = row * streams - n
    x = torch.cat([inputs, inputs.new_zeros(pad)]).view(streams, row).to(device)
    y = torch.cat([targets, targets.new_full((pad,), -100)]).view(streams, row).to(device)
    total, state = 0.0, None
    for i, start in enumerate(range(0, row, window)):
        if max_windows is not None and i >= max_windows:
            break
        logits, state = model(x[:, start:start + window], state)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y[:, start:start + window].flatten(),
                                 ignore_index=-100, reduction="sum").item()
        count = int((y[:, : start + window] != -100).sum())
    return total, count
