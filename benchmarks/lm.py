"""Neural language model benchmark: Tiny Shakespeare (char) and Penn Treebank (word).

    .venv/bin/python benchmarks/lm.py [--only NAME ...] [--ptb-minutes 60] [--seconds S] [--name lm]

Prints a markdown table and writes benchmarks/results/NAME.json (default lm.json; rows of other runs kept).
--seconds gives every run the same budget (a short check, e.g. on a GPU, where "auto" precision means bf16).
Needs ../shared/data (skips what is absent).
`shakespeare-nanogpt-vs-genlab` runs nanoGPT itself (../shared/ref/nanogpt, its README's CPU "baby GPT": 4 layers,
4 heads, 128 wide, context 64, batch 12, 2000 iterations) and then genlab's same-size Transformer for the same
wall-clock, on the same characters, and scores both with one evaluator on the whole validation split
(benchmarks/nanogpt_side_by_side.py). Other references: on PTB, KN5 test perplexity 141.2 (Mikolov et al. 2011)
and the small LSTM of Zaremba et al. 2014: 114.5.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import genlab
import nanogpt_side_by_side
from genlab.checkpoint import atomic_write_json
from image_scoring import device_name

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

SHAKESPEARE = {"data": str(SHARED / "tinyshakespeare" / "input.txt"), "tokenizer": "char", "split": "block",
               "valid_fraction": 0.1, "test_fraction": 0.0, "seq_len": 64}
BABY_GPT = {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "bias": False}

# name -> (model, options, budget seconds, corpus file that must exist)
RUNS = {
    # Same model and batch as nanoGPT's baby GPT, same 135 s: throughput and loss side by side.
    "shakespeare-gpt-b12-135s": ("transformer", SHAKESPEARE | BABY_GPT | {"batch_size": 12, "lr": 1e-3}, 135),
    # Same model, a batch that uses the CPU better and a higher learning rate.
    "shakespeare-gpt-b32-135s": ("transformer", SHAKESPEARE | BABY_GPT | {"batch_size": 32, "lr": 2e-3}, 135),
    "shakespeare-lstm-135s": ("lstm", SHAKESPEARE | {"n_embd": 128, "n_hidden": 384, "n_layer": 2, "batch_size": 32,
                                                    "lr": 3e-3}, 135),
    "shakespeare-gpt-600s": ("transformer", SHAKESPEARE | {"n_layer": 6, "n_head": 6, "n_embd": 192, "dropout": 0.1,
                                                           "batch_size": 32, "lr": 2e-3}, 600),
    # Between Zaremba et al.'s small (2 × 200, no dropout) and medium (2 × 650, dropout 0.5) LSTMs: 2 × 384 with
    # tied weights (Press & Wolf) and dropout 0.4, trained under bf16 autocast (1.5× the tokens/s of fp32 on this
    # CPU's AVX-512 BF16 units; the 10k-word softmax dominates the step).
    "ptb-lstm": ("lstm", {"data": str(SHARED / "ptb"), "tokenizer": "word", "seq_len": 35, "n_embd": 384,
                          "n_hidden": 384, "n_layer": 2, "dropout": 0.4, "tie_weights": True, "batch_size": 32,
                          "lr": 3e-3, "weight_decay": 0.01, "precision": "bf16"}, None),
}


def run_one(name: str, model: str, options: dict, seconds: float, workdir: Path) -> dict:
    out = workdir / name
    options = options | {"max_seconds": seconds, "max_steps": 10_000_000, "eval_interval": 2000,
                         "eval_batches": 20, "warmup_steps": 100, "log_interval": 50, "seed": 1337}
    t0 = time.perf_counter()
    summary = genlab.train(model, out, options)
    wall = time.perf_counter() - t0
    tokens = summary["steps"] * options["batch_size"] * options["seq_len"]
    row = {"name": name, "model": model, "options": options, "steps": summary["steps"],
           "train_seconds": round(summary["train_seconds"], 1), "wall_seconds": round(wall, 1),
           "tokens_per_s": round(tokens / summary["train_seconds"]), "threads": torch.get_num_threads(),
           "params": sum(p.numel() for p in genlab.load(out).parameters())}
    for split in ("valid", "test") if options.get("test_fraction", 0.1) > 0 or "ptb" in name else ("valid",):
        report = genlab.evaluate(out, split=split, write=False)
        row[f"{split}_nats_per_token"] = round(report["cross_entropy_nats"], 4)
        row[f"{split}_perplexity"] = round(report["perplexity"], 2)
        row[f"{split}_bits_per_char"] = round(report["bits_per_char"], 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted([*RUNS, nanogpt_side_by_side.NAME]),
                        help="run only these")
    parser.add_argument("--ptb-minutes", type=float, default=60.0, help="training budget of the PTB LSTM")
    parser.add_argument("--seconds", type=float, default=None,
                        help="training budget of every run (default: each run's own; the PTB LSTM's --ptb-minutes)")
    parser.add_argument("--name", default="lm", help="results/NAME.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or [*RUNS, nanogpt_side_by_side.NAME]:
            if name == nanogpt_side_by_side.NAME:
                if why := nanogpt_side_by_side.available():
                    print(f"skip {name}: {why}")
                    continue
                print(f"== {name}: nanoGPT's baby GPT, then genlab's for the same seconds", flush=True)
                rows.append(nanogpt_side_by_side.side_by_side(Path(tmp) / name))
                print(json.dumps(rows[-1]), flush=True)
                continue
            model, options, seconds = RUNS[name]
            if not Path(options["data"]).exists():
                print(f"skip {name}: {options['data']} not found")
                continue
            seconds = args.seconds or seconds or args.ptb_minutes * 60
            print(f"== {name}: {model}, {seconds:.0f} s budget", flush=True)
            rows.append(run_one(name, model, options, seconds, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    results = RESULTS / f"{args.name}.json"
    previous = json.loads(results.read_text())["runs"] if results.exists() else []
    merged = {r["name"]: r for r in previous} | {r["name"]: r for r in rows}
    atomic_write_json(results, {"machine": f"{platform.processor() or platform.machine()}, "
                                           f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
                                           f"device {device_name()}",
                                "runs": list(merged.values())})
    print("\n| run | params | train s | tokens/s | steps | valid nats/tok | valid ppl | test ppl |")
    print("|---|---|---|---|---|---|---|---|")
    for r in merged.values():
        if "sides" in r:
            continue
        print(f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['train_seconds']} | {r['tokens_per_s']:,} "
              f"| {r['steps']} "
              f"| {r['valid_nats_per_token']} | {r['valid_perplexity']} | {r.get('test_perplexity', '—')} |")
    for r in merged.values():
        if "sides" in r:
            nanogpt_side_by_side.print_table(r)


if __name__ == "__main__":
    main()
