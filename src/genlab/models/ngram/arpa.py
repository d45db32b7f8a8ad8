"""ARPA back-off language model files (as written by KenLM's lmplz and SRILM's ngram-count), in and out.

    \\data\\
    ngram 1=3
    ngram 2=2

    \\1-grams:
    -1.2\t<unk>\t0
    ...
    \\2-grams:
    -0.5\t<s> a
    \\end\\

A line is `log10 p <TAB> w1 .. wn [<TAB> log10 backoff]`; the backoff is absent at the top order and
optional below it (missing = 0). Any whitespace separates fields when reading. Files ending in .gz are
gzip-compressed.
"""

from __future__ import annotations

import gzip
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genlab.errors import DataError
from genlab.models.ngram.counts import BOS, EOS, UNK

UNKNOWN_MISSING_LOGPROB = -100.0  # what KenLM gives <unk> when a file lacks it
_NGRAM_COUNT = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"^\\(\d+)-grams:$")


@dataclass
class ArpaModel:
    """The content of an ARPA file with words as ids: vocab[i] is word i; ids 0/1/2 are <unk>/<s>/</s>.

    rows[n-1] (M, n) uint32 sorted lexicographically; logprob/backoff[n-1] float64 aligned with them.
    """

    vocab: list[str]
    rows: list[np.ndarray]
    logprob: list[np.ndarray]
    backoff: list[np.ndarray]


