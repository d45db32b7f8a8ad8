"""Vectorised n-gram counting and lookup over integer token ids.

Representation (shared by counting, estimation, ARPA I/O and scoring): the n-grams of one order live in an
`NgramTable`, sorted lexicographically by word ids. Each n-gram also has an integer *key*

    key(w1..wn) = rank(w1..w(n-1)) * V + wn

where rank(...) is the row index of the prefix in the table of order n-1 (for unigrams the rank is the word
id itself: the unigram table always holds every vocabulary id). Keys fit in uint64 for any order (a rank is
below 2**40 and V below 2**24 in practice), they sort in the same order as the rows, and looking an n-gram up
is one `np.searchsorted` per order: rank of the prefix first, then the key. This is the sorted-array form of
KenLM's trie, and avoids base-V packing that overflows 64 bits at order 5 with a 10k vocabulary.

Counting is chunked: `count_chunk` counts one chunk of the corpus into explicit id rows, `merge_counts`
merges such per-chunk results (concatenate, then sum counts of equal rows), so corpora larger than memory
for the position arrays can be counted piece by piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2  # KenLM's fixed ids for the three special words


@dataclass
class RawCounts:
    """Counts of one corpus chunk: rows[n-1] is an (M, n) uint32 array of sorted unique n-grams."""

    rows: list[np.ndarray]
    counts: list[np.ndarray]


def unique_rows(rows: np.ndarray, weights: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique rows of an (M, n) id array and the summed weight of each.

    Rows are ranked one column at a time (rank of the first j columns * V + column j), so every
    intermediate key stays below M * V and fits in uint64 whatever n is.
    """
    m, n = rows.shape
    if m == 0:
        return rows.astype(np.uint32), weights.astype(np.int64)
    rank = np.zeros(m, dtype=np.uint64)
    for j in range(n):
        _, rank = np.unique(rank * np.uint64(vocab_size) + rows[:, j].astype(np.uint64), return_inverse=True)
        rank = rank.astype(np.uint64).ravel()
    order = np.argsort(rank, kind="stable")
    rank_sorted = rank[order]
    first = np.flatnonzero(np.r_[True, rank_sorted[1:] != rank_sorted[:-1]])
    summed = np.add.reduceat(weights[order].astype(np.int64), first)
    return rows[order[first]].astype(np.uint32), summed


