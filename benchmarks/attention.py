"""Attention under bf16 autocast on the CPU: PyTorch's bf16 kernel against the fp32 path genlab takes there.

    .venv/bin/python benchmarks/attention.py [--repeats 8] [--threads N]

Times forward + backward of `scaled_dot_product_attention` in bf16 and of `genlab.nn.attention.attention` (which
runs it in fp32 on the CPU and casts back) at the shapes genlab's models use, then one training step (forward,
backward, fused AdamW) of the text-to-image benchmark's scenes U-Net (48x48, 32·(1, 2, 2), cross-attention to 12
tokens, batch 64) in fp32, in bf16 with the bf16 kernel and in bf16 with genlab's path. Best of --repeats after
two warm-up calls. Prints a markdown table; writes benchmarks/results/attention.json.
"""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import genlab.models.diffusion.unet as unet_module
from genlab.checkpoint import atomic_write_json
from genlab.models.diffusion.unet import UNet
from genlab.nn.attention import attention
from image_scoring import machine

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "attention.json"
SHAPES = {  # name -> (batch, heads, queries, keys, head size, causal)
    "U-Net self-attention, 12x12, batch 64": (64, 4, 144, 144, 16, False),
    "U-Net cross-attention to 12 tokens": (64, 4, 144, 12, 16, False),
    "causal LM, 128 tokens, batch 64": (64, 4, 128, 128, 32, True),
    "causal LM, 256 tokens, head size 64": (32, 6, 256, 256, 64, True),
}


def best_ms(fn: Callable[[], None], repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def bf16_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              is_causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p)


def attention_ms(shape: tuple, fn: Callable, repeats: int) -> float:
    B, h, n, m, d, causal = shape
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, h, L, d, generator=gen).bfloat16().requires_grad_() for L in (n, m, m))
    mask = None if causal or m == n else torch.ones(B, 1, 1, m, dtype=torch.bool)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(q, k, v, mask, causal)
        y.float().sum().backward()
    return best_ms(step, repeats)


def unet_step_ms(dtype: torch.dtype | None, kernel: Callable, repeats: int) -> float:
    torch.manual_seed(0)
    net = UNet(1, 48, 32, (1, 2, 2), 1, 1, 4, 0.0, 64, 64)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, fused=True)
    B = 64
    x, t, cond = torch.randn(B, 1, 48, 48), torch.randint(0, 1000, (B,)), torch.randn(B, 64)
    context = (torch.randn(B, 12, 64), torch.ones(B, 12, dtype=torch.bool))
    unet_module.attention = kernel  # the U-Net module's name for its attention function
    try:
        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                out = net(x, t, cond, context)
            out.float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        return best_ms(step, max(2, repeats // 2))
    finally:
        unet_module.attention = attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name, shape in SHAPES.items():
        bf16, genlab = attention_ms(shape, bf16_sdpa, args.repeats), attention_ms(shape, attention, args.repeats)
        rows.append({"what": name, "bf16_kernel_ms": bf16, "genlab_ms": genlab, "speedup": bf16 / genlab})
        print(f"{name}: bf16 kernel {bf16:.1f} ms, genlab {genlab:.1f} ms", flush=True)
    fp32 = unet_step_ms(None, attention, args.repeats)
    bf16, genlab = (unet_step_ms(torch.bfloat16, k, args.repeats) for k in (bf16_sdpa, attention))
    rows.append({"what": "scenes U-Net training step (fp32: genlab_ms)", "bf16_kernel_ms": None, "genlab_ms": fp32,
                 "speedup": None})
    rows.append({"what": "scenes U-Net training step, bf16 autocast", "bf16_kernel_ms": bf16, "genlab_ms": genlab,
                 "speedup": bf16 / genlab})
    print("\n| forward + backward | bf16 kernel | genlab (fp32 on the CPU) | speedup |\n|---|---:|---:|---:|")
    for r in rows:
        cells = [f"{r['bf16_kernel_ms']:.1f} ms" if r["bf16_kernel_ms"] else "", f"{r['genlab_ms']:.1f} ms",
                 f"{r['speedup']:.2f}×" if r["speedup"] else ""]
        print(f"| {r['what']} | " + " | ".join(cells) + " |")
    atomic_write_json(RESULTS, {"rows": rows, "repeats": args.repeats, "machine": machine()})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
