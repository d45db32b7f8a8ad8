"""Compiled scoring of n-gram models: strings in, sentence log10 probabilities out (the optional extra
`genlab[fast]`, numba).

KenLM's probing layout, built from a model's tables when it starts scoring this way (NgramLM._compiled_scores):
- each word is identified by a 64-bit hash of its UTF-8 bytes, as KenLM does (no string is compared): a
  vocabulary with two words of one hash is refused here and scored by the numpy path; an unknown word that
  collides with a known one has a chance of about V / 2^64;
- the n-grams of each order n >= 2 sit in an open-addressing hash table (linear probing, 1.5 slots per
  n-gram) under a 64-bit hash of their word ids, each slot holding key, log10 p and backoff side by side.
  The key does not depend on any other lookup (NgramIndex's keys chain through the prefix's rank), so the
  probes of one token's orders are independent and their cache misses overlap. Two stored n-grams of one hash
  are refused at build, as are words; an unseen n-gram mistaken for a stored one has a chance of about
  (stored n-grams of its order) / 2^64 per probe, as in KenLM.
One compiled pass over the joined text splits the words, probes the n-grams ending at each token (order n
only where order n - 1 was found at the token before: a stored n-gram's prefix is stored) and adds up the
arithmetic of NgramLM._token_logprobs, whose numpy form stays the reference and the path without numba (tests
compare the two).

Text goes this way only when Python's `str.split()` would split it the same: the sentences are joined with NUL
(so none may contain one), and a text with non-ASCII whitespace (which `str.split` splits on) is left to numpy.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from genlab.models.ngram.counts import BOS_ID, EOS_ID, UNK_ID
from genlab.models.ngram.smoothing import Estimate

try:
    from llvmlite import ir
    from numba import __version__ as numba_version
    from numba import njit, types
    from numba.core import cgutils
    from numba.core.errors import NumbaError
    from numba.extending import intrinsic
except ImportError:  # the numpy path scores instead
    njit = None

EMPTY = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # no n-gram hashes to it (checked when the tables are built)
ENTRY = 3  # uint64 words per table slot: key, log10 p, backoff (padding to 4, huge pages: no faster here)
CHUNK = 100_000  # sentences joined and tokenised at a time: bounded memory for large texts
AHEAD = 8  # tokens between locating (and prefetching) an n-gram's slot and probing it
_NON_ASCII_SPACE = re.compile(r"[^\S\x00-\x7f]")


@dataclass
class Scores:
    """What one compiled pass measures: each sentence's log10 probability (</s> included, <s> not) and counts
    over all predicted tokens (words and </s>)."""

    sentence_log10: np.ndarray
    tokens: int
    oov: int
    zero_prob_tokens: int


if njit is not None:
    _FNV_OFFSET = np.uint64(0xCBF29CE484222325)
    _FNV_PRIME = np.uint64(0x100000001B3)
    _M1 = np.uint64(0xBF58476D1CE4E5B9)
    _M2 = np.uint64(0x94D049BB133111EB)
    _S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)

    @njit(cache=True, inline="always")
    def _mix(h: np.uint64) -> np.uint64:
        # splitmix64's finaliser: keys are consecutive-ish integers, their low bits poor table slots
        h = (h ^ (h >> _S30)) * _M1
        h = (h ^ (h >> _S27)) * _M2
        return h ^ (h >> _S31)

    @njit(cache=True, inline="always")
    def _bucket(h: np.uint64, capacity: int) -> int:
        # Lemire's multiply-shift range reduction of the hash's high 32 bits: a modulo is a 64-bit division
        return np.int64(((h >> _S32) * np.uint64(capacity)) >> _S32)

    @njit(cache=True, inline="always")
    def _next_slot(slot: int, capacity: int) -> int:
        # linear probing, wrapping round
        return slot + 1 if slot + 1 < capacity else 0

    @njit(cache=True, inline="always")
    def _hash_bytes(text: np.ndarray, start: int, end: int) -> np.uint64:
        h = _FNV_OFFSET
        for k in range(start, end):
            h = (h ^ np.uint64(text[k])) * _FNV_PRIME
        return _mix(h)

    @njit(cache=True)
    def _build_words(text: np.ndarray, starts: np.ndarray, ends: np.ndarray, capacity: int):  # noqa: ANN202
        """The word table: slot -> (hash, id); id -1 marks an empty slot. ok False if two words share a hash."""
        hashes = np.zeros(capacity, np.uint64)
        ids = np.full(capacity, -1, np.int64)
        for word in range(len(starts)):
            h = _hash_bytes(text, starts[word], ends[word])
            slot = _bucket(h, capacity)
            while ids[slot] != -1:
                if hashes[slot] == h:
                    return hashes, ids, False
                slot = _next_slot(slot, capacity)
            hashes[slot] = h
            ids[slot] = word
        return hashes, ids, True

    @njit(cache=True, inline="always")
    def _extend(h: np.uint64, word: int) -> np.uint64:
        # the hash of an n-gram from its last word backwards: w_n, then w_(n-1) .. w_1
        return _mix(h * _FNV_PRIME + np.uint64(word + 1))

    @njit(cache=True)
    def _fill_table(rows: np.ndarray, logprob: np.ndarray, backoff: np.ndarray, table: np.ndarray) -> bool:
        """One order's n-grams into its table (zeros): slot i holds key, log10 p and backoff (float64 bits) in
        table[ENTRY * i:], so a probe touches one cache line, at most two. False when two n-grams share a key."""
        values = table.view(np.float64)
        capacity = len(table) // ENTRY
        for i in range(capacity):
            table[ENTRY * i] = EMPTY
        n = rows.shape[1]
        for r in range(rows.shape[0]):
            h = _extend(np.uint64(0), rows[r, n - 1])
            for k in range(n - 2, -1, -1):
                h = _extend(h, rows[r, k])
            if h == EMPTY:
                return False
            slot = _bucket(h, capacity)
            while table[ENTRY * slot] != EMPTY:
                if table[ENTRY * slot] == h:
                    return False
                slot = _next_slot(slot, capacity)
            table[ENTRY * slot] = h
            values[ENTRY * slot + 1] = logprob[r]
            values[ENTRY * slot + 2] = backoff[r]
        return True

    @njit(cache=True, inline="always")
    def _is_space(b: np.uint8) -> bool:
        # the ASCII characters str.split() splits on: \t \n \v \f \r, \x1c-\x1f and space
        return b == 32 or (9 <= b <= 13) or (28 <= b <= 31)

    @intrinsic
    def _prefetch(typingctx, array, index):  # noqa: ANN001, ANN202 - numba's intrinsic signature
        """Ask the processor to bring array[index]'s cache line in (LLVM's prefetch: read, keep, data)."""

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]], wraparound=False)
            byte_pointer = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0")
            builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(array, index), codegen

    @njit(cache=True)
    def _tokenize(text: np.ndarray, n_sentences: int, word_hashes: np.ndarray, word_ids: np.ndarray):  # noqa: ANN202
        """Sentences (NUL-separated words) -> token ids (<s> words </s> per sentence), each token's position in
        its sentence, and the number of words not in the vocabulary (scored as <unk>)."""
        tokens = np.empty((len(text) + 1) // 2 + 2 * n_sentences, np.int32)  # a word and its separator: 2 bytes
        positions = np.empty(len(tokens), np.int32)
        t = k = oov = 0
        n = len(text)
        for _ in range(n_sentences):
            tokens[t], positions[t] = BOS_ID, 0
            t += 1
            position = 1
            while True:
                while k < n and _is_space(text[k]):
                    k += 1
                if k >= n or text[k] == 0:
                    k += 1
                    break
                start = k
                while k < n and text[k] != 0 and not _is_space(text[k]):
                    k += 1
                h = _hash_bytes(text, start, k)
                slot = _bucket(h, len(word_ids))
                word = UNK_ID
                while word_ids[slot] != -1:
                    if word_hashes[slot] == h:
                        word = word_ids[slot]
                        break
                    slot = _next_slot(slot, len(word_ids))
                oov += word == UNK_ID
                tokens[t], positions[t] = word, position
                t += 1
                position += 1
            tokens[t], positions[t] = EOS_ID, position
            t += 1
        return tokens[:t], positions[:t], oov

    @njit(cache=True, inline="always")
    def _locate(tokens: np.ndarray, positions: np.ndarray, i: int, order: int, tables: np.ndarray,
                table_start: np.ndarray, capacities: np.ndarray, keys: np.ndarray, slots: np.ndarray) -> None:
        """The key and slot of every n-gram (orders 2.. that fit) ending at token i into keys/slots[i % rows],
        its slot's cache line asked for: probed some tokens later, it is there by then."""
        row = i % keys.shape[0]
        h = _extend(np.uint64(0), tokens[i])
        for m in range(2, min(positions[i], order - 1) + 2):
            h = _extend(h, tokens[i - m + 1])
            slot = table_start[m - 2] + ENTRY * _bucket(h, capacities[m - 2])
            keys[row, m - 1] = h
            slots[row, m - 1] = slot
            _prefetch(tables, slot)

    @njit(cache=True)
    def _score(tokens: np.ndarray, positions: np.ndarray, n_sentences: int, unigram_logprob: np.ndarray,
               unigram_backoff: np.ndarray, tables: np.ndarray, table_start: np.ndarray, capacities: np.ndarray,
               order: int, backoff_kind: bool, missing_backoff: float, unseen: float):  # noqa: ANN202
        """Tokens -> (log10 per sentence, predicted tokens, zero-probability tokens).

        The n-gram of order m ending at a token is probed only when the (m-1)-gram ending at the token before
        was found (a stored n-gram's prefix is stored), as KenLM does. Its slot was located and prefetched
        AHEAD tokens earlier (_locate), so the cache misses of many tokens overlap instead of one after another."""
        values = tables.view(np.float64)
        out = np.zeros(n_sentences)
        keys = np.zeros((AHEAD + 1, order), np.uint64)  # ring of located keys and slots, a row per token
        slots = np.zeros((AHEAD + 1, order), np.int64)
        found = np.zeros(order, np.bool_)  # found[m-1]: the n-gram of order m ending at this token is stored
        prev_found = np.zeros(order, np.bool_)
        prob = np.zeros(order)
        back = np.zeros(order)  # backoff weights of the n-grams ending at this token
        prev_back = np.zeros(order)
        n_tokens = len(tokens)
        for i in range(min(AHEAD, n_tokens)):
            _locate(tokens, positions, i, order, tables, table_start, capacities, keys, slots)
        predicted = zeros = 0
        sentence = -1
        prev_matched = 1
        total = 0.0
        for i in range(n_tokens):
            if i + AHEAD < n_tokens:
                _locate(tokens, positions, i + AHEAD, order, tables, table_start, capacities, keys, slots)
            word = tokens[i]
            position = positions[i]
            if position == 0:  # <s>: a sentence starts, nothing is predicted
                if sentence >= 0:
                    out[sentence] = total
                sentence += 1
                total = 0.0
                prev_found[:] = False
                prev_found[0] = True
                prev_back[0] = unigram_backoff[word]
                prev_matched = 1
                continue
            history = min(position, order - 1)
            found[0] = True
            prob[0] = unigram_logprob[word]
            back[0] = unigram_backoff[word]
            row = i % (AHEAD + 1)
            for m in range(2, order + 1):
                found[m - 1] = False
                if m - 1 > history or not prev_found[m - 2]:
                    continue
                h, slot = keys[row, m - 1], slots[row, m - 1]
                end = table_start[m - 2] + ENTRY * capacities[m - 2]
                key = tables[slot]
                while key != h and key != EMPTY:
                    slot = slot + ENTRY if slot + ENTRY < end else table_start[m - 2]
                    key = tables[slot]
                if key == h:
                    found[m - 1] = True
                    prob[m - 1] = values[slot + 1]
                    back[m - 1] = values[slot + 2]
            if backoff_kind:
                matched = 1
                while matched < order and found[matched]:
                    matched += 1
                value = prob[matched - 1]
                for j in range(matched, history + 1):  # contexts backed off from: lengths matched..history
                    value += prev_back[j - 1] if j <= prev_matched else missing_backoff
                prev_matched = matched
            else:
                m = history + 1
                if found[m - 1]:
                    value = prob[m - 1]
                elif m > 1 and prev_found[m - 2]:
                    value = prev_back[m - 2]
                else:
                    value = unseen
            zeros += value == -np.inf
            total += value
            predicted += 1
            prev_found[:] = found
            prev_back[:] = back
        if sentence >= 0:
            out[sentence] = total
        return out, predicted, zeros


