"""What every neural language model shares: the next-token objective and its evaluation.

A language model is an `nn.Module` with `forward(tokens, state=None) -> (logits, state)`:
tokens (B, T) int64, logits (B, T, V), state a tuple of batch-first tensors (or None) that lets the
next call continue the same streams. Recurrent models carry hidden states; the Transformer carries its
recent tokens (a sliding window) and their attention keys and values (a cache it can rebuild from them).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.eval.perplexity import TokenSplit, stream_nll
from genlab.trainer import StepContext, Trainable

State = tuple[torch.Tensor, ...] | None


class LanguageModel(Trainable, nn.Module):
    item_name = "tokens"
    # True: train with truncated BPTT, the hidden state carried across windows (Zaremba et al. 2014).
    stateful_training = False

    @classmethod
    def shapes_from_data(cls, vocab_size: int, seq_len: int) -> dict[str, int]:
        """Config fields that the data decides (never typed twice)."""
        return {"vocab_size": vocab_size}

    def without_cache(self, state: State) -> State:
        """`state` less what the model could recompute from the rest of it (recurrent hidden states are kept)."""
        return state

    def train_step(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        state = None
        if self.stateful_training and not batch["reset"] and ctx.carry:
            state = tuple(ctx.carry[f"state{i}"] for i in range(len(ctx.carry)))
        with ctx.autocast():  # --precision: bf16 matrix products run about twice as fast where the CPU has them
            logits, state = ctx.nets["model"](batch["x"], state)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["y"].flatten())
        ctx.optimize("model", loss)
        if self.stateful_training:  # carried in fp32 whatever the autocast computed it in
            ctx.carry = {f"state{i}": s.detach().float() for i, s in enumerate(state)}
        return {"loss": loss.item(), "items": float(batch["y"].numel())}

    @torch.no_grad()
    def evaluate(self, split: TokenSplit, max_batches: int | None = None) -> dict[str, float]:
        nll, count = stream_nll(self, split.tokens, split.window, split.streams, max_batches)
        loss = nll / max(count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}
