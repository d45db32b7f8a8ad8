"""Vectorised n-gram counting and lookup over integer token ids.

Representation (shared by counting, estimation, ARPA I/O and scoring): the n-grams of one order live in an
`NgramTable`, sorted lexicographically by word ids. Each n-gram also has an integer *key*

    key(w1..wn) = rank(w1..w(n-1)) * V + wn

where rank(...) is the row index of the prefix in the table of order n-1 (for unigrams the rank is the word
id itself: the unigram table always holds every vocabulary id). Keys fit in uint64 for any order (a rank is
below 2**40 and V below 2**24 in practice), they sort in the same order as the rows, and looking an n-gram up
is one `np.searchsorted` per order: rank of the prefix first, then the key. This is the sorted-array form of
KenLM's trie, and avoids base-V packing that overflows 64 bits at order 5 with a 10k vocabulary.

Counting is chunked: `count_chunk` counts one chunk of the corpus, `merge_counts` merges the chunks order by
order, so corpora larger than memory for the position arrays can be counted piece by piece (a large chunk's keys
by a radix sort where numba is installed: genlab.models.ngram.sorting). Counting also
yields each table's keys and each n-gram's suffix row (the lower-order n-gram it backs off to), which
estimation would otherwise look up with a binary search per n-gram and order; merging carries them over by
renumbering each chunk's ranks into the merged tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genlab.models.ngram.sorting import unique_inverse_counts

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2  # KenLM's fixed ids for the three special words


@dataclass
class RawCounts:
    """Counts of a corpus chunk (or of merged chunks).

    counts[0][i] is the count of word `unigram_ids[i]`; for n >= 2, keys[n-1] holds the sorted NgramIndex keys
    of the order-n n-grams (prefix rank * vocab_size + last word; a unigram's rank is its word id), counts[n-1]
    their counts and suffixes[n-1] the row in table n-1 of each one's suffix w2..wn. Word-id rows are derived
    from the keys (`rows`): 8 bytes an n-gram whatever the order.
    """

    unigram_ids: np.ndarray
    counts: list[np.ndarray]
    keys: list[np.ndarray]
    suffixes: list[np.ndarray]
    vocab_size: int

    @property
    def rows(self) -> list[np.ndarray]:
        """rows[n-1]: the order-n n-grams as a sorted (M, n) uint32 array of word ids."""
        v = np.uint64(self.vocab_size)
        rows = [self.unigram_ids.astype(np.uint32)[:, None]]
        prefix_rows = np.arange(self.vocab_size, dtype=np.uint32)[:, None]
        for keys in self.keys[1:]:
            rows.append(np.column_stack([prefix_rows[(keys // v).astype(np.int64)], (keys % v).astype(np.uint32)]))
            prefix_rows = rows[-1]
        return rows


def count_chunk(tokens: np.ndarray, sentence_ids: np.ndarray, order: int, vocab_size: int) -> RawCounts:
    """Count all n-grams of orders 1..order in one chunk.

    Input: `tokens`, the chunk's padded sentences (`<s> w1 .. wk </s>` each) as int ids, and `sentence_ids`,
    the sentence number of each token (n-grams never cross sentences). Output: RawCounts.
    """
    per_id = np.bincount(tokens, minlength=vocab_size)
    unigram_ids = np.flatnonzero(per_id)
    counts: list[np.ndarray] = [per_id[unigram_ids].astype(np.int64)]
    tokens = tokens.astype(np.uint64)
    keys: list[np.ndarray] = [np.zeros(0, np.uint64)]
    suffixes: list[np.ndarray] = [np.zeros(0, np.int64)]
    # rank[i]: row of the (n-1)-gram starting at position i in its table (-1: none). A unigram's row is its
    # word id, as in NgramIndex (full_unigrams later stores every id), so these ranks are the final ones.
    prev_rank = tokens.astype(np.int64)
    v = np.uint64(vocab_size)
    for n in range(2, order + 1):
        starts = np.flatnonzero(sentence_ids[:max(len(tokens) - n + 1, 0)] == sentence_ids[n - 1:])
        uniq, inverse, cnt = unique_inverse_counts(prev_rank[starts].astype(np.uint64) * v + tokens[starts + n - 1])
        counts.append(cnt.astype(np.int64))
        keys.append(uniq)
        # The suffix of the n-gram starting at i is the (n-1)-gram starting at i+1 (any occurrence will do).
        first = np.empty(len(uniq), np.int64)
        first[inverse] = starts
        suffixes.append(prev_rank[first + 1])
        prev_rank = np.full(len(tokens), -1, dtype=np.int64)
        prev_rank[starts] = inverse
    return RawCounts(unigram_ids, counts, keys, suffixes, vocab_size)


def merge_counts(parts: list[RawCounts], vocab_size: int) -> RawCounts:
    """Merge per-chunk counts into the counts of their concatenation, with final keys and suffix rows; the
    parts' arrays are released as they are merged (the parts are consumed).

    Order by order: a chunk's n-gram keeps its last word and takes its prefix's merged rank (known from the
    order below), which gives its merged key; equal keys across chunks add their counts. Renumbering keeps
    each chunk's order, and the merged suffix rows come from the chunks' suffix rows the same way.
    """
    if len(parts) == 1:
        return parts[0]
    v = np.uint64(vocab_size)
    per_id = np.zeros(vocab_size, np.int64)
    for p in parts:
        per_id[p.unigram_ids.astype(np.int64)] += p.counts[0]
    seen = np.flatnonzero(per_id)
    counts, keys, suffixes = [per_id[seen]], [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
    renumber = [np.arange(p.vocab_size, dtype=np.int64) for p in parts]  # chunk rank -> merged rank, order n-1
    for n in range(2, len(parts[0].keys) + 1):
        sizes = np.cumsum([len(p.keys[n - 1]) for p in parts])[:-1]
        merged_keys = np.concatenate([
            renumber[i][(p.keys[n - 1] // np.uint64(p.vocab_size)).astype(np.int64)].astype(np.uint64) * v
            + (p.keys[n - 1] % np.uint64(p.vocab_size)) for i, p in enumerate(parts)])
        merged_suffixes = np.concatenate([renumber[i][p.suffixes[n - 1]] for i, p in enumerate(parts)])
        merged_counts = np.concatenate([p.counts[n - 1] for p in parts])
        for p in parts:
            p.keys[n - 1] = p.suffixes[n - 1] = p.counts[n - 1] = None  # type: ignore[call-overload]
        order = np.argsort(merged_keys, kind="stable")  # runs of sorted chunks: a merge, not a full sort
        merged_keys = merged_keys[order]
        new = np.r_[True, merged_keys[1:] != merged_keys[:-1]]
        first = np.flatnonzero(new)
        keys.append(merged_keys[first])
        counts.append(np.add.reduceat(merged_counts[order], first))
        suffixes.append(merged_suffixes[order[first]])
        del merged_keys, merged_counts, merged_suffixes, first
        rank = np.empty(len(order), np.int64)
        rank[order] = np.cumsum(new) - 1
        renumber = np.split(rank, sizes)
    return RawCounts(seen, counts, keys, suffixes, vocab_size)


def full_unigrams(raw: RawCounts, vocab_size: int) -> RawCounts:
    """The same counts with a unigram for every id 0..V-1 (count 0 for unseen ones such as `<unk>`)."""
    full = np.zeros(vocab_size, np.int64)
    full[raw.unigram_ids.astype(np.int64)] = raw.counts[0]
    return RawCounts(np.arange(vocab_size), [full, *raw.counts[1:]], raw.keys, raw.suffixes, vocab_size)


class NgramIndex:
    """Sorted keys of every order, for vectorised lookup of n-grams given as id rows or as token streams.

    `keys[n-1]` holds the keys (see module docstring) of the order-n table; `keys[0]` is unused because
    unigram rank == word id (the unigram table covers every id 0..V-1).
    """

    def __init__(self, rows: list[np.ndarray], vocab_size: int, keys: list[np.ndarray] | None = None):
        """`keys`: the keys of `rows` when already known (from counting a single chunk); else computed."""
        self.vocab_size = vocab_size
        self.keys: list[np.ndarray] = [np.zeros(0, np.uint64)]
        if keys is not None:
            self.keys = list(keys)
            return
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
        out = np.full(len(last), -1, dtype=np.int64)
        ask = np.flatnonzero(prefix_rank >= 0)  # an absent prefix has no extension: no search
        if not len(ask) or not len(keys):
            return out
        query = prefix_rank[ask].astype(np.uint64) * np.uint64(self.vocab_size) + last[ask].astype(np.uint64)
        # Sorted queries walk the table in order (numpy's binary search starts from the last hit): 2x faster.
        order = np.argsort(query)
        query = query[order]
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        hit = keys[pos] == query
        out[ask[order[hit]]] = pos[hit]
        return out

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
