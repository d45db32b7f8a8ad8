"""CPU settings that training and sampling run under.

Two things this 2-core machine showed to cost a fifth or more of a step, neither visible in a profile of
PyTorch ops: subnormal floats computed on PyTorch's OpenMP threads (`flush_denormals`, here), and glibc's malloc
giving large tensors back to the kernel on every free, so that each step faults their pages in again
(`genlab.malloc.keep_freed_memory`, a module of its own: n-gram estimation uses it without importing PyTorch).
"""

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero inside the block, on this thread and on PyTorch's CPU threads (then back to
    PyTorch's default, off, when the outermost block on this thread ends). Values decaying towards zero (Adam's
    moments of rarely active weights, zero-initialised layers, small gradients) otherwise run up to 10× slower on
    x86 CPUs, and training slows down as they accumulate; GPUs flush them by default."""
    depth = getattr(_flushing, "depth", 0)
    if depth == 0:
        _set_flush_denormal(True)
    _flushing.depth = depth + 1
    try:
        yield
    finally:
        _flushing.depth = depth
        if depth == 0:
            _set_flush_denormal(False)


_flushing = threading.local()  # how deep in flush_denormals() blocks each thread is (the flags are per thread)
_TEAM_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _set_flush_denormal(on: bool) -> None:
    """`torch.set_flush_denormal(on)` on the calling thread and on every thread of PyTorch's OpenMP pool.

    The flush-to-zero and denormals-are-zero flags live in each thread's own control register (x86 MXCSR, ARM
    FPCR), and torch.set_flush_denormal sets the caller's alone: the pool threads that run the other shares of
    every large element-wise op, matmul and convolution (half of them with 2 threads) kept computing with
    subnormals. This runs it once on each thread of a team of the pool's size, through libgomp's GOMP_parallel
    (what `#pragma omp parallel` compiles to); the pool keeps those threads, and their flags, for PyTorch's
    parallel regions. Without libgomp (macOS, PyTorch's native thread pool): the calling thread only."""
    torch.set_flush_denormal(on)
    threads = torch.get_num_threads()
    parallel = _gomp_parallel() if threads > 1 else None
    if parallel is not None:
        parallel(_TEAM_BODY(lambda _: torch.set_flush_denormal(on)), None, threads, 0)


@functools.cache
def _gomp_parallel() -> Any:
    """libgomp's `GOMP_parallel(fn, data, num_threads, flags)` where PyTorch's parallel backend is it, else None."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    bundled = sorted(str(p) for p in (Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    for path in [*bundled, None]:  # None: the libraries already loaded (a system libgomp)
        try:
            fn = ctypes.CDLL(path).GOMP_parallel
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [_TEAM_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint], None
        return fn
    return None
