"""N-gram LM: counting, every smoothing method's normalisation, hand-computed stages, API and errors."""

import math
from pathlib import Path

import numpy as np
import pytest

from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.models.ngram import NgramConfig, NgramLM
from genlab.models.ngram.counts import BOS_ID, NgramIndex, count_chunk, merge_counts
from genlab.models.ngram.smoothing import Counts, adjust_counts, compute_discounts, count_of_counts

NORMALIZED = ["mle", "add-k", "laplace", "witten-bell", "kn", "mkn"]


def toy_corpus(n_sentences: int = 40, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(12)]
    # A skewed unigram distribution so that counts-of-counts are varied.
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    return [list(rng.choice(words, size=rng.integers(1, 9), p=p)) for _ in range(n_sentences)]


def counts_of(sentences: list[list[str]], order: int) -> tuple[Counts, list[str]]:
    model = NgramLM.fit(sentences, NgramConfig(order=order, smoothing="mle"))
    vocab = model.vocab
    ids = {w: i for i, w in enumerate(vocab)}
    tokens, sids = [], []
    for s, sentence in enumerate(sentences):
        seq = [BOS_ID] + [ids[w] for w in sentence] + [2]
        tokens += seq
        sids += [s] * len(seq)
    raw = count_chunk(np.array(tokens), np.array(sids), order, len(vocab))
    full = np.zeros(len(vocab), np.int64)
    full[raw.rows[0][:, 0]] = raw.counts[0]
    rows = [np.arange(len(vocab), dtype=np.uint32)[:, None], *raw.rows[1:]]
    return Counts(len(vocab), rows, [full, *raw.counts[1:]]), vocab


# --- counting ---


def test_counts_match_brute_force_and_chunking() -> None:
    sentences = toy_corpus()
    order = 4
    counts, vocab = counts_of(sentences, order)
    brute: dict[tuple[str, ...], int] = {}
    for sentence in sentences:
        padded = ["<s>", *sentence, "</s>"]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                brute[tuple(padded[i:i + n])] = brute.get(tuple(padded[i:i + n]), 0) + 1
    mine = {tuple(vocab[i] for i in row): int(c)
            for n in range(order) for row, c in zip(counts.rows[n], counts.counts[n], strict=True) if c}
    assert mine == brute
    # Chunked counting (tiny chunks, merged) gives the same model as one chunk.
    one = NgramLM.fit(sentences, NgramConfig(order=order, smoothing="mkn"))
    chunked = NgramLM.fit(sentences, NgramConfig(order=order, smoothing="mkn", chunk_tokens=7))
    assert chunked.counts_per_order() == one.counts_per_order()
    for n in range(order):
        np.testing.assert_array_equal(chunked.rows[n], one.rows[n])
        np.testing.assert_allclose(chunked.estimate.logprob[n], one.estimate.logprob[n])


def test_counting_and_merging_give_the_looked_up_keys_and_suffixes() -> None:
    """Counting hands its keys and suffix rows to estimation, in one chunk or merged from many: they must equal
    the binary-search lookups over the final tables."""
    order = 5
    sentences = toy_corpus()
    model = NgramLM.fit(sentences, NgramConfig(order=order, smoothing="mle"))
    ids = {w: i for i, w in enumerate(model.vocab)}
    tokens, sids = [], []
    for s, sentence in enumerate(sentences):
        tokens += [BOS_ID, *(ids[w] for w in sentence), 2]
        sids += [s] * (len(sentence) + 2)
    tokens, sids = np.array(tokens), np.array(sids)
    one = count_chunk(tokens, sids, order, len(model.vocab))
    cuts = [0, 40, 41, 300, len(tokens)]  # uneven chunks, one shorter than the order; cut inside sentences too
    spans = list(zip(cuts[:-1], cuts[1:], strict=True))
    parts = [count_chunk(tokens[a:b], sids[a:b], order, len(model.vocab)) for a, b in spans]
    # sentences cut in two lose the n-grams across the cut: compare with counts of the same pieces
    pieces = np.concatenate([sids[a:b] * 10 + i for i, (a, b) in enumerate(spans)])
    reference = count_chunk(tokens, pieces, order, len(model.vocab))
    for raw, expected in ((one, one), (merge_counts(parts, len(model.vocab)), reference)):
        index = NgramIndex(expected.rows, len(model.vocab))
        for n in range(1, order + 1):
            np.testing.assert_array_equal(raw.rows[n - 1], expected.rows[n - 1])
            np.testing.assert_array_equal(raw.counts[n - 1], expected.counts[n - 1])
        for n in range(2, order + 1):
            np.testing.assert_array_equal(raw.keys[n - 1], index.keys[n - 1])
            np.testing.assert_array_equal(raw.suffixes[n - 1], index.lookup(raw.rows[n - 1][:, 1:]))


