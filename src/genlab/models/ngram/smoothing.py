"""Smoothing methods: each turns the same `Counts` into the tables of an `Estimate`.

Two table semantics cover all methods (see `Estimate`):

* "backoff" (ARPA): interpolated Kneser-Ney, modified Kneser-Ney, Witten-Bell and stupid backoff. The
  interpolated methods are estimated as `alpha(c w) + gamma(c) * p(w | c')` and then written in backoff
  form (KenLM's `interpolate` stage): an n-gram's stored probability is its full interpolated probability
  and a context's backoff weight is its interpolation weight gamma(c).
* "counts": MLE and add-k. They do not interpolate: p(w | c) uses only the full context c.

Conventions shared with KenLM: ids 0/1/2 are `<unk>`/`<s>`/`</s>`; `<s>` is never predicted, so the
predicted vocabulary has V - 1 words (`<unk>` and `</s>` included) and the uniform distribution below the
unigrams is 1 / (V - 1).

Modified Kneser-Ney follows KenLM's lm/builder pipeline as named pure stages:
count (genlab.models.ngram.counts) -> `adjust_counts` -> `count_of_counts` -> `compute_discounts` ->
`ModifiedKneserNey.initial_probabilities` -> `interpolate` -> (genlab.models.ngram.arpa.write_arpa).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from genlab.models.ngram.counts import BOS_ID, UNK_ID, NgramIndex

log = logging.getLogger(__name__)

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback's defaults


@dataclass
class Counts:
    """Output of the count stage: raw counts of every order over `<s> w1 .. wk </s>` sentences.

    rows[n-1]: (M_n, n) uint32 sorted unique n-grams (rows[0] holds every id 0..V-1, unseen ones count 0);
    counts[n-1]: int64 counts aligned with the rows; index: lookup structure over the rows; suffixes[n-1] (n >= 2):
    row in table n-1 of each n-gram's suffix. `keys` and `suffixes` come from the count stage (RawCounts); when
    absent they are looked up here, once.
    """

    vocab_size: int
    rows: list[np.ndarray]
    counts: list[np.ndarray]
    keys: list[np.ndarray] | None = None
    suffixes: list[np.ndarray] | None = None
    index: NgramIndex = field(init=False)

    def __post_init__(self) -> None:
        self.index = NgramIndex(self.rows, self.vocab_size, self.keys)
        if self.suffixes is None:
            self.suffixes = [np.zeros(0, np.int64)] + [self.index.lookup(r[:, 1:]) for r in self.rows[1:]]
            assert all(np.all(s >= 0) for s in self.suffixes), "a corpus's counts hold their n-grams' suffixes"

    @property
    def order(self) -> int:
        return len(self.rows)

    def context_of(self, n: int) -> np.ndarray:
        """Row in table n-1 of each order-n n-gram's context w1..w(n-1) (all 0 for unigrams: one empty context)."""
        if n == 1:
            return np.zeros(len(self.rows[0]), np.int64)
        return (self.index.keys[n - 1] // np.uint64(self.vocab_size)).astype(np.int64)

    def suffix_of(self, n: int) -> np.ndarray:
        """Row in table n-1 of each order-n n-gram's suffix w2..wn (the lower-order n-gram it backs off to)."""
        return self.suffixes[n - 1]

    def n_contexts(self, n: int) -> int:
        return 1 if n == 1 else len(self.rows[n - 2])

    def predicted_unigram_counts(self) -> np.ndarray:
        """Unigram counts with `<s>` zeroed: it starts sentences but is never predicted."""
        c = self.counts[0].copy()
        c[BOS_ID] = 0
        return c


@dataclass
class Estimate:
    """What a smoothing method produces (log10 values, one array per order aligned with the count rows).

    kind "backoff": log10 p(w | c) = logprob of the longest stored n-gram ending in w (context suffix +
        w) plus the backoff weights of the longer contexts that were backed off from; a context with no
        stored row has weight `missing_backoff` (0 for ARPA; log10 alpha for stupid backoff).
    kind "counts": log10 p(w | c) = logprob of the n-gram c w if stored, else backoff[c] (the probability of
        any unseen word after the stored context c), else `unseen_context_logprob`.
    """

    kind: str
    logprob: list[np.ndarray]
    backoff: list[np.ndarray]
    missing_backoff: float = 0.0
    unseen_context_logprob: float = -math.inf
    normalized: bool = True


def _log10(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log10(x, out=out)


class Smoother(ABC):
    """A smoothing method: `estimate(counts) -> Estimate`."""

    normalized = True

    @abstractmethod
    def estimate(self, counts: Counts) -> Estimate: ...


# --- methods that use the full context only ---


class AddK(Smoother):
    """Add-k (Lidstone): p(w | c) = (C(c w) + k) / (C(c) + k |V|); k = 1 is Laplace.

    A context never seen in training gives the uniform 1 / |V| (which is what the formula gives for C(c) = 0).
    """

    def __init__(self, k: float):
        self.k = float(k)

    def estimate(self, counts: Counts) -> Estimate:
        v = counts.vocab_size - 1  # predicted words: everything but <s>
        logprob, floor = [], []
        for n in range(1, counts.order + 1):
            c = counts.predicted_unigram_counts() if n == 1 else counts.counts[n - 1]
            ctx = counts.context_of(n)
            totals = np.bincount(ctx, weights=c, minlength=counts.n_contexts(n))
            denom = totals + self.k * v
            lp = _log10((c + self.k) / denom[ctx])
            if n == 1:
                lp[BOS_ID] = 0.0  # never predicted; KenLM also writes 0 for the <s> unigram
            logprob.append(lp)
            # The "unseen word after context c" value lives on the context's row in table n-1.
            if n > 1:
                floor.append(np.where(totals > 0, _log10(self.k / np.where(denom > 0, denom, 1.0)),
                                      self._unseen_context(v)))
        floor.append(np.zeros(len(counts.rows[-1])))  # the top order is never a context
        return Estimate("counts", logprob, floor, unseen_context_logprob=self._unseen_context(v))

    def _unseen_context(self, v: int) -> float:
        return -math.log10(v)


class MLE(AddK):
    """Maximum likelihood: p(w | c) = C(c w) / C(c); unseen n-grams (and unseen contexts) get probability 0."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def _unseen_context(self, v: int) -> float:
        return -math.inf


class StupidBackoff(Smoother):
    """Brants et al. (2007): S(w | c) = C(c w) / C(c) if seen, else alpha * S(w | c'). Scores, not probabilities.

    An out-of-vocabulary word scores alpha / (number of training tokens), as if backed off from a singleton.
    """

    normalized = False

    def __init__(self, alpha: float):
        self.alpha = float(alpha)

    def estimate(self, counts: Counts) -> Estimate:
        logprob, backoff = [], []
        log_alpha = math.log10(self.alpha)
        for n in range(1, counts.order + 1):
            c = counts.predicted_unigram_counts() if n == 1 else counts.counts[n - 1]
            ctx = counts.context_of(n)
            totals = np.bincount(ctx, weights=c, minlength=counts.n_contexts(n))
            lp = _log10(c / totals[ctx])
            if n == 1:
                lp[c == 0] = log_alpha - math.log10(totals[0])
                lp[BOS_ID] = 0.0
            logprob.append(lp)
            backoff.append(np.full(len(c), log_alpha if n < counts.order else 0.0))
        return Estimate("backoff", logprob, backoff, missing_backoff=log_alpha, normalized=False)


# --- interpolated methods, written in backoff form ---


@dataclass
class Initial:
    """Output of an `initial_probabilities` stage.

    alpha[n-1]: per order-n n-gram, its own (discounted) probability mass given its context;
    gamma[n-1]: per order-n context (rows of table n-1; one entry for the empty unigram context), the
    weight given to the lower order; NaN for a context with no continuation in the counts.
    """

    alpha: list[np.ndarray]
    gamma: list[np.ndarray]


def interpolate(counts: Counts, initial: Initial) -> Estimate:
    """Interpolate stage (KenLM lm/builder/interpolate): recursive interpolation, then backoff form.

    Input: counts (for contexts/suffixes) and the initial probabilities. Output: an Estimate with
    p(w) = alpha(w) + gamma() / (V - 1)   and   p(w | c) = alpha(c w) + gamma(c) * p(w | c')
    for every stored n-gram, and backoff(c) = gamma(c) for every context with continuations (1 otherwise).
    `initial` is consumed: each order's probabilities, then their log10, are computed in its alpha array (on a
    large corpus three arrays per n-gram alive at once would set the peak memory of estimation).
    """
    v = counts.vocab_size - 1
    alpha, initial.alpha = initial.alpha, []
    probs = [alpha[0]]
    probs[0] += initial.gamma[0][0] / v
    probs[0][BOS_ID] = 1.0  # <s> is never predicted; KenLM writes log10 p = 0 for it
    for n in range(2, counts.order + 1):
        lower = initial.gamma[n - 1][counts.context_of(n)]
        lower *= probs[-1][counts.suffix_of(n)]
        probs.append(alpha[n - 1])
        probs[-1] += lower
        del lower
    backoff = []
    for n in range(1, counts.order):
        g = initial.gamma[n]  # gamma of order n+1 lives on the rows of table n
        backoff.append(np.where(np.isnan(g), 0.0, _log10(np.where(np.isnan(g), 1.0, g))))
    backoff.append(np.zeros(len(counts.rows[-1])))
    return Estimate("backoff", [_log10(x, out=x) for x in probs], backoff)


class Interpolated(Smoother):
    """Base of the interpolated methods: subclasses give the initial probabilities, `interpolate` does the rest."""

    @abstractmethod
    def initial_probabilities(self, counts: Counts) -> Initial: ...

    def estimate(self, counts: Counts) -> Estimate:
        return interpolate(counts, self.initial_probabilities(counts))


def _per_context(counts: Counts, n: int, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(context row of each order-n n-gram, then the sum per context of each of `values`)."""
    ctx = counts.context_of(n)
    return ctx, *(np.bincount(ctx, weights=v, minlength=counts.n_contexts(n)) for v in values)


class WittenBell(Interpolated):
    """Interpolated Witten-Bell: gamma(c) = T(c) / (C(c) + T(c)), alpha(c w) = C(c w) / (C(c) + T(c)),
    where T(c) is the number of distinct words seen after c."""

    def initial_probabilities(self, counts: Counts) -> Initial:
        alpha, gamma = [], []
        for n in range(1, counts.order + 1):
            c = counts.predicted_unigram_counts() if n == 1 else counts.counts[n - 1].astype(np.float64)
            ctx, total, types = _per_context(counts, n, c, (c > 0).astype(np.float64))
            denom = total + types
            with np.errstate(invalid="ignore", divide="ignore"):
                alpha.append(c / denom[ctx])
                gamma.append(np.where(types > 0, types / denom, np.nan))
        return Initial(alpha, gamma)


# --- (modified) Kneser-Ney, stage by stage as KenLM's lmplz ---


def adjust_counts(counts: Counts) -> list[np.ndarray]:
    """Adjust-counts stage. Input: raw counts. Output: adjusted counts per order, aligned with the rows.

    The highest order keeps raw counts, and so does any n-gram starting with `<s>` (nothing can extend it
    to the left); every other n-gram's count is replaced by its number of distinct left extensions
    (the continuation count N1+(. w1..wn)). `<s>` as a unigram is set to 0: it is never predicted.
    """
    adjusted = []
    for n in range(1, counts.order + 1):
        raw = counts.counts[n - 1]
        if n == counts.order:
            adj = raw.copy()
            if n == 1:
                adj[BOS_ID] = 0
            adjusted.append(adj)
            continue
        # Each (n+1)-gram is one distinct left extension of its suffix n-gram.
        adj = np.bincount(counts.suffix_of(n + 1), minlength=len(raw)).astype(np.int64)
        starts_bos = counts.rows[n - 1][:, 0] == BOS_ID
        adj[starts_bos] = raw[starts_bos]
        if n == 1:
            adj[BOS_ID] = 0
        adjusted.append(adj)
    return adjusted


def _last_in_suffix_order(rows: np.ndarray) -> int:
    """Index of the row that sorts last when n-grams are compared from their last word backwards."""
    candidates = np.flatnonzero(rows[:, -1] == rows[:, -1].max())
    return int(candidates[np.lexsort(rows[candidates].T)[-1]])


def count_of_counts(counts: Counts, adjusted: list[np.ndarray]) -> np.ndarray:
    """Counts-of-counts stage. Input: raw and adjusted counts. Output: (N, 4) array, row n-1 = n1..n4 of
    order n (how many n-grams have adjusted count exactly 1, 2, 3, 4).

    KenLM quirk, kept for exactness: lmplz's adjust_counts streams the n-grams in suffix order and, for
    the one n-gram of each lower order that is still pending when the stream ends (the last in suffix
    order), records its raw count instead of its adjusted count in these statistics (not in the
    probabilities). On PTB this moves one unigram out of n4 and changes the unigram D3+ by 0.003.
    """
    stats = []
    for n, a in enumerate(adjusted, 1):
        a = a.copy()
        if n < counts.order and len(a):
            last = _last_in_suffix_order(counts.rows[n - 1])
            a[last] = counts.counts[n - 1][last]
        stats.append([np.count_nonzero(a == k) for k in range(1, 5)])
    return np.array(stats, dtype=np.int64)


def compute_discounts(stats: np.ndarray) -> np.ndarray:
    """Discount stage (Chen & Goodman). Input: counts-of-counts n1..n4 per order. Output: (N, 3) array of
    D1, D2, D3+ per order:  Y = n1 / (n1 + 2 n2),  D_k = k - (k + 1) Y n_{k+1} / n_k.

    Where a count-of-count is 0 or a discount falls outside [0, k], lmplz would stop ("is this small or
    artificial data?"); here the order falls back to (0.5, 1, 1.5) as `lmplz --discount_fallback` does.
    """
    out = np.empty((len(stats), 3))
    for i, (n1, n2, n3, n4) in enumerate(stats.astype(np.float64)):
        nk = (n1, n2, n3, n4)
        if min(nk) > 0:
            y = n1 / (n1 + 2 * n2)
            d = [k - (k + 1) * y * nk[k] / nk[k - 1] for k in (1, 2, 3)]
            if all(0 <= d[k - 1] <= k for k in (1, 2, 3)):
                out[i] = d
                continue
        log.warning("order %d: cannot estimate Kneser-Ney discounts from counts-of-counts %s; using %s",
                    i + 1, nk, FALLBACK_DISCOUNTS)
        out[i] = FALLBACK_DISCOUNTS
    return out


class ModifiedKneserNey(Interpolated):
    """Interpolated modified Kneser-Ney, number for number as KenLM's `lmplz` (no pruning)."""

    def __init__(self) -> None:
        self.discounts: np.ndarray | None = None  # (N, 3), kept for reports and tests

    def compute_discounts(self, stats: np.ndarray) -> np.ndarray:
        return compute_discounts(stats)

    def initial_probabilities(self, counts: Counts) -> Initial:
        """Initial-probabilities stage. Input: counts. Output: alpha(c w) = (a(c w) - D(a(c w))) / S(c) and
        gamma(c) = sum_w D(a(c w)) / S(c), with a the adjusted counts, S(c) = sum_w a(c w), D(0) = 0."""
        adjusted = adjust_counts(counts)
        self.discounts = self.compute_discounts(count_of_counts(counts, adjusted))
        alpha, gamma = [], []
        for n in range(1, counts.order + 1):
            a, adjusted[n - 1] = adjusted[n - 1], None  # released order by order: estimation's peak memory
            table = np.concatenate([[0.0], self.discounts[n - 1]])  # D by adjusted count 0, 1, 2, 3+
            d = table[np.minimum(a, 3)]
            ctx, total, discounted = _per_context(counts, n, a.astype(np.float64), d)
            d = np.subtract(a, d, out=d)  # a - d: the discounted counts
            del a
            with np.errstate(invalid="ignore", divide="ignore"):
                d /= total[ctx]
                alpha.append(d)
                gamma.append(np.where(total > 0, discounted / total, np.nan))
        return Initial(alpha, gamma)


class KneserNey(ModifiedKneserNey):
    """Interpolated Kneser-Ney: modified KN with one discount per order, D = n1 / (n1 + 2 n2)."""

    def compute_discounts(self, stats: np.ndarray) -> np.ndarray:
        out = np.empty((len(stats), 3))
        for i, (n1, n2, _, _) in enumerate(stats.astype(np.float64)):
            out[i] = n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else FALLBACK_DISCOUNTS[0]
        return out


def make_smoother(name: str, k: float = 0.5, alpha: float = 0.4) -> Smoother:
    """The Smoother for an `NgramConfig.smoothing` name."""
    return {
        "mle": MLE,
        "add-k": lambda: AddK(k),
        "laplace": lambda: AddK(1.0),
        "witten-bell": WittenBell,
        "kn": KneserNey,
        "mkn": ModifiedKneserNey,
        "stupid-backoff": lambda: StupidBackoff(alpha),
    }[name]()


__all__ = [
    "UNK_ID", "Counts", "Estimate", "Initial", "Smoother", "AddK", "MLE", "StupidBackoff", "WittenBell",
    "KneserNey", "ModifiedKneserNey", "adjust_counts", "count_of_counts", "compute_discounts", "interpolate",
    "make_smoother",
]
