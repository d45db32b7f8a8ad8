"""Modified Kneser-Ney against KenLM's lmplz reference models and kenlm.Model scores (../shared data)."""

import gzip
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from genlab.models.ngram import NgramConfig, NgramLM

SHARED = Path(__file__).resolve().parents[2] / "shared"
REF = SHARED / "data" / "kenlm-ref"
PTB = SHARED / "data" / "ptb"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path


@cache
def ptb_unk(split: str, lines: int | None = None) -> tuple[tuple[str, ...], ...]:
    """PTB with <unk> renamed _unk_, as the reference README's sed; tuples so the cache is safe."""
    text = need(PTB / f"ptb.{split}.txt").read_text().replace("<unk>", "_unk_").split("\n")
    if lines is not None:
        text = text[:lines]
    return tuple(tuple(line.split()) for line in text if line.strip())


@cache
def fitted(name: str) -> NgramLM:
    corpus, order = name.split(".o")
    train = ptb_unk("train", 4000 if corpus == "small" else None)
    return NgramLM.fit(train, NgramConfig(order=int(order), smoothing="mkn"))


def reference_scores(name: str, split: str) -> tuple[np.ndarray, list[str]]:
    path = need(REF / f"scores.{name}.{split}.tsv.gz")
    scores, sentences = [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            score, sentence = line.rstrip("\n").split("\t")
            scores.append(float(score))
            sentences.append(sentence)
    return np.array(scores), sentences


def assert_same_tables(mine: NgramLM, ref: NgramLM) -> None:
    """Every n-gram of both models, by words: same set, log10 prob and backoff within 1e-4."""
    assert mine.counts_per_order() == ref.counts_per_order()
    to_ref = np.array([ref.ids[w] for w in mine.vocab])
    for n in range(mine.order):
        rows = to_ref[mine.rows[n]]
        where = ref.index.lookup(rows)
        assert np.all(where >= 0), f"{n + 1}-grams missing from the reference"
        np.testing.assert_allclose(mine.estimate.logprob[n], ref.estimate.logprob[n][where], atol=1e-4, rtol=0)
        np.testing.assert_allclose(mine.estimate.backoff[n], ref.estimate.backoff[n][where], atol=1e-4, rtol=0)


def assert_same_scores(model: NgramLM, name: str, split: str, perplexity: float) -> None:
    theirs, sentences = reference_scores(name, split)
    for scorer in ("numpy", "compiled"):  # compiled: numba's hash tables where genlab[fast] is installed
        model.scorer = scorer
        mine = model.score_sentences(sentences)
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)
        result = model.perplexity(sentences)
        assert result["perplexity"] == pytest.approx(perplexity, rel=1e-4)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_small_mkn_matches_lmplz_arpa(order: int) -> None:
    ref = NgramLM.from_arpa(need(REF / f"small.o{order}.arpa.gz"))
    model = fitted(f"small.o{order}")
    lmplz = [line.split() for line in need(REF / f"small.o{order}.discounts.txt").read_text().splitlines()[1:]]
    expected = [[float(f.split("=")[1]) for f in fields[2:]] for fields in lmplz]
    np.testing.assert_allclose(model.discounts, expected, rtol=1e-5)
    assert_same_tables(model, ref)


@pytest.mark.parametrize(("order", "perplexity"), [(2, 314.1016), (3, 284.5840), (4, 279.7736)])
def test_small_mkn_matches_kenlm_scores(order: int, perplexity: float) -> None:
    assert_same_scores(fitted(f"small.o{order}"), f"small.o{order}", "valid", perplexity)
    _, sentences = reference_scores(f"small.o{order}", "valid")
    assert fitted(f"small.o{order}").perplexity(sentences)["oov"] == 2911


def test_kenlm_arpa_read_scores_like_kenlm() -> None:
    ref = NgramLM.from_arpa(need(REF / "small.o3.arpa.gz"))
    assert_same_scores(ref, "small.o3", "valid", 284.5840)


def test_written_arpa_scores_identically_in_kenlm(tmp_path: Path) -> None:
    kenlm = pytest.importorskip("kenlm")
    model = fitted("small.o3")
    model.to_arpa(tmp_path / "small.o3.arpa.gz")
    km = kenlm.Model(str(tmp_path / "small.o3.arpa.gz"))
    _, sentences = reference_scores("small.o3", "valid")
    sentences = sentences[:500]
    theirs = np.array([km.score(s, bos=True, eos=True) for s in sentences])
    np.testing.assert_allclose(model.score_sentences(sentences), theirs, rtol=1e-4, atol=1e-4)
    back = NgramLM.from_arpa(tmp_path / "small.o3.arpa.gz")
    np.testing.assert_allclose(back.score_sentences(sentences), model.score_sentences(sentences), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("order", "valid", "test"), [(3, 157.7653, 148.2815), (5, 148.0074, 141.1862)])
def test_ptb_mkn_matches_lmplz(order: int, valid: float, test: float) -> None:
    model = fitted(f"ptb.o{order}")
    assert_same_tables(model, NgramLM.from_arpa(need(REF / f"ptb.o{order}.arpa.gz")))
    assert_same_scores(model, f"ptb.o{order}", "valid", valid)
    assert_same_scores(model, f"ptb.o{order}", "test", test)