def _open_text(path: Path) -> io.TextIOBase:
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def _float(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: {what} {text!r} is not a number") from None
    if math.isnan(value) or value == math.inf or (value > 0 and what == "log10 probability"):
        raise DataError(f"{path}:{lineno}: {what} {text!r} is out of range (a log10 probability is <= 0)")
    return value


def read_arpa(path: str | Path) -> ArpaModel:
    """Read an ARPA file (plain or .gz). Any problem raises one DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ARPA file not found: {path}")
    try:
        with _open_text(path) as f:
            return _parse(f, path)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ARPA file ({e})") from None


Section = tuple[np.ndarray, np.ndarray, np.ndarray]  # (M, n) word ids in file order, log10 p, log10 backoff


def _parse(f: io.TextIOBase, path: Path) -> ArpaModel:
    lines = [line.strip() for line in f.read().split("\n")]
    i = 0  # index of the next line; line numbers are i + 1

    def next_nonblank() -> str:
        nonlocal i
        while i < len(lines):
            i += 1
            if lines[i - 1]:
                return lines[i - 1]
        raise DataError(f"{path}:{i}: file ends early (truncated ARPA file, no \\end\\)")

    # Header: anything before \data\ is ignored (SRILM and others write comments there).
    while next_nonblank() != "\\data\\":
        pass
    declared: dict[int, int] = {}
    while True:
        text = next_nonblank()
        m = _NGRAM_COUNT.match(text)
        if not m:
            break
        n, count = int(m.group(1)), int(m.group(2))
        if n != len(declared) + 1:
            raise DataError(f"{path}:{i}: expected 'ngram {len(declared) + 1}=...', got {text!r}")
        declared[n] = count
    if not declared:
        raise DataError(f"{path}:{i}: no 'ngram N=count' lines after \\data\\")
    order = len(declared)

    words: dict[str, int] = {}
    sections: list[Section] = []
    for n in range(1, order + 1):
        m = _SECTION.match(text)
        if not m:
            raise DataError(f"{path}:{i}: expected '\\{n}-grams:', got {text!r}")
        if int(m.group(1)) != n:
            what = "an order it did not declare" if int(m.group(1)) > order else "out of order"
            raise DataError(f"{path}:{i}: section {text!r} is {what} (expected \\{n}-grams:)")
        start = i
        while i < len(lines) and not lines[i].startswith("\\"):
            i += 1
        if i == len(lines):
            raise DataError(f"{path}:{i}: file ends early in the \\{n}-grams section (truncated ARPA file, no \\end\\)")
        section = None if n == 1 else _fast_section(lines[start:i], n, order, declared[n], words)
        if section is None:  # the line-by-line parser finds and names the bad line (or parses odd spacing)
            section = _slow_section(lines, start, i, n, order, declared[n], words, path)
        sections.append(section)
        text = next_nonblank()
    if text != "\\end\\":
        if _SECTION.match(text):
            raise DataError(f"{path}:{i}: section {text!r} is an order \\data\\ did not declare")
        raise DataError(f"{path}:{i}: expected \\end\\, got {text!r}")
    for missing in (BOS, EOS):
        if missing not in words:
            raise DataError(f"{path}: no {missing} unigram; a sentence language model needs it")
    return _to_model(path, words, sections)


def _fast_section(block: list[str], n: int, order: int, declared: int, words: dict[str, int]) -> Section | None:
    """Parse a section whose lines are single-space/tab separated, a column at a time; None if anything
    is unusual (the slow parser then reports it precisely)."""
    body = [line for line in block if line]
    if len(body) != declared:
        return None
    seps = np.array([line.count(" ") + line.count("\t") for line in body], dtype=np.int64)
    grams = np.empty((len(body), n), dtype=np.int64)
    probs = np.zeros(len(body))
    bows = np.zeros(len(body))
    try:
        for fields in (n + 1, n + 2) if n < order else (n + 1,):
            sel = np.flatnonzero(seps == fields - 1)
            if not len(sel):
                continue
            flat = " ".join([body[j] for j in sel]).split()
            if len(flat) != len(sel) * fields:
                return None
            probs[sel] = np.array(flat[0::fields], dtype=np.float64)
            for c in range(n):
                grams[sel, c] = [words[w] for w in flat[c + 1::fields]]
            if fields == n + 2:
                bows[sel] = np.array(flat[n + 1::fields], dtype=np.float64)
            seps[sel] = -1
    except (ValueError, KeyError):
        return None
    if np.any(seps >= 0) or np.any(np.isnan(probs) | (probs > 0)) or np.any(np.isnan(bows) | (bows == np.inf)):
        return None
    return grams, probs, bows


def _slow_section(lines: list[str], start: int, end: int, n: int, order: int, declared: int,
                  words: dict[str, int], path: Path) -> Section:
    """Parse lines[start:end] one by one; the first problem raises DataError with its line number."""
    grams: list[list[int]] = []
    probs: list[float] = []
    bows: list[float] = []
    for idx in range(start, end):
        text, lineno = lines[idx], idx + 1
        if not text:
            continue
        fields = text.split()
        if len(fields) == n + 1 or (len(fields) == n + 2 and n < order):
            probs.append(_float(fields[0], path, lineno, "log10 probability"))
            bows.append(_float(fields[n + 1], path, lineno, "log10 backoff") if len(fields) == n + 2 else 0.0)
        else:
            raise DataError(f"{path}:{lineno}: a {n}-gram line needs a probability, {n} words"
                            f"{' and an optional backoff' if n < order else ''}; got {len(fields)} fields")
        if n == 1:
            if fields[1] in words:
                raise DataError(f"{path}:{lineno}: duplicate unigram {fields[1]!r}")
            words[fields[1]] = len(words)
            grams.append([words[fields[1]]])
        else:
            try:
                grams.append([words[w] for w in fields[1:n + 1]])
            except KeyError as e:
                raise DataError(f"{path}:{lineno}: word {e.args[0]!r} is not in the unigrams") from None
        if len(grams) > declared:
            raise DataError(f"{path}:{lineno}: more {n}-grams than the {declared} declared in \\data\\")
    if len(grams) != declared:
        raise DataError(f"{path}:{end}: {len(grams)} {n}-grams but \\data\\ declares {declared}")
    return np.array(grams, dtype=np.int64).reshape(-1, n), np.array(probs), np.array(bows)


def _to_model(path: Path, words: dict[str, int], sections: list[Section]) -> ArpaModel:
    """Renumber words so that <unk>, <s>, </s> are ids 0, 1, 2, then sort each order's rows."""
    file_vocab = list(words)
    specials = [UNK, BOS, EOS]
    vocab = specials + [w for w in file_vocab if w not in specials]
    new_id = np.array([vocab.index(w) if w in specials else 0 for w in file_vocab], dtype=np.int64)
    others = np.array([w not in specials for w in file_vocab])
    new_id[others] = np.arange(3, 3 + int(others.sum()))
    rows, logprob, backoff = [], [], []
    for n, (grams, p, b) in enumerate(sections, 1):
        r = new_id[grams].astype(np.uint32)
        if n == 1 and UNK not in words:
            r = np.vstack([[[0]], r]).astype(np.uint32)
            p = np.r_[UNKNOWN_MISSING_LOGPROB, p]
            b = np.r_[0.0, b]
        sort = np.lexsort(r.T[::-1]) if len(r) else np.zeros(0, np.int64)
        r, p, b = r[sort], p[sort], b[sort]
        if len(r) > 1:
            dup = np.flatnonzero(np.all(r[1:] == r[:-1], axis=1))
            if len(dup):
                gram = " ".join(vocab[i] for i in r[dup[0]])
                raise DataError(f"{path}: duplicate {n}-gram {gram!r}")
        rows.append(r)
        logprob.append(p)
        backoff.append(b)
    return ArpaModel(vocab, rows, logprob, backoff)


def _format(x: float) -> str:
    if x == -math.inf:
        return "-99"  # SRILM's and KenLM's "zero probability"
    return f"{x:.8g}" if x != 0 else "0"


def write_arpa(path: str | Path, model: ArpaModel) -> bytes:
    """ARPA text of `model` (returned as bytes, gzipped when `path` ends in .gz; the caller writes it)."""
    order = len(model.rows)
    out = io.StringIO()
    out.write("\\data\\\n")
    for n in range(1, order + 1):
        out.write(f"ngram {n}={len(model.rows[n - 1])}\n")
    vocab = np.array(model.vocab, dtype=object)
    for n in range(1, order + 1):
        out.write(f"\n\\{n}-grams:\n")
        rows = model.rows[n - 1]
        text = vocab[rows[:, 0]]
        for j in range(1, n):
            text = text + " " + vocab[rows[:, j]]
        probs = [_format(x) for x in model.logprob[n - 1].tolist()]
        if n < order:
            bows = [_format(x) for x in model.backoff[n - 1].tolist()]
            out.write("".join(f"{p}\t{t}\t{b}\n" for p, t, b in zip(probs, text.tolist(), bows, strict=True)))
        else:
            out.write("".join(f"{p}\t{t}\n" for p, t in zip(probs, text.tolist(), strict=True)))
    out.write("\n\\end\\\n")
    data = out.getvalue().encode("utf-8")
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return data
