"""Training batches of a language model over one token stream (PyTorch tensors)."""

import torch

from genlab.errors import ConfigError, DataError


class TokenBatches:
    """Training batches over one token stream, a pure function of the step (so resume is exact).

    contiguous=True (RNNs, truncated BPTT): the stream is cut into `batch_size` parallel rows and step t
    reads window t of each row, so each row's hidden state continues where the last window ended.
    contiguous=False (Transformers): random windows drawn from a generator seeded by (seed, step).
    Under torchrun every process takes rows rank::world of the same global batch: its own shard.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, seq_len: int, contiguous: bool, seed: int,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"):
        if batch_size % world_size:
            raise ConfigError(f"--batch-size {batch_size} must be divisible by the number of processes ({world_size})")
        self.contiguous, self.seed, self.seq_len = contiguous, seed, seq_len
        self.rank, self.world_size, self.device = rank, world_size, device
        need = batch_size * (seq_len + 1) if contiguous else seq_len + 2
        if len(tokens) < need:
            raise DataError(
                f"the training split has {len(tokens)} tokens, fewer than one batch needs ({need}); "
                "use a larger corpus or a smaller --batch-size / --seq-len"
            )
        self.batch_size = batch_size
        if contiguous:
            row_len = len(tokens) // batch_size
            self.rows = tokens[: row_len * batch_size].view(batch_size, row_len)
            self.windows = (row_len - 1) // seq_len
        else:
            self.tokens = tokens

    def __call__(self, step: int) -> dict[str, torch.Tensor | bool]:
        T = self.seq_len
        if self.contiguous:
            w = step % self.windows
            chunk = self.rows[self.rank::self.world_size, w * T: w * T + T + 1]
            x, y, reset = chunk[:, :-1], chunk[:, 1:], w == 0
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            starts = torch.randint(len(self.tokens) - T - 1, (self.batch_size,), generator=g)
            starts = starts[self.rank::self.world_size]
            idx = starts[:, None] + torch.arange(T + 1)
            chunk = self.tokens[idx]
            x, y, reset = chunk[:, :-1], chunk[:, 1:], True
        return {"x": x.to(self.device), "y": y.to(self.device), "reset": reset}
