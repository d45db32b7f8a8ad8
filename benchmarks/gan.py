"""GAN benchmark: DCGAN with the non-saturating, hinge and WGAN-GP losses at the same fixed CPU budget each.

    .venv/bin/python benchmarks/gan.py [--seconds 60] [--seeds 1] [--losses nonsat hinge wgan-gp] [--threads N]

On mnist5k, and on Fashion-MNIST when /usr/share/datasets/fashion-mnist exists (else skipped with a note).
Prints a markdown table and writes benchmarks/results/gan.json and a sample grid per run
(benchmarks/results/gan-DATA-LOSS[-sSEED].png). Per run: FD, KID, precision and recall of 1000 samples of the
EMA generator against the whole test split in genlab's feature-net space (genlab.eval.images; not Inception
FID, so not comparable with published numbers), training and sampling images/s, steps and wall time. With
--seeds > 1 the table gives mean ± standard deviation over seeds, as Lucic et al. (2018) recommend: GAN
rankings flip with the seed.

Hyper-parameters are the literature's for each loss (Radford et al. 2016; Miyato et al. 2018; Gulrajani et al.
2017): lr 2e-4 with betas (0.5, 0.999) for nonsat and hinge (hinge with spectral norm), lr 1e-4 with
betas (0, 0.9) and n_critic 5 for WGAN-GP; a constant learning rate, no clipping, batch 64, EMA 0.999.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.checkpoint import atomic_write_json
from genlab.data.images import FASHION_DIR, save_image_grid
from genlab.eval.images import feature_net, image_metrics
from genlab.tasks.images import IMAGE_GEN, generate_uint8

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

DATASETS = {"mnist5k": None, "fashion-mnist": FASHION_DIR}  # name -> folder that must exist (None: built in)
COMMON = {"arch": "dcgan", "latent_dim": 64, "g_width": 32, "d_width": 32, "batch_size": 64, "warmup_steps": 0,
          "min_lr_ratio": 1.0, "grad_clip": 0.0, "ema_decay": 0.999, "eval_interval": 1000, "eval_batches": 4,
          "log_interval": 50, "sample_interval": 0, "max_steps": 10_000_000}
LOSSES = {
    "nonsat": {"loss": "nonsat", "lr": 2e-4},
    "hinge": {"loss": "hinge", "lr": 2e-4, "spectral_norm": True},
    "wgan-gp": {"loss": "wgan-gp", "lr": 1e-4},
}
METRIC_SAMPLES = 1000
METRICS = ("fd", "kid", "precision", "recall", "train_images_per_s", "samples_per_s")


def run_one(data: str, loss: str, seed: int, seconds: float, workdir: Path) -> dict:
    name = f"{data}-{loss}-s{seed}"
    options = COMMON | LOSSES[loss] | {"data": data, "max_seconds": seconds, "seed": seed}
    t0 = time.perf_counter()
    summary = genlab.train("gan", workdir / name, options)
    model = genlab.load(workdir / name)
    ds = IMAGE_GEN.dataset(model.run_config)
    t_sample = time.perf_counter()
    samples = generate_uint8(model, METRIC_SAMPLES, seed=0)
    sample_seconds = time.perf_counter() - t_sample
    grid = f"gan-{data}-{loss}" + (f"-s{seed}" if seed else "") + ".png"
    save_image_grid(samples[:64], RESULTS / grid, nrow=8)
    metrics = image_metrics(samples, ds, split="test", net=feature_net(ds))
    return {
        "data": data, "loss": loss, "seed": seed, "options": options, "steps": summary["steps"],
        "g_updates": summary["steps"] // model.n_critic, "train_seconds": round(summary["train_seconds"], 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "params_g": sum(p.numel() for p in model.G.parameters()),
        "params_d": sum(p.numel() for p in model.D.parameters()),
        "train_images_per_s": round(summary["steps"] * options["batch_size"] / summary["train_seconds"]),
        "samples_per_s": round(METRIC_SAMPLES / sample_seconds), "grid": grid,
        **{k: metrics[k] for k in ("fd", "kid", "kid_se", "precision", "recall", "n_generated", "n_reference",
                                   "feature_net", "feature_net_test_accuracy")},
        "baseline_train_sample": metrics.get("baseline_train_sample"),
    }


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (data, loss): mean and standard deviation over seeds of each metric."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["loss"]), []).append(r)
    out = []
    for (data, loss), runs in groups.items():
        row = {"data": data, "loss": loss, "seeds": len(runs),
               "steps": round(statistics.mean(r["steps"] for r in runs))}
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
    lines = ["| data | loss | seeds | steps | FD ↓ | KID ↓ | precision ↑ | recall ↑ | train img/s | sample img/s "
             "| real-data FD |", "|" + "---|" * 11]
    for r in summary:
        lines.append(f"| {r['data']} | {r['loss']} | {r['seeds']} | {r['steps']} | {fmt(r['fd'], 2)} | "
                     f"{fmt(r['kid'], 3)} | {fmt(r['precision'], 3)} | {fmt(r['recall'], 3)} | "
                     f"{fmt(r['train_images_per_s'], 0)} | {fmt(r['samples_per_s'], 0)} | "
                     f"{r['baseline_fd']:.2f} |")
    lines += [f"| {s} | skipped |" + " |" * 9 for s in skipped]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per (data set, loss)")
    parser.add_argument("--losses", nargs="*", choices=sorted(LOSSES), default=list(LOSSES))
    parser.add_argument("--data", nargs="*", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            if DATASETS[data] is not None and not Path(DATASETS[data]).is_dir():
                skipped.append(f"{data} ({DATASETS[data]} is absent: apt-get install dataset-fashion-mnist)")
                continue
            for loss in args.losses:
                for seed in range(args.seeds):
                    rows.append(run_one(data, loss, seed, args.seconds, Path(tmp)))
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "options"}), flush=True)
    summary = summarise(rows)
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()}
    atomic_write_json(RESULTS / "gan.json", {"machine": machine, "seconds_per_run": args.seconds,
                                             "summary": summary, "runs": rows, "skipped": skipped})
    print(table(summary, skipped))
    print(f"\nmachine: {machine}")


if __name__ == "__main__":
    main()
