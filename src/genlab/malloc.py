"""glibc malloc settings for processes that create and free large arrays over and over (training steps'
tensors, n-gram estimation's numpy temporaries). No PyTorch here: n-gram estimation never imports it."""

import ctypes
import functools

# glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: give free heap top back only past 2 GiB


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse, process-wide (once); False where malloc is not glibc's.

    By default glibc serves an allocation above its mmap threshold (128 KiB, rising to at most 32 MiB as such
    blocks are freed) with a fresh mmap and unmaps it on free, and trims the heap's free top; the kernel zeroes
    every page of a fresh mapping when it is first touched. A training step frees and re-creates the same large
    tensors every time (a 10k-word softmax's logits and their gradient are 45 MiB each at batch 32 x 35 tokens),
    so each step had the kernel zero and fault in those pages again: in a PTB LSTM run, 200k page faults a
    second, a fifth of the CPU time in the kernel, 1.4x fewer steps (benchmarks/throughput.py --malloc default
    shows it). n-gram estimation on a large corpus is the same story with numpy temporaries of hundreds of MiB:
    at 64 copies of PTB, zeroing pages was a quarter of its time. With mmap off and trimming at 2 GiB, freed
    blocks stay in the heap and are reused. The price: the process keeps its peak heap until it exits. glibc
    still maps a block that cannot come from a heap (thread arenas' 64 MiB heaps), so nothing fails."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl, macOS: their allocators behave otherwise
        return False
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
