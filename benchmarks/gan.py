"""GAN benchmark: DCGAN with the non-saturating, hinge and WGAN-GP losses, and an MLP VAE, at the same fixed CPU
budget each.

    .venv/bin/python benchmarks/gan.py [--seconds 60] [--seeds 1] [--models nonsat hinge wgan-gp vae-mlp]
                                       [--data mnist5k fashion-mnist] [--threads N] [--name gan]

On mnist5k, and on Fashion-MNIST when /usr/share/datasets/fashion-mnist exists (else skipped with a note).
Prints a markdown table and writes benchmarks/results/NAME.json and a sample grid per run
(benchmarks/results/NAME-DATA-MODEL[-sSEED].png); NAME is --name, "gan" by default, so a run at another
budget can keep its own files. Every run, GAN or VAE, goes through the same code path: train
for the budget, load the run, draw 1000 samples (seed 0), score them with FD, KID, precision and recall
against the whole test split in genlab's feature-net space (genlab.eval.images; not Inception FID, so not
comparable with published numbers), and time training (images/s: steps × batch size / training seconds) and
sampling. Each (data set, model) is trained with seeds 0 .. --seeds−1 and the table gives the mean ± sample
standard deviation over seeds of every column but the real-data FD (the FD of 1000 training images against
the test split, a floor), as Lucic et al. (2018) recommend: same budget for every model, several seeds,
report the spread, because GAN rankings flip with the seed.

GAN hyper-parameters are the literature's for each loss (Radford et al. 2016; Miyato et al. 2018; Gulrajani
et al. 2017): lr 2e-4 with betas (0.5, 0.999) for nonsat and hinge (hinge with spectral norm), lr 1e-4 with
betas (0, 0.9) and n_critic 5 for WGAN-GP; a constant learning rate, no clipping, batch 64, EMA 0.999;
samples from the EMA generator.

The VAE row ("vae-mlp") is benchmarks/vae.py's mlp run (the same architecture, imported from it: 2 × 512
hidden units, 32 latents, Bernoulli decoder on dynamically binarised pixels; batch 128, lr 2e-3, 100 warm-up
steps) with the seed varied like the GANs'. Its samples are the decoder's mean images E[x|z] for z ~ N(0, I),
as `genlab sample` draws them; benchmarks/vae.py reports its likelihood bounds.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.checkpoint import atomic_write_json
from genlab.data.images import FASHION_DIR
from image_scoring import machine, sample_and_score
from vae import MLP as VAE_MLP  # benchmarks/vae.py's mlp run: architecture and training options
from vae import TRAIN as VAE_TRAIN

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

DATASETS = {"mnist5k": None, "fashion-mnist": FASHION_DIR}  # name -> folder that must exist (None: built in)
GAN = {"arch": "dcgan", "latent_dim": 64, "g_width": 32, "d_width": 32, "batch_size": 64, "warmup_steps": 0,
       "min_lr_ratio": 1.0, "grad_clip": 0.0, "ema_decay": 0.999, "eval_interval": 1000, "eval_batches": 4,
       "log_interval": 50, "sample_interval": 0, "max_steps": 10_000_000}
MODELS = {  # name -> (genlab model family, options, label in the table)
    "nonsat": ("gan", GAN | {"loss": "nonsat", "lr": 2e-4}, "DCGAN non-saturating"),
    "hinge": ("gan", GAN | {"loss": "hinge", "lr": 2e-4, "spectral_norm": True}, "DCGAN hinge + SN"),
    "wgan-gp": ("gan", GAN | {"loss": "wgan-gp", "lr": 1e-4}, "DCGAN WGAN-GP"),
    "vae-mlp": ("vae", VAE_MLP | VAE_TRAIN, "MLP VAE (Bernoulli)"),
}
METRICS = ("steps", "fd", "kid", "precision", "recall", "train_images_per_s", "samples_per_s")


def run_one(data: str, name: str, seed: int, seconds: float, workdir: Path, prefix: str) -> dict:
    """Train model `name` on `data` for `seconds`, then sample and score it; one row of the JSON's runs."""
    family, options, _ = MODELS[name]
    options = options | {"data": data, "max_seconds": seconds, "seed": seed}
    out = workdir / f"{data}-{name}-s{seed}"
    t0 = time.perf_counter()
    summary = genlab.train(family, out, options)
    model = genlab.load(out)
    grid = f"{prefix}-{data}-{name}" + (f"-s{seed}" if seed else "") + ".png"
    scores = sample_and_score(model, RESULTS / grid)
    if family == "gan":
        params = {"g_updates": summary["steps"] // model.n_critic,
                  "params_g": sum(p.numel() for p in model.G.parameters()),
                  "params_d": sum(p.numel() for p in model.D.parameters())}
    else:
        params = {"params": sum(p.numel() for p in model.parameters())}
    return {
        "data": data, "model": name, "family": family, "seed": seed, "options": options, "steps": summary["steps"],
        "train_seconds": round(summary["train_seconds"], 1), "wall_seconds": round(time.perf_counter() - t0, 1),
        **params,
        "train_images_per_s": round(summary["steps"] * options["batch_size"] / summary["train_seconds"]),
        "grid": grid, **scores,
    }


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (data, model): mean and sample standard deviation over seeds of each metric (sd None for
    a single seed)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["model"]), []).append(r)
    out = []
    for (data, name), runs in groups.items():
        row = {"data": data, "model": name, "label": MODELS[name][2], "seeds": sorted(r["seed"] for r in runs)}
        for k in METRICS:
            values = [r[k] for r in runs]
            row[k] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None)
        row["baseline_fd"] = runs[0]["baseline_train_sample"]["fd"] if runs[0].get("baseline_train_sample") else None
        out.append(row)
    return out


