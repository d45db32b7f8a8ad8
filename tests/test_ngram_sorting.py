"""The radix sort that counts n-gram keys (genlab[fast], numba) gives what numpy's sorts give, and estimation
with it gives the same model."""

import numpy as np
import pytest

from genlab.models.ngram import NgramConfig, NgramLM, sorting

pytest.importorskip("numba")


def keys_of_every_kind() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        np.zeros(0, np.uint64),
        np.array([7], np.uint64),
        np.full(1000, 12345, np.uint64),  # one distinct key: every digit shared, every pass skipped
        rng.integers(0, 50, 5000).astype(np.uint64),  # many repeats, one digit
        rng.integers(0, 2**36, 20_000).astype(np.uint64),  # PTB-like keys: rank x V + word
        rng.integers(0, 2**63, 20_000).astype(np.uint64) * np.uint64(2) + np.uint64(1),  # all 64 bits
        np.array([2**64 - 1, 0, 2**64 - 1, 1, 2**63], np.uint64),
        np.arange(10_000, 0, -1).astype(np.uint64),  # descending
    ]


@pytest.fixture
def radix_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sorting, "RADIX_MIN", 0)


@pytest.mark.parametrize("case", range(len(keys_of_every_kind())))
def test_radix_sort_is_numpys_stable_sort(case: int) -> None:
    from genlab.models.ngram._radix import radix_sort

    keys = keys_of_every_kind()[case]
    sorted_keys, order = radix_sort(keys)
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(sorted_keys, np.sort(keys))
    assert sorted_keys.dtype == np.uint64


@pytest.mark.parametrize("case", range(len(keys_of_every_kind())))
def test_radix_unique_is_numpys_unique(case: int, radix_always: None) -> None:
    keys = keys_of_every_kind()[case]
    uniq, inverse, counts = sorting.unique_inverse_counts(keys)
    expected = np.unique(keys, return_inverse=True, return_counts=True)
    for got, want in zip((uniq, inverse, counts), expected, strict=True):
        np.testing.assert_array_equal(got, want.ravel())


def test_estimation_with_radix_sorts_gives_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(40)]
    sentences = [" ".join(rng.choice(words, size=rng.integers(0, 15))) for _ in range(600)]
    config = NgramConfig(order=4, smoothing="mkn", chunk_tokens=900)  # several chunks: merged
    numpy_model = NgramLM.fit(sentences, config)
    monkeypatch.setattr(sorting, "RADIX_MIN", 0)
    radix_model = NgramLM.fit(sentences, config)
    for n in range(4):
        np.testing.assert_array_equal(radix_model.rows[n], numpy_model.rows[n])
        np.testing.assert_array_equal(radix_model.estimate.logprob[n], numpy_model.estimate.logprob[n])
        np.testing.assert_array_equal(radix_model.estimate.backoff[n], numpy_model.estimate.backoff[n])
