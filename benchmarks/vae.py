"""VAE benchmark: MLP and conv VAEs on mnist5k and Fashion-MNIST at a fixed CPU budget each.

    .venv/bin/python benchmarks/vae.py [--seconds 60] [--only RUN ...] [--threads 1] [--name vae]

Prints a markdown table and writes benchmarks/results/NAME.json and a sample grid per run
(benchmarks/results/NAME-RUN.png). Per run: test negative ELBO and IWAE-64 NLL (nats per image, Bernoulli
decoder, stochastically binarised test images, on the first 1000 test images), FD/KID/precision/recall of
1000 samples against the whole test split in genlab's feature-net space (genlab.eval.images; not Inception
FID), sampling speed and wall time. Fashion-MNIST is skipped with a note when /usr/share/datasets/fashion-mnist
is absent. Reference: Burda et al. (2016), about 85-87 nats for one-stochastic-layer VAEs on binarised MNIST
(60k training images and hours of training; mnist5k has 4,050 training images).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.checkpoint import atomic_write_json
from genlab.data.images import FASHION_DIR
from genlab.tasks.images import IMAGE_GEN
from image_scoring import machine, sample_and_score

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

MLP = {"arch": "mlp", "hidden": 512, "n_layer": 2, "latent_dim": 32}
CONV = {"arch": "conv", "conv_channels": 32, "hidden": 256, "latent_dim": 32}
RUNS = {  # name -> (options, data directory that must exist or None)
    "mnist5k-mlp": (MLP | {"data": "mnist5k"}, None),
    "mnist5k-conv": (CONV | {"data": "mnist5k"}, None),
    "fashion-mlp": (MLP | {"data": "fashion-mnist"}, FASHION_DIR),
    "fashion-conv": (CONV | {"data": "fashion-mnist"}, FASHION_DIR),
}
# Options of every run besides the architecture; the budget is --seconds.
TRAIN = {"likelihood": "bernoulli", "max_steps": 10_000_000, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100,
         "eval_interval": 1000, "eval_batches": 4, "log_interval": 50}
LIKELIHOOD_IMAGES = 1000


def run_one(name: str, options: dict, seconds: float, workdir: Path, grid: Path) -> dict:
    out = workdir / name
    options = options | TRAIN | {"max_seconds": seconds, "seed": 1337}
    t0 = time.perf_counter()
    summary = genlab.train("vae", out, options)
    model = genlab.load(out)
    ds = IMAGE_GEN.dataset(model.run_config)
    test = ds.splits["test"][:LIKELIHOOD_IMAGES]
    likelihood = model.likelihood_report(test, None, num_importance_samples=64)
    scores = sample_and_score(model, grid)
    return {
        "name": name, "options": options, "steps": summary["steps"],
        "train_seconds": round(summary["train_seconds"], 1), "wall_seconds": round(time.perf_counter() - t0, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "train_images": len(ds.splits["train"]), "test_images_scored": len(test),
        "likelihood_model": likelihood["likelihood_model"],
        "neg_elbo_nats": round(likelihood["neg_elbo_nats"], 2),
        "iwae64_nll_nats": round(likelihood["iwae_nll_nats"], 2),
        "iwae64_bits_per_dim": round(likelihood["iwae_bits_per_dim"], 4),
        **scores,
    }


def table(rows: list[dict]) -> str:
    head = ("| run | steps | train s | −ELBO nats | IWAE-64 NLL nats | bits/dim | FD | KID | precision | recall "
            "| samples/s | wall s |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |" + " |" * 10)
            continue
        lines.append(f"| {r['name']} | {r['steps']} | {r['train_seconds']} | {r['neg_elbo_nats']} | "
                     f"{r['iwae64_nll_nats']} | {r['iwae64_bits_per_dim']} | {r['fd']:.2f} | {r['kid']:.3f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['samples_per_s']:,} | {r['wall_seconds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget per run")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="run only these")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--name", default="vae", help="results/NAME.json and results/NAME-RUN.png")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (options, needs) in RUNS.items():
            if args.only and name not in args.only:
                continue
            if needs is not None and not Path(needs).is_dir():
                rows.append({"name": name, "skipped": f"{needs} is absent (apt-get install dataset-fashion-mnist)"})
                continue
            rows.append(run_one(name, options, args.seconds, Path(tmp), RESULTS / f"{args.name}-{name}.png"))
            print(json.dumps(rows[-1]), flush=True)
    atomic_write_json(RESULTS / f"{args.name}.json",
                      {"machine": machine(), "seconds_per_run": args.seconds, "runs": rows})
    print(table(rows))
    print(f"\nmachine: {machine()}")


if __name__ == "__main__":
    main()