def test_merge_counts_sums_equal_rows() -> None:
    tokens = np.array([1, 3, 4, 2, 1, 3, 2])
    sids = np.array([0, 0, 0, 0, 1, 1, 1])
    a = count_chunk(tokens[:4], sids[:4], 2, 5)
    b = count_chunk(tokens[4:], sids[4:], 2, 5)
    merged = merge_counts([a, b], 5)
    both = count_chunk(tokens, sids, 2, 5)
    for n in range(2):
        np.testing.assert_array_equal(merged.rows[n], both.rows[n])
        np.testing.assert_array_equal(merged.counts[n], both.counts[n])


def test_counting_a_million_tokens_at_order_5_is_fast() -> None:
    import time

    rng = np.random.default_rng(1)
    tokens = rng.integers(3, 5000, size=1_000_000)
    sids = np.repeat(np.arange(50_000), 20)
    tokens[::20] = BOS_ID
    tokens[19::20] = 2
    start = time.perf_counter()
    raw = count_chunk(tokens, sids, 5, 5000)
    assert time.perf_counter() - start < 30  # typically 1-3 s; generous for a loaded CI machine
    assert raw.counts[0].sum() == 1_000_000


# --- normalisation of every method ---


@pytest.mark.parametrize("smoothing", NORMALIZED)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_probabilities_sum_to_one(smoothing: str, order: int) -> None:
    sentences = toy_corpus()
    model = NgramLM.fit(sentences, NgramConfig(order=order, smoothing=smoothing, k=0.3))
    words = np.array([i for i in range(len(model.vocab)) if i != BOS_ID])
    seen: dict[tuple[str, ...], None] = {}
    for sentence in sentences[:15]:
        padded = ["<s>", *sentence]
        for i in range(len(padded)):
            seen[tuple(padded[max(0, i - order + 2):i + 1])] = None
    others = [(), ("w0", "w0"), ("w11", "w3"), ("never", "seen"), ("w3", "never")]
    for context in [*seen, *others]:
        ids = model._context_ids(list(context))
        total = (10.0 ** model._next_logprobs(ids, words)).sum()
        if smoothing == "mle" and context not in seen and total == 0.0:
            continue  # MLE has no distribution after a context it never saw
        assert total == pytest.approx(1.0, abs=1e-9), (smoothing, order, context)


def test_stupid_backoff_is_flagged_unnormalized() -> None:
    model = NgramLM.fit(toy_corpus(), NgramConfig(order=3, smoothing="stupid-backoff", alpha=0.4))
    assert model.normalized is False
    result = model.perplexity([["w0", "w1"]])
    assert result["normalized"] is False
    # Brants et al.: a seen trigram scores its relative frequency; an unseen one alpha * the bigram score.
    sentences = [["a", "b", "c"], ["a", "b", "d"], ["b", "e"]]
    sb = NgramLM.fit(sentences, NgramConfig(order=3, smoothing="stupid-backoff", alpha=0.4))
    assert sb.prob("c", ["a", "b"]) == pytest.approx(0.5)
    assert sb.prob("e", ["a", "b"]) == pytest.approx(0.4 * 1 / 3)
    assert sb.prob("a", ["c", "b"]) == pytest.approx(0.4 * 0.4 * 2 / 11)  # unseen context: alpha per step


