"""Training throughput over a run: does steps/s stay flat, for every family?

    .venv/bin/python benchmarks/throughput.py [--seconds 60] [--window 10] [--only NAME ...] [--threads N]
                                              [--flush all|main|off] [--no-flush-denormal] [--malloc keep|default]
                                              [--plain-control] [--no-round-trip]

Trains each family for --seconds on built-in data at its default size (the LSTM and the Transformer on
`names`; the MLP and conv VAEs, the DCGAN and a smaller diffusion U-Net on Fashion-MNIST, or mnist5k where
/usr/share/datasets/fashion-mnist is absent), and benchmarks/lm.py's Penn Treebank LSTM where ../shared has PTB,
with no periodic validation, checkpoints or sample grids inside
the budget, so that the run is training steps only. Steps/s per --window seconds comes from the run's
metrics.jsonl (a line every 10 steps with its step and elapsed training time). Reports the first and the last
window, their ratio (1.0: flat; the issue's bar is 0.9), the slowest window, the process's resident memory at
the end of the first and of the last window, and the subnormal floats left in the weights and the optimizer state
(from the last checkpoint), and the page faults and kernel CPU seconds of the run. Prints a markdown table;
writes benchmarks/results/throughput.json.

--flush shows what flushing subnormals to zero does, in this process only: all (what the trainer does: the
training thread and PyTorch's intra-op threads), main (the training thread alone, as the trainer did before:
torch.set_flush_denormal sets the calling thread's flags only) or off (torch.set_flush_denormal made a no-op;
--no-flush-denormal is the same). Subnormals show in the optimizer state when flushing is off, or main with
more than one thread.

--malloc shows what keeping freed memory for reuse does (genlab.malloc.keep_freed_memory): keep (what the trainer
does) or default (glibc's own policy: a block above its mmap threshold, at most 32 MiB, is unmapped when freed,
and the next step faults its pages in again).

Each window also carries where the machine had put its two CPUs meanwhile (core_latency.py, sampled once a second
in a background thread; --no-round-trip leaves it out, and it is left out with a note where there is no C
compiler): the median round trip of a cache line between them and the placement, near (a shared last-level cache),
far, or mixed (moved during the window). "later/earlier half, same placement" compares windows with the same
placement only (same_placement): a drift there is the training's, a step between placements is the machine's.

On a machine shared with other work, more threads than free cores make OpenMP's spinning threads wait on each
other (a step can take 10× longer): use --threads 1, or OMP_WAIT_POLICY=PASSIVE to compare flushing modes.
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import genlab
import genlab.cpu
import genlab.trainer
import lm
from core_latency import UNMEASURED, NoMonitor, RoundTripMonitor, start_monitor
from genlab.checkpoint import CHECKPOINT, atomic_write_json, load_tensors
from genlab.data.images import FASHION_DIR
from genlab.progress import quiet
from genlab.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = "fashion-mnist" if Path(FASHION_DIR).is_dir() else "mnist5k"

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (model, options beside the defaults)
    "lstm": ("lstm", {"data": "names"}),
    "transformer": ("transformer", {"data": "names"}),
    "vae-mlp": ("vae", {"data": IMAGES, "arch": "mlp", "batch_size": 128}),
    "vae-conv": ("vae", {"data": IMAGES, "arch": "conv", "batch_size": 128}),
    "gan": ("gan", {"data": IMAGES, "sample_interval": 0}),
    # The default U-Net makes about a step a second on one core: half its width, for more steps.
    "diffusion": ("diffusion", {"data": IMAGES, "base_channels": 16}),
}
if Path(lm.RUNS["ptb-lstm"][1]["data"]).exists():  # ../shared's PTB: a 10k-word softmax, 45 MiB of logits a step
    FAMILIES["lstm-ptb"] = ("lstm", lm.RUNS["ptb-lstm"][1])
# Training steps only: one validation (and checkpoint) at the end, after the budget; a log line every 10 steps.
TRAIN = {"max_steps": 10_000_000, "eval_interval": 10_000_000, "eval_batches": 2, "log_interval": 10,
         "seed": 1337, "device": "cpu"}


def rss_mb() -> float:
    """Resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextlib.contextmanager
def at_log_lines() -> Iterator[dict[int, tuple[float, float]]]:
    """{step: (resident MB, time.perf_counter())} at each training log line of the runs inside the block
    (Trainer.log wrapped)."""
    seen: dict[int, tuple[float, float]] = {}
    log = Trainer.log

    def logging(self: Trainer, record: dict[str, Any]) -> None:
        if record.get("split") == "train":
            seen[record["step"]] = (rss_mb(), time.perf_counter())
        log(self, record)

    Trainer.log = logging  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Trainer.log = log  # type: ignore[method-assign]


