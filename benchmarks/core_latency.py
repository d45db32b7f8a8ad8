"""Where did the hypervisor put our two vCPUs? core_latency.c's probes, compiled with the system's C compiler.

    .venv/bin/python benchmarks/core_latency.py [--seconds 60] [--interval 1]

On this 2-vCPU machine the MLP VAE's training switched between two speeds at random moments; the round trip of a
cache line between the two CPUs switched with it (about 55 ns fast, about 315 ns slow) while each core's clock
stayed put. Run alone, this prints both probes once per --interval for --seconds, so the placement can be watched
with nothing else running.
"""

import argparse
import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_suffix(".c")
# Cores that share a last-level cache pass a line back and forth in well under 100 ns on current x86 servers;
# across dies or sockets it takes 150 ns and more (here: about 55 against 315).
FAR_NS = 150.0


class ProbeUnavailable(RuntimeError):
    """The probes cannot run here: no C compiler, or fewer than two CPUs."""


@functools.cache
def _lib() -> ctypes.CDLL:
    """core_latency.c built once per source version into the user's cache, loaded once per process."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise ProbeUnavailable("no C compiler (cc) on PATH to build core_latency.c; install gcc, or set CC")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genlab"
    built = cache / f"core_latency-{digest}.so"
    if not built.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            partial = Path(tmp) / built.name
            compiled = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-pthread", "-o", str(partial),
                                       str(SOURCE)], capture_output=True, text=True)
            if compiled.returncode:
                raise ProbeUnavailable(f"{compiler} could not build {SOURCE.name}:\n{compiled.stderr}")
            partial.replace(built)  # atomic: a second process sees the whole library or none
    lib = ctypes.CDLL(str(built))
    lib.round_trip_ns.restype, lib.round_trip_ns.argtypes = ctypes.c_double, [ctypes.c_int] * 4
    lib.chain_rate.restype, lib.chain_rate.argtypes = ctypes.c_double, [ctypes.c_int, ctypes.c_long]
    return lib


def cpu_pair() -> tuple[int, int]:
    """The first two CPUs this process may run on."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise ProbeUnavailable("needs two CPUs; this process may use one")
    return cpus[0], cpus[1]


_ONE_PROBE = threading.Lock()  # the C probe passes one static line back and forth


def round_trip_ns(batches: int = 20, batch: int = 1000) -> float:
    """Round trip of a cache line between the first two CPUs in ns: the median over batches of round trips
    (ctypes releases the GIL meanwhile)."""
    a, b = cpu_pair()
    with _ONE_PROBE:
        ns = _lib().round_trip_ns(a, b, batches, batch)
    if ns < 0:
        raise ProbeUnavailable("could not start the probe's second thread")
    return ns


def clock_mhz(cpu: int, iterations: int = 4_000_000) -> float:
    """The chain's rate on one CPU in millions of links a second: proportional to the core's clock. Right after
    PyTorch work, wait some ms first: its OpenMP threads spin a while and would share the CPU with the chain."""
    return _lib().chain_rate(cpu, iterations) / 1e6


class RoundTripMonitor:
    """Samples round_trip_ns() every `interval` seconds in a background thread while the block runs.

    Each sample keeps both CPUs for about a millisecond (6 ms when they are far apart): well under 1% of a run."""

    def __init__(self, interval: float = 1.0):
        self.interval, self.samples = interval, []  # samples: (time.perf_counter(), ns)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter(), round_trip_ns()))

    def __enter__(self) -> "RoundTripMonitor":
        cpu_pair()  # fail here rather than in the thread
        _lib()  # and compile before the clock starts
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> dict[str, Any]:
        """The samples taken between two perf_counter() times: their median round trip in ns ("round_trip_ns"),
        the placement ("near", "far", or "mixed" when the CPUs moved meanwhile; None without samples) and the
        share of samples far apart ("far_share")."""
        inside = [ns for t, ns in self.samples if start <= t <= end]
        places = [placement(ns) for ns in inside]
        kinds = set(places)
        return {"round_trip_ns": round(statistics.median(inside), 1) if inside else None,
                "placement": kinds.pop() if len(kinds) == 1 else "mixed" if kinds else None,
                "far_share": round(places.count("far") / len(places), 2) if places else None}


UNMEASURED = {"round_trip_ns": None, "placement": None, "far_share": None}  # RoundTripMonitor.between, no samples


class NoMonitor:
    """Stands in for RoundTripMonitor where the probe is not wanted or cannot run: every span unmeasured."""

    def between(self, start: float, end: float) -> dict[str, Any]:
        return dict(UNMEASURED)


def start_monitor(stack: contextlib.ExitStack) -> RoundTripMonitor | NoMonitor:
    """A RoundTripMonitor entered on `stack`; NoMonitor, with a note on standard error, where the probe cannot run
    (the timings then go without the placement beside them)."""
    try:
        return stack.enter_context(RoundTripMonitor())
    except ProbeUnavailable as e:
        print(f"no CPU placement beside the timings: {e}", file=sys.stderr)
        return NoMonitor()


def placement(ns: float) -> str:
    """"near" when the two CPUs share a last-level cache (by their round trip), else "far"."""
    return "far" if ns > FAR_NS else "near"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    try:
        a, b = cpu_pair()
        _lib()
    except ProbeUnavailable as e:
        raise SystemExit(f"core_latency: {e}") from None
    print(f"| t s | round trip CPU {a}↔{b} ns | placement | clock probe CPU {a} / {b} (M links/s) |\n|---|---|---|---|")
    start = time.perf_counter()
    while (t := time.perf_counter() - start) < args.seconds:
        ns = round_trip_ns()
        print(f"| {t:.0f} | {ns:.0f} | {placement(ns)} | {clock_mhz(a):.0f} / {clock_mhz(b):.0f} |",
              flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