# --- hand-computed values ---


def test_mle_and_add_k_by_hand() -> None:
    sentences = [["a", "b"], ["a", "b"], ["c", "b"]]
    mle = NgramLM.fit(sentences, NgramConfig(order=2, smoothing="mle"))
    assert mle.prob("b", ["a"]) == pytest.approx(1.0)
    assert mle.prob("a", ["<s>"]) == pytest.approx(2 / 3)
    assert mle.prob("c", ["a"]) == 0.0
    addk = NgramLM.fit(sentences, NgramConfig(order=2, smoothing="add-k", k=0.5))
    v = len(addk.vocab) - 1  # <unk>, </s>, a, b, c: everything but <s>
    assert v == 5
    assert addk.prob("b", ["a"]) == pytest.approx((2 + 0.5) / (2 + 0.5 * v))
    assert addk.prob("c", ["a"]) == pytest.approx(0.5 / (2 + 0.5 * v))
    assert addk.prob("c", ["zzz"]) == pytest.approx(1 / v)  # unseen context: uniform
    laplace = NgramLM.fit(sentences, NgramConfig(order=1, smoothing="laplace"))
    assert laplace.prob("b") == pytest.approx((3 + 1) / (9 + v))  # 9 predicted tokens: 6 words + 3 </s>


def test_witten_bell_by_hand() -> None:
    sentences = [["a", "b"], ["a", "b"], ["c", "b"]]
    wb = NgramLM.fit(sentences, NgramConfig(order=2, smoothing="witten-bell"))
    # Unigrams: 9 tokens, 4 types (a, b, c, </s>); uniform over 5 words.
    p_uni = {w: (c + 4 / 5) / (9 + 4) for w, c in {"a": 2, "b": 3, "c": 1, "</s>": 3, "<unk>": 0}.items()}
    assert wb.prob("a") == pytest.approx(p_uni["a"])
    assert wb.prob("<unk>") == pytest.approx(p_uni["<unk>"])
    # After "a": C=2, T=1 -> gamma = 1/3.
    assert wb.prob("b", ["a"]) == pytest.approx((2 + 1 * p_uni["b"]) / 3)
    assert wb.prob("c", ["a"]) == pytest.approx(p_uni["c"] / 3)


def test_discount_formulas_by_hand() -> None:
    # n1..n4 = 4, 2, 1, 1: Y = 4 / (4 + 2*2) = 0.5
    d = compute_discounts(np.array([[4, 2, 1, 1]]))[0]
    assert d[0] == pytest.approx(1 - 2 * 0.5 * 2 / 4)  # D1 = 0.5
    assert d[1] == pytest.approx(2 - 3 * 0.5 * 1 / 2)  # D2 = 1.25
    assert d[2] == pytest.approx(3 - 4 * 0.5 * 1 / 1)  # D3+ = 1.0
    # KenLM's small.o3 unigram counts-of-counts reproduce lmplz's printed discounts.
    d = compute_discounts(np.array([[2294, 1329, 693, 481]]))[0]
    np.testing.assert_allclose(d, [0.463247, 1.27533, 1.71387], atol=1e-5)
    # A missing count-of-count falls back to lmplz --discount_fallback's 0.5, 1, 1.5.
    np.testing.assert_allclose(compute_discounts(np.array([[3, 1, 0, 2]]))[0], [0.5, 1.0, 1.5])
    from genlab.models.ngram.smoothing import KneserNey

    np.testing.assert_allclose(KneserNey().compute_discounts(np.array([[4, 2, 1, 1]]))[0], [0.5, 0.5, 0.5])


