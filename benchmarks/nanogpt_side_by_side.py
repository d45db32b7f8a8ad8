"""nanoGPT's CPU "baby GPT" and genlab's same-size Transformer, back to back in one process tree.

nanoGPT (../shared/ref/nanogpt, run as it is, never imported into genlab) trains first, as a subprocess with its
README's command; genlab then trains the same model shape on the same characters, with nanoGPT's batch, for as many
seconds as nanoGPT's training loop took: once in fp32 (nanoGPT's arithmetic on the CPU), once under bf16 autocast
(--precision bf16). One evaluator then scores every model on the whole validation split: non-overlapping
64-character blocks (each block's first character has no context, as at the start of a training window), mean
nats per predicted character. Used by benchmarks/lm.py (run `shakespeare-nanogpt-vs-genlab`).

Seconds and tokens/s, for each side:
    loop seconds    the training loop from its first step to its last, periodic validation and checkpoints included
                    (nanoGPT: the sum of its logged per-iteration times; genlab: the trainer's train_seconds).
                    genlab's --max-seconds is set to nanoGPT's loop seconds: the same wall-clock budget.
    tokens/s        training tokens (steps × batch 12 × 64) / loop seconds
    step tokens/s   the same without the validation passes (nanoGPT: iterations that ran no estimate_loss;
                    genlab: up to its last log line, before the final validation)
"""

import contextlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import genlab
from core_latency import start_monitor
from genlab.config import from_dict
from genlab.data.text import TextDataConfig, evaluation_text

SHARED = Path(__file__).resolve().parents[2] / "shared"
REF = SHARED / "ref" / "nanogpt"
INPUT = SHARED / "data" / "tinyshakespeare" / "input.txt"
NAME = "shakespeare-nanogpt-vs-genlab"

BLOCK, BATCH, ITERS, EVAL_INTERVAL = 64, 12, 2000, 250
# The README's CPU "baby GPT" command (config/train_shakespeare_char.py plus these flags).
NANOGPT_FLAGS = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", f"--block_size={BLOCK}",
                 f"--batch_size={BATCH}", "--n_layer=4", "--n_head=4", "--n_embd=128", f"--max_iters={ITERS}",
                 f"--lr_decay_iters={ITERS}", "--dropout=0.0"]
# genlab's same-size model: 4 blocks, 4 heads, 128 wide, context 64, no dropout, no biases; nanoGPT's batch;
# genlab's default learning rate (3e-3; at 2000 steps of batch 12 it beat 2e-3 and 1e-3).
GENLAB_OPTIONS = {"data": str(INPUT), "tokenizer": "char", "split": "block", "valid_fraction": 0.1,
                  "test_fraction": 0.0, "seq_len": BLOCK, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0,
                  "bias": False, "batch_size": BATCH, "lr": 3e-3, "warmup_steps": 100, "max_steps": 10_000_000,
                  "eval_interval": 10_000_000, "eval_batches": 20, "log_interval": 50, "seed": 1337}
# genlab runs, each for nanoGPT's seconds: fp32 as nanoGPT on the CPU, and bf16 autocast (--precision bf16).
GENLAB_SIDES = {"genlab-fp32": {"precision": "fp32"}, "genlab-bf16": {"precision": "bf16"}}

ITER_LINE = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
EVAL_LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def available() -> str | None:
    """Why the run cannot happen here, or None."""
    for path in (REF / "train.py", REF / "prepare_char.py", INPUT):
        if not path.exists():
            return f"{path} not found"
    return None


