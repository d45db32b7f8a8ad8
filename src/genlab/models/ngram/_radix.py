"""numba kernels of genlab.models.ngram.sorting (imported only where numba is installed and a sort pays)."""

import numpy as np
from numba import njit

DIGIT_BITS = 11  # 2,048 buckets: their counters and write positions stay in the CPU's first-level caches
BUCKETS = 1 << DIGIT_BITS


@njit(cache=True)
def radix_sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys sorted, the stable order that sorts them): LSD radix sort of uint64 keys, one pass per digit of
    the largest key; a digit that every key shares is skipped."""
    n = keys.shape[0]
    sorted_keys = keys.copy()
    order = np.arange(n)
    if n == 0:
        return sorted_keys, order
    top = keys.max()
    passes = 1
    while passes * DIGIT_BITS < 64 and (top >> np.uint64(passes * DIGIT_BITS)) > 0:
        passes += 1
    mask = np.uint64(BUCKETS - 1)
    histograms = np.zeros((passes, BUCKETS), np.int64)  # every pass's histogram from one read of the keys
    for i in range(n):
        k = keys[i]
        for p in range(passes):
            histograms[p, np.intp((k >> np.uint64(p * DIGIT_BITS)) & mask)] += 1
    spare_keys = np.empty_like(sorted_keys)
    spare_order = np.empty_like(order)
    position = np.empty(BUCKETS, np.int64)
    for p in range(passes):
        if histograms[p].max() == n:
            continue
        total = 0
        for d in range(BUCKETS):
            position[d] = total
            total += histograms[p, d]
        shift = np.uint64(p * DIGIT_BITS)
        for i in range(n):
            k = sorted_keys[i]
            d = np.intp((k >> shift) & mask)
            j = position[d]
            spare_keys[j] = k
            spare_order[j] = order[i]
            position[d] = j + 1
        sorted_keys, spare_keys = spare_keys, sorted_keys
        order, spare_order = spare_order, order
    return sorted_keys, order


@njit(cache=True)
def unique_inverse_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True, return_counts=True) of uint64 keys, by radix sort."""
    sorted_keys, order = radix_sort(keys)
    n = keys.shape[0]
    distinct = 0
    for i in range(n):
        if i == 0 or sorted_keys[i] != sorted_keys[i - 1]:
            distinct += 1
    uniq = np.empty(distinct, np.uint64)
    counts = np.zeros(distinct, np.int64)
    inverse = np.empty(n, np.int64)
    g = -1
    for i in range(n):
        if i == 0 or sorted_keys[i] != sorted_keys[i - 1]:
            g += 1
            uniq[g] = sorted_keys[i]
        counts[g] += 1
        inverse[order[i]] = g
    return uniq, inverse, counts