def count_chunk(tokens: np.ndarray, sentence_ids: np.ndarray, order: int, vocab_size: int) -> RawCounts:
    """Count all n-grams of orders 1..order in one chunk.

    Input: `tokens`, the chunk's padded sentences (`<s> w1 .. wk </s>` each) as int ids, and `sentence_ids`,
    the sentence number of each token (n-grams never cross sentences). Output: RawCounts with, for each
    order, the sorted unique n-grams as id rows and their counts.
    """
    tokens = tokens.astype(np.uint64)
    rows: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    # rank[i]: index of the (n-1)-gram starting at position i among this chunk's (n-1)-grams (-1: none).
    prev_rank = tokens.astype(np.int64)
    prev_rows = None
    for n in range(1, order + 1):
        if n == 1:
            uniq, inverse, cnt = np.unique(tokens, return_inverse=True, return_counts=True)
            rows.append(uniq.astype(np.uint32)[:, None])
            counts.append(cnt.astype(np.int64))
            prev_rank = inverse.astype(np.int64).ravel()
            prev_rows = rows[-1]
            continue
        span = len(tokens) - n + 1
        if span <= 0:
            rows.append(np.zeros((0, n), np.uint32))
            counts.append(np.zeros(0, np.int64))
            prev_rank = np.zeros(0, np.int64)
            prev_rows = rows[-1]
            continue
        starts = np.arange(span)
        valid = sentence_ids[:span] == sentence_ids[n - 1:]
        starts = starts[valid]
        prefix = prev_rank[starts]
        keys = prefix.astype(np.uint64) * np.uint64(vocab_size) + tokens[starts + n - 1]
        uniq, inverse, cnt = np.unique(keys, return_inverse=True, return_counts=True)
        prefix_rank = (uniq // np.uint64(vocab_size)).astype(np.int64)
        last = (uniq % np.uint64(vocab_size)).astype(np.uint32)
        rows.append(np.column_stack([prev_rows[prefix_rank], last]).astype(np.uint32))
        counts.append(cnt.astype(np.int64))
        rank = np.full(len(tokens), -1, dtype=np.int64)
        rank[starts] = inverse.ravel()
        prev_rank = rank
        prev_rows = rows[-1]
    return RawCounts(rows, counts)


def merge_counts(parts: list[RawCounts], vocab_size: int) -> RawCounts:
    """Merge per-chunk counts: concatenate each order's rows and sum the counts of equal rows."""
    if len(parts) == 1:
        return parts[0]
    order = len(parts[0].rows)
    rows, counts = [], []
    for n in range(order):
        r = np.concatenate([p.rows[n] for p in parts])
        c = np.concatenate([p.counts[n] for p in parts])
        ur, uc = unique_rows(r, c, vocab_size)
        rows.append(ur)
        counts.append(uc)
    return RawCounts(rows, counts)


def full_unigrams(raw: RawCounts, vocab_size: int) -> RawCounts:
    """The same counts with a unigram row for every id 0..V-1 (count 0 for unseen ones such as `<unk>`)."""
    full = np.zeros(vocab_size, np.int64)
    full[raw.rows[0][:, 0].astype(np.int64)] = raw.counts[0]
    rows = np.arange(vocab_size, dtype=np.uint32)[:, None]
    return RawCounts([rows, *raw.rows[1:]], [full, *raw.counts[1:]])


class NgramIndex:
    """Sorted keys of every order, for vectorised lookup of n-grams given as id rows or as token streams.

    `keys[n-1]` holds the keys (see module docstring) of the order-n table; `keys[0]` is unused because
    unigram rank == word id (the unigram table covers every id 0..V-1).
    """

    def __init__(self, rows: list[np.ndarray], vocab_size: int):
        self.vocab_size = vocab_size
        self.keys: list[np.ndarray] = [np.zeros(0, np.uint64)]
        v = np.uint64(vocab_size)
        for n in range(2, len(rows) + 1):
            r = rows[n - 1]
            prefix = self.lookup(r[:, :-1])
            if np.any(prefix < 0):
                bad = r[np.flatnonzero(prefix < 0)[0]]
                raise ValueError(f"{n}-gram {bad.tolist()} has no {n - 1}-gram prefix")
            keys = prefix.astype(np.uint64) * v + r[:, -1].astype(np.uint64)
            if len(keys) > 1 and np.any(keys[1:] <= keys[:-1]):
                raise ValueError(f"{n}-gram rows are not sorted and unique")
            self.keys.append(keys)

    @property
    def order(self) -> int:
        return len(self.keys)

    def find(self, n: int, prefix_rank: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Row index in the order-n table of (prefix, last) for each element; -1 where absent.

        `prefix_rank` is the rank of the (n-1)-gram prefix (-1 when the prefix itself is absent).
        """
        if n == 1:
            return last.astype(np.int64)
        keys = self.keys[n - 1]
        ok = prefix_rank >= 0
        query = np.where(ok, prefix_rank, 0).astype(np.uint64) * np.uint64(self.vocab_size) + last.astype(np.uint64)
        pos = np.searchsorted(keys, query)
        pos_c = np.minimum(pos, max(len(keys) - 1, 0))
        hit = ok & (pos < len(keys))
        if len(keys):
            hit &= keys[pos_c] == query
        return np.where(hit, pos_c, -1).astype(np.int64)

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """Row index of each n-gram in an (M, n) id array within the order-n table; -1 where absent."""
        m, n = rows.shape
        if n == 0:
            return np.zeros(m, np.int64)
        rank = rows[:, 0].astype(np.int64)
        for j in range(2, n + 1):
            rank = self.find(j, rank, rows[:, j - 1])
        return rank

    def stream_ranks(self, tokens: np.ndarray, position: np.ndarray) -> np.ndarray:
        """For a stream of padded sentences: ranks[n-1, i] = row of the n-gram ending at token i, else -1.

        `position[i]` is the index of token i within its sentence (0 for `<s>`); an n-gram ending at i exists
        only if it fits in the sentence (n - 1 <= position[i]).
        """
        t = len(tokens)
        ranks = np.full((self.order, t), -1, dtype=np.int64)
        ranks[0] = tokens
        for n in range(2, self.order + 1):
            prefix = np.full(t, -1, dtype=np.int64)
            prefix[1:] = ranks[n - 2, :-1]  # the prefix of the n-gram ending at i is the (n-1)-gram ending at i-1
            prefix[position < n - 1] = -1
            ranks[n - 1] = self.find(n, prefix, tokens)
        return ranks