def _order_values(values: list[np.ndarray], n: int, size: int) -> np.ndarray:
    """Order n's values (log10 p or backoff) as float64; zeros where the estimate stores none (the top order's
    backoff)."""
    if n - 1 < len(values) and len(values[n - 1]) == size:
        return np.ascontiguousarray(values[n - 1], np.float64)
    return np.zeros(size)


class CompiledScorer:
    """A model's hash tables, for `_score`. Build with `CompiledScorer.build`."""

    def __init__(self, vocab: list[str], rows: list[np.ndarray], estimate: Estimate):
        encoded = [w.encode("utf-8") for w in vocab]
        lengths = np.array([len(w) for w in encoded], np.int64)
        ends = np.cumsum(lengths)
        self.word_hashes, self.word_ids, self.ok = _build_words(
            np.frombuffer(b"".join(encoded), np.uint8), ends - lengths, ends, 2 * len(vocab))
        self.unigram_logprob = _order_values(estimate.logprob, 1, len(vocab))
        self.unigram_backoff = _order_values(estimate.backoff, 1, len(vocab))
        # KenLM's probing tables: 1.5 slots per n-gram; a miss (common for long n-grams) ends at an empty slot
        self.capacities = np.array([len(r) * 3 // 2 + 1 for r in rows[1:]], np.int64)
        self.table_start = np.cumsum(np.concatenate([[0], ENTRY * self.capacities]))[:-1].astype(np.int64)
        self.tables = np.zeros(int(ENTRY * self.capacities.sum()), np.uint64)
        for n, (r, start, capacity) in enumerate(zip(rows[1:], self.table_start, self.capacities, strict=True), 2):
            self.ok &= _fill_table(np.ascontiguousarray(r, np.int64), _order_values(estimate.logprob, n, len(r)),
                                   _order_values(estimate.backoff, n, len(r)),
                                   self.tables[start:start + ENTRY * capacity])
        self.order = len(rows)
        self.estimate = estimate

    @classmethod
    def build(cls, vocab: list[str], rows: list[np.ndarray], estimate: Estimate) -> CompiledScorer | None:
        """The scorer, or None without numba or when two words (or two n-grams of one order) share a hash."""
        if njit is None:
            return None
        try:
            scorer = cls(vocab, rows, estimate)
            scorer.score([""])  # compiles the scoring kernels now (or loads them from numba's cache)
        except UnicodeEncodeError:  # a vocabulary word with lone surrogates
            return None
        except (NumbaError, RuntimeError) as e:  # LLVM's errors too: another numba than genlab[fast]'s
            warnings.warn(f"compiled n-gram scoring is unavailable with numba {numba_version} ({e}); "
                          "scoring with numpy. pip install 'genlab[fast]' installs the numba it was tested with",
                          RuntimeWarning, stacklevel=2)
            return None
        return scorer if scorer.ok else None

    def score(self, sentences: list) -> Scores | None:
        """Scores of `sentences` (strings), or None when the compiled pass would not split them as
        `str.split()` does (a sentence that is not a string, holds NUL, or has non-ASCII whitespace)."""
        if not all(isinstance(s, str) for s in sentences):
            return None
        parts = [self._score_chunk(sentences[i:i + CHUNK]) for i in range(0, len(sentences), CHUNK)]
        if any(p is None for p in parts):
            return None
        return Scores(np.concatenate([p.sentence_log10 for p in parts]) if parts else np.zeros(0),
                      sum(p.tokens for p in parts), sum(p.oov for p in parts), sum(p.zero_prob_tokens for p in parts))

    def _score_chunk(self, sentences: list[str]) -> Scores | None:
        joined = "\x00".join(sentences)
        if joined.count("\x00") != len(sentences) - 1:
            return None
        if joined.isascii():
            data = joined.encode("ascii")
        elif _NON_ASCII_SPACE.search(joined):
            return None
        else:
            try:
                data = joined.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates
                return None
        est = self.estimate
        tokens, positions, oov = _tokenize(np.frombuffer(data, np.uint8), len(sentences), self.word_hashes,
                                           self.word_ids)
        out, predicted, zeros = _score(tokens, positions, len(sentences), self.unigram_logprob, self.unigram_backoff,
                                       self.tables, self.table_start, self.capacities, self.order,
                                       est.kind == "backoff", float(est.missing_backoff),
                                       float(est.unseen_context_logprob))
        return Scores(out, int(predicted), int(oov), int(zeros))