def windows(records: list[dict], width: float, seen: dict[int, tuple[float, float]],
            monitor: RoundTripMonitor | NoMonitor) -> list[dict]:
    """Steps/s in consecutive windows of `width` seconds of training time, from the train log lines (the last,
    partial window only when it spans at least half a window), with the resident memory at each window's end and
    the two CPUs' round trip and placement while it ran (RoundTripMonitor.between)."""
    points = [(0.0, 0)] + [(r["elapsed_s"], r["step"]) for r in records if r["split"] == "train"]
    out, start = [], points[0]
    # The perf_counter() at training time 0, from the first log line: the monitor's samples are on that clock.
    first = points[1][1] if len(points) > 1 else None
    clock0 = seen[first][1] - points[1][0] if first in seen else None

    def window(t: float, step: int) -> dict:
        cpus = monitor.between(clock0 + start[0], clock0 + t) if clock0 is not None else UNMEASURED
        return {"start_s": round(start[0], 1), "end_s": round(t, 1), "steps": step - start[1],
                "steps_per_s": round((step - start[1]) / (t - start[0]), 1),
                "rss_mb": round(seen.get(step, (0.0, 0.0))[0])} | cpus

    for t, step in points[1:]:
        if t - start[0] >= width:
            out.append(window(t, step))
            start = (t, step)
    t, step = points[-1]
    if t - start[0] >= width / 2:
        out.append(window(t, step))
    return out


def subnormals(run: Path) -> dict[str, int]:
    """Subnormal float32 values left in the last checkpoint: in the weights ("model"), in the optimizer state
    ("optim") and per optimizer field ("optim exp_avg", ...), with the sizes ("total ...")."""
    tensors, _ = load_tensors(run / CHECKPOINT)
    counts = {"model": 0, "optim": 0, "total model": 0, "total optim": 0}
    tiny = torch.finfo(torch.float32).tiny
    for key, value in tensors.items():
        part = key.split(".", 1)[0]
        if part in ("model", "optim") and value.dtype == torch.float32:
            n = int(((value != 0) & (value.abs() < tiny)).sum())
            counts[part] += n
            counts[f"total {part}"] += value.numel()
            if part == "optim" and n:
                field = f"optim {key.rsplit('.', 1)[1]}"
                counts[field] = counts.get(field, 0) + n
    return counts


def rates_by_placement(rates: list[dict]) -> dict[str, list[float]]:
    """{"near"/"far": steps/s of the windows with the CPUs so placed, in order} ("mixed" windows left out)."""
    out: dict[str, list[float]] = {}
    for r in rates:
        if r["placement"] in ("near", "far"):
            out.setdefault(r["placement"], []).append(r["steps_per_s"])
    return out


