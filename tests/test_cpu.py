"""CPU settings of training: subnormal floats flushed to zero on every thread PyTorch computes with while training
(and only there); large freed tensors kept by malloc for reuse instead of faulted in again each step."""

import platform
import subprocess
import sys

import pytest
import torch

from genlab.cpu import flush_denormals

SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


@pytest.mark.skipif("parallel backend: OpenMP" not in torch.__config__.parallel_info(),
                    reason="the per-thread flush goes through PyTorch's OpenMP pool")
def test_flush_reaches_every_thread_and_is_undone() -> None:
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    torch.set_flush_denormal(False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # an element-wise op this large is split between both threads
    try:
        x = torch.full((4_000_000,), SUBNORMAL)
        with flush_denormals():
            with flush_denormals():  # an inner block (a sampler inside training) leaves the outer one flushing
                pass
            assert bool((x * 1.0 == 0).all()), "some thread still computes with subnormals"
        assert bool((x * 1.0 != 0).all()), "flushing stayed on after the block"
    finally:
        torch.set_num_threads(threads)


# Page faults of creating and freeing a 64 MiB tensor five times, in a fresh process (malloc's settings are
# process-wide): with `keep` the process first calls keep_freed_memory(). The warm-up rounds let the heap reach
# its steady size: aligned blocks do not fit exactly in the hole a freed one leaves, so the first few grow it.
FAULTS = """
import resource, sys, torch
from genlab.malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def make_and_free():
    torch.ones(16 * 2**20)
for _ in range(10):
    make_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    make_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc malloc's")
def test_large_freed_tensors_are_reused_not_faulted_in_again() -> None:
    def faults(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                                  check=True).stdout)

    pages = 5 * 64 * 2**20 // 4096
    assert faults("default") > pages // 2, "glibc's default no longer maps large blocks afresh: drop the setting?"
    assert faults("keep") < pages // 100
