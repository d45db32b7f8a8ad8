"""Exponential moving average of a network's weights, the copy that GANs and diffusion models sample from."""

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, num_updates: int) -> None:
    """ema ← d·ema + (1 − d)·model with d = min(decay, (1 + n)/(10 + n)): early on the average forgets fast
    (TensorFlow's ExponentialMovingAverage num_updates rule), so the copy is not the random init for long.
    Buffers (BatchNorm statistics) are copied, not averaged."""
    d = min(decay, (1 + num_updates) / (10 + num_updates))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - d)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)