def same_placement(rates: list[dict]) -> dict[str, float]:
    """{"near"/"far": the median steps/s of the later half of the windows with the CPUs so placed over that of the
    earlier half} for each placement seen in at least two windows: whether steps/s drift while the machine stays
    the same. Medians, as one 5 s window swings by 10% on this machine."""
    return {k: round(statistics.median(v[len(v) // 2:]) / statistics.median(v[: len(v) // 2]), 3)
            for k, v in rates_by_placement(rates).items() if len(v) >= 2}


def by_placement(rates: list[dict]) -> dict[str, float]:
    """{"near"/"far": median steps/s of the windows with the CPUs so placed}: what the placement costs."""
    return {k: round(statistics.median(v), 1) for k, v in rates_by_placement(rates).items()}


def run_one(name: str, seconds: float, window: float, workdir: Path, monitor: RoundTripMonitor | NoMonitor) -> dict:
    model, options = FAMILIES[name]
    options = options | TRAIN | {"max_seconds": seconds}
    out = workdir / name
    before = resource.getrusage(resource.RUSAGE_SELF)
    with at_log_lines() as seen, quiet():
        summary = genlab.train(model, out, options)
    after = resource.getrusage(resource.RUSAGE_SELF)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = windows(records, window, seen, monitor)
    if not rates:
        raise SystemExit(f"{name}: {summary['steps']} steps in {summary['train_seconds']:.0f} s is less than one "
                         f"window of --window {window} s with a log line every 10 steps")
    first, last = rates[0]["steps_per_s"], rates[-1]["steps_per_s"]
    return {
        "name": name, "model": model, "options": options, "steps": summary["steps"],
        "train_seconds": round(summary["train_seconds"], 1),
        "first_steps_per_s": round(first, 1), "last_steps_per_s": round(last, 1),
        "last_over_first": round(last / first, 3),
        "min_over_first": round(min(r["steps_per_s"] for r in rates) / first, 3),
        "rss_mb_first_window": rates[0]["rss_mb"], "rss_mb_last_window": rates[-1]["rss_mb"],
        "subnormals": subnormals(out), "page_faults": after.ru_minflt - before.ru_minflt,
        "kernel_cpu_s": round(after.ru_stime - before.ru_stime, 1), "windows": rates,
        "same_placement_later_over_earlier": same_placement(rates), "median_steps_per_s": by_placement(rates),
    }


MARK = {"near": "n", "far": "f", "mixed": "m", None: ""}  # a window's placement, after its steps/s


def table(rows: list[dict]) -> str:
    lines = ["| family | data | steps | steps/s per window (CPUs near/far/mixed) | last/first | slowest/first "
             "| later/earlier half, same placement | median steps/s near / far | RSS MB first → last "
             "| subnormals weights / optimizer | page faults / step | kernel CPU s |",
             "|" + "---|" * 12]
    for r in rows:
        sub = r["subnormals"]
        per_window = ", ".join(f"{w['steps_per_s']:g}{MARK[w['placement']]}" for w in r["windows"])
        same = ", ".join(f"{k} {v:.2f}" for k, v in r["same_placement_later_over_earlier"].items()) or "–"
        medians = " / ".join(f"{r['median_steps_per_s'].get(k, '–')}" for k in ("near", "far"))
        lines.append(f"| {r['name']} | {r['options']['data']} | {r['steps']:,} | {per_window} | "
                     f"{r['last_over_first']:.2f} | {r['min_over_first']:.2f} | {same} | {medians} | "
                     f"{r['rss_mb_first_window']} → {r['rss_mb_last_window']} | {sub['model']:,} / {sub['optim']:,} | "
                     f"{r['page_faults'] / r['steps']:,.0f} | {r['kernel_cpu_s']} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average_at_end": os.getloadavg()}


def plain_control(seconds: float, window: float, monitor: RoundTripMonitor | NoMonitor) -> list[dict]:
    """Steps/s per window of a plain PyTorch loop with no genlab code: an MLP autoencoder on one fixed batch of 128
    random "images", fused AdamW, subnormals flushed on the calling thread. Whether a slowdown is the machine's.
    Each window: {"steps_per_s", "round_trip_ns", "placement"}."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 784))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, fused=True)
    x = torch.rand(128, 784)
    torch.set_flush_denormal(True)
    rates, steps, start = [], 0, time.perf_counter()
    last = start
    while (now := time.perf_counter()) - start < seconds:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if now - last >= window:
            rates.append({"steps_per_s": round(steps / (now - last), 1)} | monitor.between(last, now))
            steps, last = 0, now
    torch.set_flush_denormal(False)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget per family")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of training per steps/s window")
    parser.add_argument("--only", nargs="*", choices=sorted(FAMILIES), help="run only these")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--flush", choices=("all", "main", "off"), default="all",
                        help="flush subnormal floats to zero on every thread (the trainer's way), on the training "
                             "thread only (the trainer's way before), or not at all")
    parser.add_argument("--no-flush-denormal", dest="flush", action="store_const", const="off",
                        help="the same as --flush off")
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep freed memory for reuse (the trainer's way) or glibc's default policy")
    parser.add_argument("--plain-control", action="store_true",
                        help="also time a plain PyTorch loop (no genlab code): is a slowdown the machine's?")
    parser.add_argument("--no-round-trip", dest="round_trip", action="store_false",
                        help="do not sample the round trip between the two CPUs (core_latency.py) during the runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json", help="JSON results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush == "off":  # the trainer looks torch.set_flush_denormal up at each call
        torch.set_flush_denormal = lambda mode: False  # type: ignore[assignment]
    elif args.flush == "main":  # no OpenMP entry point: flush_denormals() sets the calling thread's flags alone
        genlab.cpu._gomp_parallel = lambda: None  # type: ignore[attr-defined]
    if args.malloc == "default":  # the trainer calls the name it imported
        genlab.trainer.keep_freed_memory = lambda: False  # type: ignore[attr-defined]
    rows = []
    with contextlib.ExitStack() as stack:
        monitor = start_monitor(stack) if args.round_trip else NoMonitor()
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for name in FAMILIES:
            if args.only and name not in args.only:
                continue
            rows.append(run_one(name, args.seconds, args.window, tmp, monitor))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "options"}), flush=True)
        control = plain_control(args.seconds, args.window, monitor) if args.plain_control else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"machine": machine(), "seconds_per_run": args.seconds, "window_s": args.window,
                                 "flush_denormal": args.flush, "malloc": args.malloc, "runs": rows,
                                 "plain_control_steps_per_s": control})
    print(table(rows))
    if control is not None:
        per_window = ", ".join(f"{w['steps_per_s']:g}{MARK[w['placement']]}" for w in control)
        print(f"\nplain PyTorch loop (no genlab), steps/s per {args.window:g} s window: {per_window}")
    print(f"\nmachine: {machine()}; flush subnormals: {args.flush}; malloc: {args.malloc}")


if __name__ == "__main__":
    main()
