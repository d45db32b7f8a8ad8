"""Counting a chunk's n-gram keys with a compiled LSD radix sort (the optional extra `genlab[fast]`, numba),
numpy's `np.unique` as the path without it.

`np.unique(keys, return_inverse=True)` sorts with a stable comparison sort, O(n log n), and then scatters the
inverse: on a 4-million-token chunk of PTB-like text it is most of counting's time. A least-significant-digit
radix sort makes one pass per 11 bits of the largest key (a key is prefix rank × V + word: 3 or 4 passes), each
reading the (key, position) pairs in order and writing them into 2,048 buckets, and then one pass finds the
distinct keys and the inverse. It is used past RADIX_MIN keys: importing numba and loading its compiled code takes
about half a second, more than numpy needs for a small corpus. Both paths give the same arrays. (Merging chunks,
genlab.models.ngram.counts.merge_counts, keeps numpy's stable argsort: its input is k sorted runs, which numpy's
run-detecting merge sort handles as fast as the radix sort here.)
"""

from __future__ import annotations

import importlib.util

import numpy as np

RADIX_MIN = 2_000_000  # keys below which numpy sorts (numba's start-up would cost more than it saves)


def _compiled(n: int) -> bool:
    return n >= RADIX_MIN and importlib.util.find_spec("numba") is not None


def unique_inverse_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct keys, each key's index among them, each distinct key's count) of a uint64 array: what
    `np.unique(keys, return_inverse=True, return_counts=True)` gives."""
    if _compiled(len(keys)):
        from genlab.models.ngram._radix import unique_inverse_counts as compiled

        return compiled(np.ascontiguousarray(keys, dtype=np.uint64))
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return uniq, inverse.ravel(), counts