def run_nanogpt(workdir: Path) -> dict:
    """Copy nanoGPT to `workdir`, prepare its data, train the baby GPT; timings parsed from its log."""
    shutil.copytree(REF, workdir)
    subprocess.run([sys.executable, "prepare_char.py", str(INPUT), "data/shakespeare_char"], cwd=workdir, check=True,
                   capture_output=True, text=True)
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", *NANOGPT_FLAGS]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (workdir / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"nanoGPT's train.py failed ({proc.returncode}); see {workdir / 'train.log'}:\n"
                           f"{proc.stderr[-2000:]}")
    iters, evals, saved = [], {}, []
    for line in proc.stdout.splitlines():
        if m := ITER_LINE.match(line):
            iters.append((int(m[1]), float(m[3]) / 1000))
        elif m := EVAL_LINE.match(line):
            evals[int(m[1])] = float(m[3])
        elif line.startswith("saving checkpoint"):
            saved.append(max(evals))
    loop = sum(dt for _, dt in iters)
    # An iteration whose number is a multiple of eval_interval ran estimate_loss (and maybe a checkpoint) first.
    steps_only = [dt for i, dt in iters if i % EVAL_INTERVAL]
    return {"command": "python train.py " + " ".join(cmd[2:]), "iters": len(iters), "wall_seconds": round(wall, 1),
            "loop_seconds": round(loop, 1), "tokens_per_s": round(len(iters) * BATCH * BLOCK / loop),
            "step_tokens_per_s": round(len(steps_only) * BATCH * BLOCK / sum(steps_only)),
            "printed_val_loss": evals[max(evals)] if evals else None,
            "checkpoint_iter": saved[-1] if saved else None,
            "checkpoint_printed_val_loss": evals[saved[-1]] if saved else None}


