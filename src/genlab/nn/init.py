"""Weight initialisations shared by several models."""

from torch import nn


def gpt2_init(module: nn.Module) -> None:
    """GPT-2's init (use with `model.apply`): weights of linear layers and embeddings N(0, 0.02), biases zero;
    small weights keep a pre-norm Transformer's residual stream O(1) at the start."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