def test_adjusted_counts_by_hand() -> None:
    counts, vocab = counts_of([["a", "b"], ["a", "b"], ["c", "b"]], 2)
    adjusted = adjust_counts(counts)
    uni = {vocab[i]: int(adjusted[0][i]) for i in range(len(vocab))}
    # Continuation counts: distinct left neighbours; <s> gets 0 (never predicted), <unk> 0 (unseen).
    assert uni == {"<unk>": 0, "<s>": 0, "</s>": 1, "a": 1, "b": 2, "c": 1}
    big = {" ".join(vocab[i] for i in r): int(a) for r, a in zip(counts.rows[1], adjusted[1], strict=True)}
    assert big == {"<s> a": 2, "a b": 2, "b </s>": 3, "<s> c": 1, "c b": 1}  # top order: raw counts
    stats = count_of_counts(counts, adjusted)
    # The unigram last in suffix order ("c", highest id) enters the statistics with its raw count (1),
    # as in lmplz; here that is also its adjusted count.
    assert stats[0].tolist() == [3, 1, 0, 0]
    assert stats[1].tolist() == [2, 2, 1, 0]


def test_mkn_by_hand() -> None:
    sentences = [["a", "b"], ["a", "b"], ["c", "b"], ["a", "c"], ["b"]]
    model = NgramLM.fit(sentences, NgramConfig(order=2, smoothing="mkn"))
    d1, d2, d3 = model.discounts[0]
    # unigram adjusted counts: a {<s>}=1, b {<s>, a, c}=3, c {<s>, a}=2, </s> {b, c}=2; total 8
    n_by_count = {1: 1, 2: 2, 3: 1}
    gamma = (d1 * n_by_count[1] + d2 * n_by_count[2] + d3 * n_by_count[3]) / 8
    uniform = 1 / 5
    p_b = (3 - d3) / 8 + gamma * uniform
    assert model.prob("b") == pytest.approx(p_b)
    assert model.prob("<unk>") == pytest.approx(gamma * uniform)
    e1, e2, e3 = model.discounts[1]
    # After "a": a b (2), a c (1); total 3.
    p_c = (2 - e2 + 1 - e1) / 3
    assert model.prob("b", ["a"]) == pytest.approx((2 - e2) / 3 + p_c * p_b)


# --- perplexity, errors, API ---


def test_mle_unseen_gives_infinite_perplexity() -> None:
    model = NgramLM.fit([["a", "b"], ["b", "a"]], NgramConfig(order=2, smoothing="mle"))
    result = model.perplexity([["a", "b"], ["a", "a"], ["zzz"]])
    assert result["perplexity"] == math.inf
    assert result["log10_prob"] == -math.inf
    assert result["zero_prob_tokens"] == 3  # "a a", "<s> <unk>", and "</s>" after the unseen context <unk>
    assert result["oov"] == 1
    assert result["tokens"] == 5 + 3
    seen = model.perplexity([["a", "b"]])
    assert math.isfinite(seen["perplexity"]) and seen["zero_prob_tokens"] == 0


def test_bad_order_and_short_corpus() -> None:
    with pytest.raises(ConfigError, match="order"):
        NgramLM.fit([["a"]], NgramConfig(order=0))
    with pytest.raises(ConfigError, match="smoothing"):
        NgramLM.fit([["a"]], NgramConfig(smoothing="magic"))
    with pytest.raises(DataError, match="fewer than the n-gram order"):
        NgramLM.fit([["a", "b"]], NgramConfig(order=3))
    with pytest.raises(DataError, match="fewer than the n-gram order"):
        NgramLM.fit([], NgramConfig(order=1))
    with pytest.raises(DataError, match="<s>"):
        NgramLM.fit([["a", "<s>", "b"]], NgramConfig(order=2))


