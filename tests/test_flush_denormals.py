"""Subnormal floats are flushed to zero on every thread PyTorch computes with while training, and only there."""

import pytest
import torch

from genlab.trainer import flush_denormals

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
