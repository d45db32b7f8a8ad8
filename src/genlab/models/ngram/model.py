"""`NgramLM`: fit, query, score, generate, save/load, ARPA in and out.

Probabilities are log10 throughout, as in ARPA files and KenLM. Sentences are scored as KenLM's
`Model.score(s, bos=True, eos=True)`: `<s>` starts the history and is not predicted, `</s>` is; words not in
the vocabulary are scored as `<unk>`.
"""

from __future__ import annotations

import array
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save_file as st_save_file

from genlab.checkpoint import RunDir, atomic_write_bytes, atomic_write_file
from genlab.config import from_dict
from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.models.ngram.arpa import ArpaModel, read_arpa, write_arpa
from genlab.models.ngram.config import NgramConfig
from genlab.models.ngram.counts import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    UNK,
    UNK_ID,
    NgramIndex,
    RawCounts,
    count_chunk,
    full_unigrams,
    merge_counts,
)
from genlab.models.ngram.smoothing import Counts, Estimate, make_smoother
from genlab.progress import progress_bar
from genlab.registry import register

if TYPE_CHECKING:
    from genlab.models.ngram.compiled import CompiledScorer, Scores

WEIGHTS_FILE = "ngram.safetensors"
META_FILE = "ngram.json"
FORMAT = "genlab-ngram/1"

Sentence = Sequence[str] | str


def _words(sentence: Sentence) -> Sequence[str]:
    return sentence.split() if isinstance(sentence, str) else sentence


