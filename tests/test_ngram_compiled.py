"""Compiled n-gram scoring (genlab[fast], numba) gives the numpy path's scores, for every smoothing and for text
that only the numpy path can split (it falls back there)."""

import math

import numpy as np
import pytest

from genlab.models.ngram import NgramConfig, NgramLM, compiled

pytest.importorskip("numba")

SMOOTHINGS = ["mle", "add-k", "laplace", "witten-bell", "kn", "mkn", "stupid-backoff"]


def corpus(n: int, seed: int, words: list[str]) -> list[str]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(words) + 1)
    return [" ".join(rng.choice(words, size=rng.integers(0, 12), p=p / p.sum())) for _ in range(n)]


WORDS = [f"w{i}" for i in range(30)] + ["café", "naïve", "日本"]
TRAIN = corpus(300, 0, WORDS)
# Test text: unseen words (OOV), unseen n-grams, empty sentences, odd ASCII whitespace that str.split() splits on.
TEST = corpus(200, 1, WORDS + ["new", "words"]) + ["", "  ", "w1\tw2\x0bw3\x1cw4\x1f w5\r\n", "<unk> w1", "<s> w2"]


def both(model: NgramLM, sentences: list) -> tuple[np.ndarray, dict, np.ndarray, dict]:
    model.scorer = "compiled"
    fast, fast_ppl = model.score_sentences(sentences), model.perplexity(sentences)
    model.scorer = "numpy"
    slow, slow_ppl = model.score_sentences(sentences), model.perplexity(sentences)
    return fast, fast_ppl, slow, slow_ppl


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_compiled_scores_equal_numpy(smoothing: str, order: int) -> None:
    model = NgramLM.fit(TRAIN, NgramConfig(order=order, smoothing=smoothing))
    assert model._scorer is not None  # the compiled path is really taken
    fast, fast_ppl, slow, slow_ppl = both(model, TEST)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    for key in ("tokens", "sentences", "oov", "zero_prob_tokens", "normalized"):
        assert fast_ppl[key] == slow_ppl[key], key
    if math.isfinite(slow_ppl["perplexity"]):
        assert fast_ppl["perplexity"] == pytest.approx(slow_ppl["perplexity"], rel=1e-12)
    else:
        assert not math.isfinite(fast_ppl["perplexity"])
    assert slow_ppl["oov"] > 0 and len(fast) == len(TEST)


def test_text_the_compiled_pass_cannot_split_goes_to_numpy() -> None:
    model = NgramLM.fit(TRAIN, NgramConfig(order=3))
    odd = ["w1\u00a0w2 w3", "w1\u2003w2", "w4\x00w5", "w1 \ud800"]  # non-ASCII spaces, NUL, a lone surrogate
    for sentence in odd:
        assert model._scorer.score([sentence]) is None
    fast, fast_ppl, slow, slow_ppl = both(model, odd + [["w1", "w2"]])  # token lists, too
    np.testing.assert_array_equal(fast, slow)
    assert fast_ppl == slow_ppl


def test_auto_builds_the_tables_once_they_pay() -> None:
    model = NgramLM.fit(TRAIN, NgramConfig(order=3))
    n_grams = sum(model.counts_per_order())
    model.score_sentences(TEST[:3])
    assert "_scorer" not in model.__dict__  # a few sentences: numpy, no tables
    while "_scorer" not in model.__dict__:
        model.score_sentences(TEST)
    assert model._tokens_scored >= n_grams // 2 and model._scorer is not None


def test_generator_and_empty_input() -> None:
    model = NgramLM.fit(TRAIN, NgramConfig(order=3))
    model.scorer = "compiled"
    np.testing.assert_allclose(model.score_sentences(s for s in TEST[:5]), model.score_sentences(TEST[:5]))
    assert len(model.score_sentences([])) == 0
    assert model.perplexity([])["tokens"] == 0


def test_arpa_model_scores_compiled(tmp_path) -> None:  # noqa: ANN001
    model = NgramLM.fit(TRAIN, NgramConfig(order=4))
    model.to_arpa(tmp_path / "m.arpa")
    loaded = NgramLM.from_arpa(tmp_path / "m.arpa")
    fast, _, slow, _ = both(loaded, TEST)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast, model.score_sentences(TEST), atol=1e-5)  # ARPA keeps 6-7 digits


def test_chunks_join_up(monkeypatch: pytest.MonkeyPatch) -> None:
    model = NgramLM.fit(TRAIN, NgramConfig(order=3))
    model.scorer = "compiled"
    whole, whole_ppl = model.score_sentences(TEST), model.perplexity(TEST)
    monkeypatch.setattr(compiled, "CHUNK", 7)  # TEST in many chunks, the last one short
    np.testing.assert_array_equal(model.score_sentences(TEST), whole)
    assert model.perplexity(TEST) == whole_ppl


def test_a_numba_that_cannot_compile_leaves_numpy_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("LLVM ERROR: unknown intrinsic")

    monkeypatch.setattr(compiled, "_score", broken)
    model = NgramLM.fit(TRAIN, NgramConfig(order=3))
    model.scorer = "compiled"
    with pytest.warns(RuntimeWarning, match="scoring with numpy"):
        scores = model.score_sentences(TEST)
    model.scorer = "numpy"
    np.testing.assert_array_equal(scores, model.score_sentences(TEST))
