"""n-gram models through the CLI and genlab.load: train, eval, sample, export ARPA, load ARPA."""

import json
from pathlib import Path

import pytest

import genlab
from tests.helpers import run_cli

TEXT = "".join(f"{s}\n" for s in [
    "the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the dog saw the cat",
    "a bird sat on the cat", "the mat was red", "a log was on the mat",
] * 5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ngram")
    (root / "text.txt").write_text(TEXT)
    out = root / "run"
    r = run_cli("train", "ngram", "--order", "3", "--data", str(root / "text.txt"), "--out", str(out),
                "--valid-fraction", "0", "--test-fraction", "0.2")
    assert r.returncode == 0, r.stderr
    assert "order  n-grams" in r.stderr and "peak memory" in r.stderr
    return out


def test_eval_sample_export_and_reload(run: Path) -> None:
    r = run_cli("eval", str(run), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["normalized"] and 1 < report["perplexity"] < 20

    a = run_cli("sample", str(run), "--prompt", "the", "--seed", "4", "--max-new-tokens", "12")
    b = run_cli("sample", str(run), "--prompt", "the", "--seed", "4", "--max-new-tokens", "12")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.startswith("the")

    r = run_cli("export", str(run), "--out", str(run / "lm.arpa.gz"))
    assert r.returncode == 0, r.stderr
    from_run, from_arpa = genlab.load(run), genlab.load(run / "lm.arpa.gz")
    sentences = ["the cat sat on the log", "a dog sat on a bird", "zebra on the mat"]
    assert from_arpa.score_sentences(sentences) == pytest.approx(from_run.score_sentences(sentences), abs=1e-4)
    r = run_cli("eval", str(run / "lm.arpa.gz"), "--data", str(run.parent / "text.txt"), "--json")
    assert r.returncode == 0, r.stderr


def test_exported_arpa_scores_like_kenlm(run: Path, tmp_path: Path) -> None:
    kenlm = pytest.importorskip("kenlm")
    path = tmp_path / "lm.arpa"
    assert run_cli("export", str(run), "--out", str(path)).returncode == 0
    ours, theirs = genlab.load(run), kenlm.Model(str(path))
    for s in ["the cat sat on the mat", "a bird saw the red log", "unknown words here"]:
        assert ours.score_sentences([s])[0] == pytest.approx(theirs.score(s, bos=True, eos=True), abs=1e-4)


def test_ngram_bad_inputs(tmp_path: Path) -> None:
    r = run_cli("train", "ngram", "--order", "0", "--out", str(tmp_path / "r"))
    assert r.returncode != 0 and "order" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\n\\end\\\n")
    r = run_cli("eval", str(bad), "--data", str(bad))
    assert r.returncode != 0 and "bad.arpa" in r.stderr and "Traceback" not in r.stderr