@register("ngram", task="ngram")
class NgramLM:
    """Statistical n-gram LM: MLE, add-k, Witten-Bell, Kneser-Ney, modified Kneser-Ney (KenLM), stupid backoff."""

    Config = NgramConfig

    @classmethod
    def from_run(cls, run: RunDir, config: dict, device: object = None) -> NgramLM:
        """The model saved in run directory `run` (see genlab.load); `device` is unused: numpy on the CPU."""
        return cls.load(run.path)

    @classmethod
    def from_file(cls, path: Path) -> NgramLM:
        """An ARPA file as a ready model, scoring whitespace-separated words."""
        model = cls.from_arpa(path)
        model.run_config = {"model": "ngram", "model_config": asdict(model.config), "data": {"data": str(path)}}
        return model

    def __init__(self, vocab: list[str], rows: list[np.ndarray], estimate: Estimate, config: NgramConfig,
                 source: str = "fit", index: NgramIndex | None = None):
        if vocab[:3] != [UNK, BOS, EOS]:
            raise ValueError("vocabulary must start with <unk>, <s>, </s>")
        self.vocab = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.rows = rows
        self.estimate = estimate
        self.config = config
        self.source = source  # "fit" or the ARPA file it was read from
        # ValueError when a prefix is missing or rows unsorted; `fit` hands over the index its counts built.
        self.index = index if index is not None else NgramIndex(rows, len(vocab))
        self.discounts: np.ndarray | None = None  # (N, 3) D1, D2, D3+ for kn/mkn fits
        # How strings are scored: "auto" (compiled hash lookups, genlab[fast], once they pay: _compiled_scores),
        # "compiled" (whenever numba is installed) or "numpy".
        self.scorer = "auto"
        self._tokens_scored = 0  # by the numpy path, towards building the compiled scorer's tables

    @property
    def order(self) -> int:
        return len(self.rows)

    @property
    def normalized(self) -> bool:
        """False for stupid backoff: its scores do not sum to 1, so its "perplexity" is not one."""
        return self.estimate.normalized

    def counts_per_order(self) -> list[int]:
        """Number of stored n-grams of each order (unigrams include <unk>, <s>, </s>, as in ARPA files)."""
        return [len(r) for r in self.rows]

    # --- fitting ---

    @classmethod
    def fit(cls, sentences: Iterable[Sentence], config: NgramConfig) -> NgramLM:
        """Count and smooth. `sentences`: token lists (or whitespace-separated strings) without <s>/</s>."""
        config.validate()
        # A new word takes the next id on first sight (a C-level lookup per word: no Python loop).
        ids: dict[str, int] = defaultdict(itertools.count(EOS_ID + 1).__next__, {UNK: UNK_ID, BOS: BOS_ID, EOS: EOS_ID})
        parts: list[RawCounts] = []
        buf = array.array("q")  # machine ints, not a list of Python int objects
        lengths: list[int] = []
        n_words = 0

        def flush() -> None:
            # Count what is buffered; the chunks are merged at the end (merge_counts).
            tokens = np.frombuffer(buf, dtype=np.int64).copy()
            sentence_ids = np.repeat(np.arange(len(lengths)), np.array(lengths) + 2)
            if np.count_nonzero((tokens == BOS_ID) | (tokens == EOS_ID)) != 2 * len(lengths):
                raise DataError("training sentences must not contain <s> or </s>; they are added to every sentence")
            parts.append(count_chunk(tokens, sentence_ids, config.order, len(ids)))
            del buf[:]
            lengths.clear()

        for sentence in progress_bar(sentences, desc="counting n-grams", unit=" sentences", leave=False):
            words = _words(sentence)
            buf.append(BOS_ID)
            buf.extend(map(ids.__getitem__, words))
            buf.append(EOS_ID)
            lengths.append(len(words))
            n_words += len(words)
            if len(buf) >= config.chunk_tokens:
                flush()
        if lengths:
            flush()
        if n_words < config.order:
            raise DataError(f"the training corpus has {n_words} tokens, fewer than the n-gram order "
                            f"{config.order}; give more text or a lower order")
        vocab = list(ids)  # in id order: a dict keeps insertion order
        raw = full_unigrams(merge_counts(parts, len(vocab)), len(vocab))
        counts = Counts(len(vocab), raw.rows, raw.counts, raw.keys, raw.suffixes)
        parts.clear()  # merged: only `counts` holds the tables now
        smoother = make_smoother(config.smoothing, k=config.k, alpha=config.alpha)
        model = cls(vocab, counts.rows, smoother.estimate(counts), config, index=counts.index)
        model.discounts = getattr(smoother, "discounts", None)
        return model

    # --- scoring ---

    def _encode(self, sentences: Iterable[Sentence]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(tokens, position in sentence, sentence index, OOV count) for `<s> w1 .. wk </s>` per sentence."""
        get = self.ids.get
        flat = array.array("q")
        lengths: list[int] = []
        for sentence in progress_bar(sentences, desc="scoring", unit=" sentences", leave=False):
            words = _words(sentence)
            flat.append(BOS_ID)
            flat.extend(map(get, words, itertools.repeat(UNK_ID)))  # C-level lookups, unknown words as <unk>
            flat.append(EOS_ID)
            lengths.append(len(words) + 2)
        tokens = np.frombuffer(flat, dtype=np.int64)
        sizes = np.array(lengths, dtype=np.int64)
        starts = np.cumsum(sizes) - sizes
        sentence = np.repeat(np.arange(len(sizes)), sizes)
        position = np.arange(len(tokens)) - starts[sentence]
        oov = int(np.count_nonzero(tokens == UNK_ID))
        return tokens, position, sentence, oov

    def _token_logprobs(self, tokens: np.ndarray, position: np.ndarray) -> np.ndarray:
        """log10 p(token i | up to N-1 earlier tokens of its sentence) for every i, all orders at once.

        One searchsorted per order finds every n-gram ending at every position (NgramIndex.stream_ranks);
        the rest is array arithmetic. Position-0 tokens get their unigram value (callers ignore them).
        """
        est, n_max = self.estimate, self.order
        ranks = self.index.stream_ranks(tokens, position)  # (N, T), -1 = absent
        history = np.minimum(position, n_max - 1)
        out = np.zeros(len(tokens))
        prev = np.full_like(ranks, -1)  # ranks of the contexts: n-grams ending at i-1
        prev[:, 1:] = ranks[:, :-1]
        if est.kind == "counts":
            # Only the full available context counts: order history+1.
            for n in range(1, n_max + 1):
                sel = np.flatnonzero(history == n - 1)
                r = ranks[n - 1, sel]
                value = np.full(len(sel), est.unseen_context_logprob)
                if n > 1:
                    ctx = prev[n - 2, sel]
                    value[ctx >= 0] = est.backoff[n - 2][ctx[ctx >= 0]]
                value[r >= 0] = est.logprob[n - 1][r[r >= 0]]
                out[sel] = value
            return out
        # Backoff: longest match m (KenLM stops at the first missing order), then the backoff weights of
        # the contexts of length m..history that were backed off from.
        found = np.logical_and.accumulate(ranks >= 0, axis=0)
        matched = found.sum(axis=0)
        for n in range(1, n_max + 1):
            sel = np.flatnonzero(matched == n)
            out[sel] = est.logprob[n - 1][ranks[n - 1, sel]]
        prev_found = np.zeros_like(found)
        prev_found[:, 1:] = found[:, :-1]
        for j in range(1, n_max):
            sel = np.flatnonzero((matched <= j) & (j <= history))
            ctx = prev[j - 1, sel]
            ok = prev_found[j - 1, sel]
            bow = np.full(len(sel), est.missing_backoff)
            bow[ok] = est.backoff[j - 1][ctx[ok]]
            out[sel] += bow
        return out

    @cached_property
    def _scorer(self) -> CompiledScorer | None:
        # imported here: numba takes 0.3 s to import, which training and small evaluations need not pay
        from genlab.models.ngram.compiled import CompiledScorer

        return CompiledScorer.build(self.vocab, self.rows, self.estimate)

    def _compiled_scores(self, sentences: list[Sentence]) -> Scores | None:
        """Scores from the compiled pass (genlab.models.ngram.compiled), or None where it does not apply.

        Its hash tables take about as long to build as the numpy path takes to score a third to a half as many
        tokens as the model has n-grams (PTB, order 5: 0.2-0.3 s for 2.3 M n-grams; the compiled pass then
        scores about 3x as fast: benchmarks/ngram_ptb.py), so they are built once the model has been asked for
        half as many tokens as it has n-grams in all: a single small evaluation stays on numpy, a server or a
        large test set moves to the tables, and neither pays much more than twice the best of the two."""
        if self.scorer == "numpy":
            return None
        if self.scorer == "auto" and "_scorer" not in self.__dict__:
            self._tokens_scored += sum(len(s) // 5 + 1 for s in sentences) if all(
                isinstance(s, str) for s in sentences) else sum(len(s) + 1 for s in sentences)
            if self._tokens_scored < sum(len(r) for r in self.rows) // 2:
                return None
        return self._scorer.score(sentences) if self._scorer is not None else None

    def score_sentences(self, sentences: Iterable[Sentence]) -> np.ndarray:
        """log10 probability of each sentence with <s> and </s>, as kenlm.Model.score(s, bos=True, eos=True)."""
        sentences = list(sentences)
        fast = self._compiled_scores(sentences)
        if fast is not None:
            return fast.sentence_log10
        tokens, position, sentence, _ = self._encode(sentences)
        lp = self._token_logprobs(tokens, position)
        lp[position == 0] = 0.0
        return np.bincount(sentence, weights=lp, minlength=int(sentence[-1]) + 1 if len(sentence) else 0)

    def perplexity(self, sentences: Iterable[Sentence]) -> dict[str, float | int | bool]:
        """Corpus perplexity as KenLM: 10 ** (-sum log10 p / (words + sentences)); </s> predicted, <s> not.

        Tokens with probability 0 (MLE on unseen n-grams) make the perplexity infinite; they are counted in
        `zero_prob_tokens`. `oov` counts words scored as <unk>. For stupid backoff (`normalized` False) the
        number is computed the same way but is not a perplexity.
        """
        sentences = list(sentences)
        fast = self._compiled_scores(sentences)
        if fast is not None:
            n, oov, zero = fast.tokens, fast.oov, fast.zero_prob_tokens
            total = float(fast.sentence_log10.sum()) if zero == 0 else -math.inf
        else:
            tokens, position, _, oov = self._encode(sentences)
            lp = self._token_logprobs(tokens, position)[position > 0]
            zero = int(np.count_nonzero(np.isneginf(lp)))
            total = float(lp.sum()) if zero == 0 else -math.inf
            n = len(lp)
        ppl = 10.0 ** (-total / n) if n and zero == 0 else math.inf
        return {"perplexity": ppl, "log10_prob": total, "tokens": n, "sentences": len(sentences),
                "oov": oov, "zero_prob_tokens": zero, "normalized": self.normalized}

    def _context_ids(self, context: Sequence[str]) -> list[int]:
        ids = [self.ids.get(w, UNK_ID) for w in context]
        return ids[-(self.order - 1):] if self.order > 1 else []

    def _next_logprobs(self, context_ids: list[int], words: np.ndarray) -> np.ndarray:
        """log10 p(w | context) for every w in `words` (one row per candidate, scored in one batch)."""
        width = len(context_ids) + 1
        tokens = np.empty((len(words), width), dtype=np.int64)
        tokens[:, :-1] = context_ids
        tokens[:, -1] = words
        position = np.tile(np.arange(width), len(words))
        return self._token_logprobs(tokens.ravel(), position).reshape(len(words), width)[:, -1]

    def logprob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context). `context`: earlier words, oldest first; start it with "<s>" for the
        beginning of a sentence. Only the last N-1 words are used; unknown words count as <unk>."""
        return float(self._next_logprobs(self._context_ids(context), np.array([self.ids.get(word, UNK_ID)]))[0])

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """p(word | context) = 10 ** logprob(word, context)."""
        return 10.0 ** self.logprob(word, context)

    def generate(self, context: list[str], max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int | None = None) -> Iterator[str]:
        """Sample up to `max_tokens` words after `context` (a sentence start is assumed before it); stops at </s>
        (not yielded). temperature 0 is greedy; top_k keeps the k most probable words at each step."""
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        rng = np.random.default_rng(seed)
        history = [BOS_ID] + [self.ids.get(w, UNK_ID) for w in context if w != BOS]
        candidates = np.array([i for i in range(len(self.vocab)) if i != BOS_ID], dtype=np.int64)
        for _ in range(max_tokens):
            lp = self._next_logprobs(history[-(self.order - 1):] if self.order > 1 else [], candidates)
            if temperature == 0:
                choice = int(np.argmax(lp))
            else:
                # Shifted so the largest is 0 before dividing: a tiny temperature tends to greedy, never nan.
                logits = (lp - lp.max()) * math.log(10.0) / temperature
                if top_k is not None and top_k < len(logits):
                    cut = np.partition(logits, -top_k)[-top_k]
                    logits = np.where(logits >= cut, logits, -np.inf)
                p = np.exp(logits)
                choice = int(rng.choice(len(p), p=p / p.sum()))
            word = int(candidates[choice])
            if word == EOS_ID:
                return
            history.append(word)
            yield self.vocab[word]

    # --- ARPA ---

    @classmethod
    def from_arpa(cls, path: str | Path) -> NgramLM:
        """Read a KenLM or SRILM ARPA file (.gz too) into a model that scores with backoff semantics as KenLM."""
        arpa = read_arpa(path)
        est = Estimate("backoff", arpa.logprob, arpa.backoff)
        try:
            return cls(arpa.vocab, arpa.rows, est, NgramConfig(order=len(arpa.rows)), source=str(path))
        except ValueError as e:
            raise DataError(f"{path}: {e}") from None

    def to_arpa(self, path: str | Path) -> None:
        """Write the model as an ARPA file (gzipped when `path` ends in .gz) that kenlm.Model loads."""
        if self.estimate.kind != "backoff" or self.estimate.missing_backoff != 0.0:
            raise ConfigError(f"smoothing {self.config.smoothing!r} cannot be written as ARPA (only backoff models: "
                              "mkn, kn, witten-bell)")
        arpa = ArpaModel(self.vocab, self.rows, self.estimate.logprob, self.estimate.backoff)
        atomic_write_bytes(Path(path), write_arpa(path, arpa))

    # --- checkpoints ---

    def save(self, directory: Path) -> None:
        """Write DIR/ngram.safetensors (tables) and DIR/ngram.json (vocabulary, config, semantics), atomically."""
        directory = Path(directory)
        tensors: dict[str, np.ndarray] = {}
        for n in range(1, self.order + 1):
            tensors[f"rows.{n}"] = np.ascontiguousarray(self.rows[n - 1], dtype=np.uint32)
            tensors[f"logprob.{n}"] = np.ascontiguousarray(self.estimate.logprob[n - 1], dtype=np.float64)
            tensors[f"backoff.{n}"] = np.ascontiguousarray(self.estimate.backoff[n - 1], dtype=np.float64)
        meta = {
            "format": FORMAT,
            "config": asdict(self.config),
            "source": self.source,
            "kind": self.estimate.kind,
            "missing_backoff": repr(self.estimate.missing_backoff),
            "unseen_context_logprob": repr(self.estimate.unseen_context_logprob),
            "normalized": self.estimate.normalized,
            "discounts": None if self.discounts is None else self.discounts.tolist(),
            "vocab": self.vocab,
        }
        # Streamed from the arrays to the file: no second copy of the tables in memory.
        atomic_write_file(directory / WEIGHTS_FILE, lambda tmp: st_save_file(tensors, tmp, metadata={"format": FORMAT}))
        atomic_write_bytes(directory / META_FILE, (json.dumps(meta) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, directory: Path) -> NgramLM:
        """Reverse of `save`; a missing, corrupt or inconsistent file raises CheckpointError."""
        directory = Path(directory)
        weights, meta_path = directory / WEIGHTS_FILE, directory / META_FILE
        for p in (weights, meta_path):
            if not p.is_file():
                raise CheckpointError(f"missing file: {p}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            tensors = st_load(weights.read_bytes())
            config = from_dict(NgramConfig, meta["config"], where=str(meta_path))
            order = config.order
            rows = [tensors[f"rows.{n}"] for n in range(1, order + 1)]
            est = Estimate(meta["kind"], [tensors[f"logprob.{n}"] for n in range(1, order + 1)],
                           [tensors[f"backoff.{n}"] for n in range(1, order + 1)],
                           float(meta["missing_backoff"]), float(meta["unseen_context_logprob"]),
                           bool(meta["normalized"]))
            vocab = meta["vocab"]
            if est.kind not in ("backoff", "counts") or not isinstance(vocab, list):
                raise ValueError("bad model kind or vocabulary")
            for n, r in enumerate(rows, 1):
                m = len(r)
                if r.ndim != 2 or r.shape[1] != n or est.logprob[n - 1].shape != (m,) or \
                        est.backoff[n - 1].shape != (m,):
                    raise ValueError(f"order-{n} arrays have inconsistent shapes")
                if m and int(r.max()) >= len(vocab):
                    raise ValueError(f"order-{n} n-grams use word ids beyond the vocabulary")
            if len(rows[0]) != len(vocab) or np.any(rows[0][:, 0] != np.arange(len(vocab))):
                raise ValueError("unigram table does not match the vocabulary")
            model = cls(vocab, rows, est, config, source=meta.get("source", "fit"))
        except (OSError, SafetensorError, ValueError, KeyError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{directory} holds a corrupt or truncated n-gram model ({e}); "
                                  "retrain or restore it") from None
        if meta.get("discounts") is not None:
            model.discounts = np.array(meta["discounts"])
        return model
