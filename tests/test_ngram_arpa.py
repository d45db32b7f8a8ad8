"""ARPA reader: well-formed files parse, malformed ones give one DataError naming the file and line."""

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genlab.errors import DataError
from genlab.models.ngram import NgramLM
from genlab.models.ngram.arpa import read_arpa

GOOD = """\\data\\
ngram 1=5
ngram 2=4

\\1-grams:
-1.5\t<unk>\t0
0\t<s>\t-0.3
-0.7\t</s>\t0
-0.9\ta\t-0.2
-1.1\tb\t-0.25

\\2-grams:
-0.4\t<s> a
-0.5\ta b
-0.3\tb </s>
-0.6\ta </s>

\\end\\
"""


def write(tmp_path: Path, text: str, name: str = "m.arpa") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_reads_good_file_and_scores_with_backoff(tmp_path: Path) -> None:
    for name in ["m.arpa", "m.arpa.gz"]:
        model = NgramLM.from_arpa(write(tmp_path, GOOD, name))
        assert model.counts_per_order() == [5, 4]
        assert model.logprob("a", ["<s>"]) == pytest.approx(-0.4)
        # "b" after "<s>": no bigram, so backoff(<s>) + p(b)
        assert model.logprob("b", ["<s>"]) == pytest.approx(-0.3 - 1.1)
        # unknown word -> <unk>; "b <unk>" unseen: backoff(b) + p(<unk>)
        assert model.logprob("zzz", ["b"]) == pytest.approx(-0.25 - 1.5)
        assert model.score_sentences([["a", "b"]])[0] == pytest.approx(-0.4 - 0.5 - 0.3)


def test_srilm_style_spaces_missing_backoffs_and_comments(tmp_path: Path) -> None:
    text = "written by SRILM\n\n" + GOOD.replace("\t", " ").replace("-0.7 </s> 0", "-0.7 </s>")
    text = text.replace("-1.5 <unk> 0", "-99 <unk>")
    model = NgramLM.from_arpa(write(tmp_path, text))
    assert model.logprob("a", ["<s>"]) == pytest.approx(-0.4)
    assert model.logprob("zzz") == pytest.approx(-99)


def test_missing_unk_gets_kenlm_default(tmp_path: Path) -> None:
    text = GOOD.replace("ngram 1=5", "ngram 1=4").replace("-1.5\t<unk>\t0\n", "")
    model = NgramLM.from_arpa(write(tmp_path, text))
    assert model.logprob("zzz") == pytest.approx(-100.0)


@pytest.mark.parametrize(
    ("mutate", "line", "message"),
    [
        (lambda t: t[: t.index("\\2-grams:") + 20], 13, "truncated"),
        (lambda t: t.replace("ngram 2=4", "ngram 2=5"), 17, "declares 5"),
        (lambda t: t.replace("ngram 2=4", "ngram 2=3"), 16, "more 2-grams"),
        (lambda t: t.replace("-0.5\ta b", "x\ta b"), 14, "not a number"),
        (lambda t: t.replace("-0.2", "abc"), 9, "not a number"),
        (lambda t: t.replace("\\end\\", "\\3-grams:\n-1\ta b </s>\n\\end\\"), 18, "did not declare"),
        (lambda t: t.replace("-0.5\ta b", "-0.5\ta c"), 14, "not in the unigrams"),
        (lambda t: t.replace("-0.5\ta b", "-0.5\ta b c"), 14, "fields"),
        (lambda t: t.replace("-0.9\ta", "0.9\ta"), 9, "out of range"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, mutate, line: int, message: str) -> None:
    path = write(tmp_path, mutate(GOOD))
    with pytest.raises(DataError, match=message) as info:
        read_arpa(path)
    assert f"{path}:{line}:" in str(info.value)


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_arpa(tmp_path / "nope.arpa")
    bad_gz = tmp_path / "x.arpa.gz"
    bad_gz.write_bytes(gzip.compress(GOOD.encode())[:40])
    with pytest.raises(DataError, match=str(bad_gz)):
        read_arpa(bad_gz)
    with pytest.raises(DataError, match="duplicate"):
        read_arpa(write(tmp_path, GOOD.replace("-0.6\ta </s>", "-0.6\ta b")))
    no_prefix = GOOD.replace("ngram 2=4", "ngram 2=4\nngram 3=1")
    no_prefix = no_prefix.replace("\\end\\", "\\3-grams:\n-0.1\tb a b\n\n\\end\\")
    with pytest.raises(DataError, match="prefix"):
        NgramLM.from_arpa(write(tmp_path, no_prefix))


# --- property tests: any mutation gives DataError or a correct parse, never another exception ---

LINES = GOOD.split("\n")
TOKENS = st.sampled_from(["", " ", "\t", "\\", "\\data\\", "\\1-grams:", "\\2-grams:", "\\3-grams:", "\\end\\",
                          "ngram 1=5", "ngram 3=1", "-1.0", "nan", "inf", "-inf", "1e400", "a", "b", "<s>",
                          "</s>", "ä", "\x00", "-0.5\ta b", "-0.5\tb a", "=", "ngram"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(LINES) - 1), st.sampled_from(["delete", "replace", "insert", "append"]),
                  st.lists(TOKENS, min_size=0, max_size=4)),
        min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, len(GOOD))),
    gz=st.booleans(),
)
def test_malformed_arpa_gives_data_error_or_parse(edits, cut, gz) -> None:
    lines = list(LINES)
    for index, action, tokens in edits:
        index = min(index, len(lines) - 1) if lines else 0
        text = " ".join(tokens)
        if action == "delete" and lines:
            del lines[index]
        elif action == "replace" and lines:
            lines[index] = text
        elif action == "insert":
            lines.insert(index, text)
        elif lines:
            lines[index] += text
    content = "\n".join(lines)
    if cut is not None:
        content = content[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("m.arpa.gz" if gz else "m.arpa")
        data = content.encode("utf-8", errors="surrogatepass")
        path.write_bytes(gzip.compress(data) if gz else data)
        try:
            model = NgramLM.from_arpa(path)
        except DataError as e:
            assert str(path) in str(e)
            return
        # A successful parse is a usable model whose stored n-grams score as written.
        scores = model.score_sentences([["a", "b"], ["zzz"]])
        assert scores.shape == (2,) and not np.any(np.isnan(scores))
