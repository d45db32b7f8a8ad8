"""Is the MLP VAE's slowdown the training's state or the machine's? A plain loop (no trainer) over genlab's MLP VAE.

    .venv/bin/python benchmarks/slowdown_probe.py [--seconds 40] [--window 250] [--threads N] [--out PATH]

Trains benchmarks/vae.py's MLP VAE on mnist5k with fused AdamW in a plain loop (subnormals flushed, freed memory
kept, as the trainer does) and prints steps/s per window of --window steps, each beside probes of the machine
measured right after it: a 512x512 matmul's GFLOP/s (compute-bound), the round trip of a cache line between the
two CPUs (core_latency.py: where the hypervisor has put them) and each core's clock (a dependent chain's rate).
Then it interleaves windows of the trained model with windows of a fresh model and optimizer in the same process:
if the slowdown came from what training accumulates (subnormals, weights, optimizer moments, the heap), the fresh
model would run at the first windows' pace.
Writes benchmarks/results/slowdown_probe.json (runs appended).
"""

import argparse
import json
import time
from pathlib import Path

import torch

from core_latency import ProbeUnavailable, clock_mhz, cpu_pair, placement, round_trip_ns
from genlab.checkpoint import atomic_write_json
from genlab.cpu import flush_denormals
from genlab.data.images import ImageDataConfig, load_images
from genlab.malloc import keep_freed_memory
from genlab.registry import get_model_class
from image_scoring import machine
from vae import MLP, TRAIN

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "slowdown_probe.json"
# PyTorch's OpenMP threads spin for a few ms after an operation; a probe pinned to the CPU one of them spins on
# shares it and reads about half its clock. 20 ms were enough here.
SETTLE_S = 0.05


class PlainVAE:
    """genlab's MLP VAE, its optimizer and one training step, with no trainer around them."""

    def __init__(self, images: torch.Tensor, seed: int):
        torch.manual_seed(seed)
        cls = get_model_class("vae")
        options = MLP | {"likelihood": TRAIN["likelihood"]}
        self.model = cls(cls.Config(**options, **cls.shapes_from_data(1, 28, 10)))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=TRAIN["lr"], fused=True)
        self.images, self.batch = images, TRAIN["batch_size"]

    def steps(self, n: int) -> float:
        """Run n steps; steps per second."""
        t0 = time.perf_counter()
        for _ in range(n):
            x = self.model.targets(self.images[torch.randint(0, len(self.images), (self.batch,))])
            rec, kl = self.model(x)
            loss = (rec + kl).mean() / x[0].numel()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return n / (time.perf_counter() - t0)


def matmul_gflops(a: torch.Tensor, repeats: int = 200) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return repeats * 2 * a.shape[0] ** 3 / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="training before the interleaved windows")
    parser.add_argument("--window", type=int, default=250, help="steps per window")
    parser.add_argument("--pairs", type=int, default=6, help="interleaved (trained, fresh) window pairs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    images = load_images(ImageDataConfig(data="mnist5k")).splits["train"].float().div(255)
    try:
        cpus = cpu_pair()
        round_trip_ns()  # builds core_latency.c before the clock starts
    except ProbeUnavailable as e:
        raise SystemExit(f"slowdown_probe: {e}") from None
    probe = torch.randn(512, 512)
    with flush_denormals():
        trained, windows = PlainVAE(images, seed=0), []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            rate = trained.steps(args.window)
            gflops = matmul_gflops(probe)
            time.sleep(SETTLE_S)
            windows.append((rate, gflops, round_trip_ns(), [clock_mhz(c) for c in cpus]))
        pairs = []
        for i in range(args.pairs):
            fresh = PlainVAE(images, seed=1 + i)
            rates = trained.steps(args.window), fresh.steps(args.window)
            time.sleep(SETTLE_S)
            pairs.append((*rates, round_trip_ns()))
    run = {"machine": machine(), "window_steps": args.window, "training_steps": len(windows) * args.window,
           "steps_per_s": [round(w[0], 1) for w in windows], "matmul_gflops": [round(w[1]) for w in windows],
           "round_trip_ns": [round(w[2], 1) for w in windows],
           "clock_probe_m_per_s": [[round(c) for c in w[3]] for w in windows],
           "interleaved_trained_fresh": [[round(a, 1), round(b, 1)] for a, b, _ in pairs],
           "interleaved_round_trip_ns": [round(ns, 1) for *_, ns in pairs]}
    runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    atomic_write_json(args.out, {"runs": [*runs, run]})
    print(f"{run['training_steps']} steps, {args.window} a window; torch threads {torch.get_num_threads()}\n")
    print(f"| window | steps/s | after it: matmul GFLOP/s | round trip CPU {cpus[0]}↔{cpus[1]} ns | placement "
          f"| clock probe CPU {cpus[0]} / {cpus[1]} (M links/s) |\n|---|---|---|---|---|---|")
    for i, (s, g, ns, clocks) in enumerate(windows):
        print(f"| {i + 1} | {s:.0f} | {g:.0f} | {ns:.0f} | {placement(ns)} | {clocks[0]:.0f} / {clocks[1]:.0f} |")
    print("\n| pair | trained model steps/s | fresh model steps/s | round trip after it ns |\n|---|---|---|---|")
    for i, (a, b, ns) in enumerate(pairs):
        print(f"| {i + 1} | {a:.0f} | {b:.0f} | {ns:.0f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
