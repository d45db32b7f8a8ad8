"""Generation speed of neural language models: the Transformer's key-value cache and batched sampling.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/generation.py [--repeats 5]

Tokens per second of sampling (temperature 1) from a 1-token prompt with `genlab.generation.generate_batch`:
256 new tokens with and without the Transformer's key-value cache (without: every step recomputes its window,
as before the cache), the same in one batch of 16 streams (cache only, counting every stream's tokens), and 500
new tokens, past the context of 256, where each step recomputes its slid window whether cached or not. Untrained
weights (vocabulary 65, Tiny Shakespeare's characters): speed does not depend on what the weights say. Median of
--repeats runs, cached and uncached runs interleaved. One thread (OMP_NUM_THREADS=1), as the machine is shared.
Prints a markdown table and writes benchmarks/results/generation.json.
"""

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from genlab.checkpoint import atomic_write_json
from genlab.generation import generate_batch
from genlab.registry import get_model_class

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "generation.json"
VOCAB, CONTEXT = 65, 256

# label -> (model, config); the default Transformer size, a bigger one, and benchmarks/lm.py's LSTM.
MODELS = {
    "Transformer 4×4×128": ("transformer", {"n_layer": 4, "n_head": 4, "n_embd": 128, "context_length": CONTEXT}),
    "Transformer 6×6×384": ("transformer", {"n_layer": 6, "n_head": 6, "n_embd": 384, "context_length": CONTEXT}),
    "LSTM 2×384": ("lstm", {"n_embd": 128, "n_hidden": 384, "n_layer": 2}),
}
# (new tokens, streams, also without the cache)
CASES = [(256, 1, True), (256, 16, False), (500, 1, True)]


def seconds(model: torch.nn.Module, new_tokens: int, streams: int, use_cache: bool) -> float:
    t0 = time.perf_counter()
    for _ in generate_batch(model, [0], streams, new_tokens, seed=0, use_cache=use_cache):
        pass
    return time.perf_counter() - t0


def measure(label: str, name: str, config: dict, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    cls = get_model_class(name)
    model = cls(cls.Config(vocab_size=VOCAB, **config)).eval()
    seconds(model, 8, 1, True)  # warm-up
    rows = []
    for new_tokens, streams, uncached in CASES:
        # The LSTM's state is its memory, not a cache: "without" would be the same run.
        uncached = uncached and name == "transformer"
        runs: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(repeats):
            for use_cache in (True, False) if uncached else (True,):
                runs[use_cache].append(seconds(model, new_tokens, streams, use_cache))
        row = {"model": label, "name": name, "config": config, "params": sum(p.numel() for p in model.parameters()),
               "new_tokens": new_tokens, "streams": streams, "cache_seconds": runs[True],
               "cache_tokens_per_s": round(new_tokens * streams / statistics.median(runs[True]), 1)}
        if uncached:
            row |= {"no_cache_seconds": runs[False],
                    "no_cache_tokens_per_s": round(new_tokens * streams / statistics.median(runs[False]), 1),
                    "speedup": round(statistics.median(runs[False]) / statistics.median(runs[True]), 2)}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (the median is reported)")
    args = parser.parse_args()
    rows = [row for label, (name, config) in MODELS.items() for row in measure(label, name, config, args.repeats)]
    atomic_write_json(RESULTS, {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "context": CONTEXT, "vocab_size": VOCAB, "prompt_tokens": 1, "temperature": 1.0, "repeats": args.repeats,
        "weights": "untrained", "runs": rows})
    print(f"\ncontext {CONTEXT}, {torch.get_num_threads()} thread(s), median of {args.repeats}\n")
    print("| model | params | new tokens | streams | tokens/s without cache | tokens/s with cache | speedup |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        plain = f"{r['no_cache_tokens_per_s']:,.0f}" if "speedup" in r else "—"
        speedup = f"{r['speedup']:.1f}×" if "speedup" in r else "—"
        print(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['new_tokens']} | {r['streams']} | {plain} "
              f"| {r['cache_tokens_per_s']:,.0f} | {speedup} |")


if __name__ == "__main__":
    main()