def test_score_sentences_and_perplexity_agree() -> None:
    model = NgramLM.fit(toy_corpus(), NgramConfig(order=3))
    test = toy_corpus(10, seed=5) + [["unknown", "w1"]]
    scores = model.score_sentences(test)
    assert scores.shape == (len(test),)
    result = model.perplexity(test)
    assert result["log10_prob"] == pytest.approx(scores.sum())
    n_tokens = sum(len(s) + 1 for s in test)
    assert result["tokens"] == n_tokens and result["sentences"] == len(test) and result["oov"] == 1
    assert result["perplexity"] == pytest.approx(10 ** (-scores.sum() / n_tokens))
    # Sentence score = sum of the conditional log probabilities.
    sentence = test[0]
    padded = ["<s>", *sentence, "</s>"]
    by_hand = sum(model.logprob(padded[i], padded[:i]) for i in range(1, len(padded)))
    assert scores[0] == pytest.approx(by_hand)
    assert model.prob("w0", ["<s>"]) == pytest.approx(10 ** model.logprob("w0", ["<s>"]))


def test_generate() -> None:
    model = NgramLM.fit(toy_corpus(200), NgramConfig(order=3))
    words = list(model.generate(["w0"], max_tokens=50, seed=3))
    assert words == list(model.generate(["w0"], max_tokens=50, seed=3))
    assert len(words) <= 50 and "</s>" not in words and "<s>" not in words
    assert set(words) <= set(model.vocab)
    greedy = list(model.generate([], max_tokens=5, temperature=0))
    assert greedy == list(model.generate([], max_tokens=5, temperature=0, seed=9))
    top1 = list(model.generate([], max_tokens=5, top_k=1, seed=1))
    assert top1 == greedy
    with pytest.raises(ConfigError):
        list(model.generate([], max_tokens=3, temperature=-1))


@pytest.mark.parametrize("smoothing", ["mkn", "add-k", "stupid-backoff"])
def test_save_load_round_trip(tmp_path: Path, smoothing: str) -> None:
    model = NgramLM.fit(toy_corpus(), NgramConfig(order=3, smoothing=smoothing))
    model.save(tmp_path / "run")
    loaded = NgramLM.load(tmp_path / "run")
    test = toy_corpus(10, seed=7)
    np.testing.assert_array_equal(loaded.score_sentences(test), model.score_sentences(test))
    assert loaded.counts_per_order() == model.counts_per_order()
    assert loaded.normalized == model.normalized and loaded.config == model.config


def test_load_corrupt_raises_checkpoint_error(tmp_path: Path) -> None:
    model = NgramLM.fit(toy_corpus(), NgramConfig(order=2))
    model.save(tmp_path)
    weights = tmp_path / "ngram.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        NgramLM.load(tmp_path)
    model.save(tmp_path)
    (tmp_path / "ngram.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        NgramLM.load(tmp_path)
    with pytest.raises(CheckpointError):
        NgramLM.load(tmp_path / "missing")


def test_arpa_round_trip(tmp_path: Path) -> None:
    for smoothing in ["mkn", "kn", "witten-bell"]:
        model = NgramLM.fit(toy_corpus(), NgramConfig(order=3, smoothing=smoothing))
        for name in ["m.arpa", "m.arpa.gz"]:
            model.to_arpa(tmp_path / name)
            back = NgramLM.from_arpa(tmp_path / name)
            test = toy_corpus(20, seed=11) + [["oov", "w2"]]
            np.testing.assert_allclose(back.score_sentences(test), model.score_sentences(test), atol=1e-6)
    with pytest.raises(ConfigError):
        NgramLM.fit(toy_corpus(), NgramConfig(order=2, smoothing="mle")).to_arpa(tmp_path / "x.arpa")


def test_arpa_written_loads_in_kenlm_with_same_scores(tmp_path: Path) -> None:
    kenlm = pytest.importorskip("kenlm")
    model = NgramLM.fit(toy_corpus(300), NgramConfig(order=4))
    model.to_arpa(tmp_path / "m.arpa")
    km = kenlm.Model(str(tmp_path / "m.arpa"))
    test = toy_corpus(50, seed=12) + [["oov", "w2", "w2"]]
    theirs = np.array([km.score(" ".join(s), bos=True, eos=True) for s in test])
    np.testing.assert_allclose(model.score_sentences(test), theirs, atol=1e-4)