def load_nanogpt(workdir: Path) -> torch.nn.Module:
    """nanoGPT's GPT from its own model.py (in `workdir`), with the weights of its checkpoint."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", workdir / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The checkpoint holds tensors, numbers, strings and dicts only, so the safe unpickler reads it.
    ckpt = torch.load(workdir / "out-shakespeare-char" / "ckpt.pt", map_location="cpu", weights_only=True)
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    return model.eval()


@torch.no_grad()
def block_nats_per_char(logits_of, ids: torch.Tensor, block: int = BLOCK, batch: int = 128) -> tuple[float, int]:
    """The one evaluator: mean negative log-likelihood (nats) of every character of `ids` but the first, cut into
    non-overlapping blocks of `block` inputs, each predicting its next `block` characters with only its own
    characters as context. `logits_of(x)` maps (B, T) ids to (B, T, V) logits."""
    n = len(ids) - 1
    full = n // block
    x = ids[: full * block].view(full, block)
    y = ids[1: full * block + 1].view(full, block)
    total = 0.0
    for i in range(0, full, batch):
        logits = logits_of(x[i:i + batch])
        total += F.cross_entropy(logits.flatten(0, 1).float(), y[i:i + batch].flatten(), reduction="sum").item()
    if n > full * block:  # the last, shorter block
        logits = logits_of(ids[full * block: n][None])
        total += F.cross_entropy(logits[0].float(), ids[full * block + 1:], reduction="sum").item()
    return total / n, n


def run_genlab(out: Path, seconds: float, options: dict) -> dict:
    t0 = time.perf_counter()
    summary = genlab.train("transformer", out, options | {"max_seconds": seconds})
    wall = time.perf_counter() - t0
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in logs if r.get("split") == "train"][-1]
    steps = summary["steps"]
    return {"options": options | {"max_seconds": round(seconds, 1)}, "iters": steps,
            "wall_seconds": round(wall, 1), "loop_seconds": round(summary["train_seconds"], 1),
            "tokens_per_s": round(steps * BATCH * BLOCK / summary["train_seconds"]),
            "step_tokens_per_s": round(last["step"] * BATCH * BLOCK / last["elapsed_s"])}


def side_by_side(workdir: Path) -> dict:
    """Train nanoGPT, then genlab in each precision for as long; score all. One row of benchmarks/results/lm.json.
    Where the hypervisor had put the two CPUs during each side's training goes beside it ("cpus": a round trip
    far apart costs small-kernel work up to a third of its speed here; see core_latency.py)."""
    with contextlib.ExitStack() as stack:
        monitor = start_monitor(stack)
        print("-- nanoGPT: train.py " + " ".join(NANOGPT_FLAGS), flush=True)
        t0 = time.perf_counter()
        sides = {"nanogpt": run_nanogpt(workdir / "nanogpt")}
        nano = sides["nanogpt"]
        nano["cpus"] = monitor.between(t0, time.perf_counter())
        print(json.dumps(nano), flush=True)
        for name, extra in GENLAB_SIDES.items():
            print(f"-- {name}: {nano['loop_seconds']:.1f} s (nanoGPT's training loop), {extra}", flush=True)
            t0 = time.perf_counter()
            sides[name] = run_genlab(workdir / name, nano["loop_seconds"], GENLAB_OPTIONS | extra)
            sides[name]["cpus"] = monitor.between(t0, time.perf_counter())
            print(json.dumps(sides[name]), flush=True)

    # The validation characters of each side: nanoGPT's val.bin, genlab's validation split (as `genlab eval`).
    data = workdir / "nanogpt" / "data" / "shakespeare_char"
    # prepare_char.py numbers the sorted characters of the input (its meta.pkl says so; no need to unpickle it).
    itos = sorted(set(INPUT.read_text()))
    nano_ids = torch.from_numpy(np.fromfile(data / "val.bin", dtype=np.uint16).astype(np.int64))
    nano_text = "".join(itos[int(i)] for i in nano_ids)
    models = {"nanogpt": load_nanogpt(workdir / "nanogpt")}
    # With targets nanoGPT returns the logits of every position (without, only the last); its loss is unused.
    scorers = {"nanogpt": (lambda x: models["nanogpt"](x, torch.zeros_like(x))[0], nano_ids)}
    for name in GENLAB_SIDES:
        model = models[name] = genlab.load(workdir / name, device="cpu")
        data_cfg = from_dict(TextDataConfig, model.run_config["data"], "saved data config")
        text = evaluation_text(data_cfg, None, "valid")[1]
        if text != nano_text:
            raise RuntimeError("genlab's validation split differs from nanoGPT's val.bin")
        if model.artifacts.unknown_chars(text):
            raise RuntimeError("the validation split has characters genlab's tokenizer does not know")
        ids = torch.tensor(model.artifacts.encode(text), dtype=torch.long)
        scorers[name] = (lambda x, m=model: m(x)[0], ids)
    for name, (logits_of, ids) in scorers.items():
        t0 = time.perf_counter()
        loss, n = block_nats_per_char(logits_of, ids)
        sides[name] |= {"val_nats_per_char": round(loss, 4), "eval_seconds": round(time.perf_counter() - t0, 1),
                        "params": sum(p.numel() for p in models[name].parameters())}
    return {"name": NAME, "evaluator": f"whole validation split ({len(nano_text):,} characters, {n:,} predicted), "
                                      f"non-overlapping {BLOCK}-character blocks, mean nats/char",
            "threads": torch.get_num_threads(), "sides": sides,
            "vs_nanogpt": {name: {"tokens_per_s_ratio": round(r["tokens_per_s"] / nano["tokens_per_s"], 3),
                                  "step_tokens_per_s_ratio": round(r["step_tokens_per_s"] / nano["step_tokens_per_s"],
                                                                   3),
                                  "val_nats_per_char_difference": round(r["val_nats_per_char"]
                                                                        - nano["val_nats_per_char"], 4)}
                           for name, r in sides.items() if name != "nanogpt"}}


def print_table(row: dict) -> None:
    print(f"\n{row['name']}: {row['evaluator']}")
    print("| side | params | iters | loop s | wall s | tokens/s | step tokens/s | val nats/char | tokens/s ÷ nanoGPT "
          "| CPUs far apart (share of the run) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in row["sides"].items():
        ratio = row["vs_nanogpt"].get(name, {}).get("tokens_per_s_ratio", 1.0)
        far = r.get("cpus", {}).get("far_share")
        print(f"| {name} | {r['params'] / 1e6:.3f} M | {r['iters']} | {r['loop_seconds']} | {r['wall_seconds']} "
              f"| {r['tokens_per_s']:,} | {r['step_tokens_per_s']:,} | {r['val_nats_per_char']} | {ratio} "
              f"| {'–' if far is None else f'{far:.0%}'} |")
