"""Scaled dot-product attention as every genlab model calls it."""

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              is_causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """PyTorch's SDPA over (B, heads, N, head size) queries and (B, heads, L, head size) keys and values; `mask`
    True where a query may attend (or added to the scores). On the CPU it runs in fp32 whatever the autocast
    dtype: there (PyTorch 2.x) the bf16 kernel is slower than the fp32 one, forward + backward (benchmarks/
    attention.py: U-Net self-attention over 12×12 positions 2.6×, cross-attention to 12 tokens 4.4×, a causal LM
    at 128 tokens 2.2×; a bf16 training step of the scenes U-Net 1.41× faster this way)."""
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=is_causal,
                                               dropout_p=dropout_p)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p)