def fmt(value: tuple[float, float | None], digits: int) -> str:
    mean, sd = value
    return f"{mean:,.{digits}f}" + (f" ± {sd:,.{digits}f}" if sd is not None else "")


def table(summary: list[dict], skipped: list[str]) -> str:
    lines = ["| data | model | seeds | steps | FD ↓ | KID ↓ | precision ↑ | recall ↑ | train img/s | sample img/s "
             "| real-data FD |", "|" + "---|" * 11]
    for r in summary:
        baseline = f"{r['baseline_fd']:.2f}" if r["baseline_fd"] is not None else "–"
        lines.append(f"| {r['data']} | {r['label']} | {len(r['seeds'])} | {fmt(r['steps'], 0)} | {fmt(r['fd'], 2)} | "
                     f"{fmt(r['kid'], 3)} | {fmt(r['precision'], 3)} | {fmt(r['recall'], 3)} | "
                     f"{fmt(r['train_images_per_s'], 0)} | {fmt(r['samples_per_s'], 0)} | {baseline} |")
    lines += [f"| {s} | skipped |" + " |" * 9 for s in skipped]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per (data set, model): 0 .. N-1")
    parser.add_argument("--models", "--losses", nargs="*", choices=list(MODELS), default=list(MODELS),
                        help="GAN losses and the VAE (default: all)")
    parser.add_argument("--data", nargs="*", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--name", default="gan", help="results/NAME.json and results/NAME-*.png")
    args = parser.parse_args()
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error("--name takes letters, digits, - and _")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            if DATASETS[data] is not None and not Path(DATASETS[data]).is_dir():
                skipped.append(f"{data} ({DATASETS[data]} is absent: apt-get install dataset-fashion-mnist)")
                continue
            for name in args.models:
                for seed in range(args.seeds):
                    rows.append(run_one(data, name, seed, args.seconds, Path(tmp), args.name))
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "options"}), flush=True)
    summary = summarise(rows)
    atomic_write_json(RESULTS / f"{args.name}.json", {"machine": machine(), "seconds_per_run": args.seconds,
                                             "seeds": args.seeds, "wall_seconds": round(time.perf_counter() - t0),
                                             "summary": summary, "runs": rows, "skipped": skipped})
    print(table(summary, skipped))
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
