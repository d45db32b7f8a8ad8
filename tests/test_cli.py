"""End-to-end CLI runs on tiny data, and every bad input giving one clear error line."""

import json
from pathlib import Path

import pytest

from tests.helpers import TINY_TEXT, run_cli, tiny_options


def cli_options(model: str, **extra: object) -> list[str]:
    return [a for k, v in tiny_options(model, **extra).items() for a in (f"--{k.replace('_', '-')}", str(v))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text(TINY_TEXT * 3)
    return path


@pytest.fixture(scope="module")
def run_dir(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lstm"
    r = run_cli("train", "lstm", "--data", str(corpus), "--out", str(out), *cli_options("lstm", max_steps=40))
    assert r.returncode == 0, r.stderr
    return out


def assert_clean_error(r, *fragments: str) -> None:
    """Non-zero exit, one `genlab: error:` line naming the problem, and no traceback."""
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("genlab: error:") == 1, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr


def test_train_writes_self_contained_run(run_dir: Path) -> None:
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "checkpoint.safetensors", "tokenizer.json", "metrics.jsonl"} <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "lstm" and config["data_info"]["split"] == "line"
    assert config["data_info"]["fractions"] == {"valid": 0.1, "test": 0.1}


def test_sample_streams_and_is_reproducible(run_dir: Path) -> None:
    a = run_cli("sample", str(run_dir), "--prompt", "an", "--max-new-tokens", "30", "--seed", "3")
    b = run_cli("sample", str(run_dir), "--prompt", "an", "--max-new-tokens", "30", "--seed", "3")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("an")
    beam = run_cli("sample", str(run_dir), "--beam", "3", "--max-new-tokens", "10")
    assert beam.returncode == 0, beam.stderr


def test_eval_reports_table_and_json(run_dir: Path) -> None:
    r = run_cli("eval", str(run_dir), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert "(test split)" in report["data"] and report["perplexity"] > 1
    assert abs(report["bits_per_char"] - report["cross_entropy_nats"] / 0.6931471805599453) < 1e-9  # char level
    assert json.loads((run_dir / "eval.json").read_text()) == report
    assert "perplexity" in run_cli("eval", str(run_dir)).stdout


def test_existing_run_not_overwritten(run_dir: Path, corpus: Path) -> None:
    before = (run_dir / "model.safetensors").read_bytes()
    r = run_cli("train", "lstm", "--data", str(corpus), "--out", str(run_dir), "--max-steps", "5")
    assert_clean_error(r, "already exists", "--overwrite")
    assert (run_dir / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"\x00\x01\x02binary\x00", "binary"),
    (b"caf\xe9 latin-1\n", "not UTF-8"),
])
def test_bad_data_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    r = run_cli("train", "lstm", "--data", str(path), "--out", str(tmp_path / "run"))
    assert_clean_error(r, message)
    assert not (tmp_path / "run").exists()


def test_missing_file_and_short_corpus(tmp_path: Path) -> None:
    assert_clean_error(run_cli("train", "lstm", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r")),
                       "not found")
    short = tmp_path / "short.txt"
    short.write_text("ab\ncd\n")
    r = run_cli("train", "lstm", "--data", str(short), "--out", str(tmp_path / "r"), "--valid-fraction", "0",
                "--test-fraction", "0")
    assert_clean_error(r, "fewer than one batch")


def test_unknown_model_and_option(corpus: Path, tmp_path: Path) -> None:
    assert_clean_error(run_cli("train", "lstmm", "--out", str(tmp_path / "r")), "unknown model", "lstm")
    r = run_cli("train", "lstm", "--data", str(corpus), "--out", str(tmp_path / "r"), "--n-layers", "2")
    assert_clean_error(r, "unknown option --n-layers", "--n-layer")
    r = run_cli("train", "lstm", "--data", str(corpus), "--out", str(tmp_path / "r"), "--dropout", "lots")
    assert_clean_error(r, "dropout")


def test_corrupt_and_truncated_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    assert_clean_error(run_cli("sample", str(broken)), "corrupt or truncated")
    (broken / "config.json").write_text("{not json")
    assert_clean_error(run_cli("eval", str(broken)), "corrupt")
    assert_clean_error(run_cli("sample", str(tmp_path / "nowhere")), "no run directory")


def test_run_from_a_different_model(run_dir: Path, tmp_path: Path, corpus: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    r = run_cli("train", "gru", "--out", str(other), "--resume")
    assert_clean_error(r, "holds a 'lstm' run")
    config = json.loads((other / "config.json").read_text())
    config["model"] = "gru"  # weights of an LSTM under a GRU's name
    (other / "config.json").write_text(json.dumps(config))
    assert_clean_error(run_cli("sample", str(other)), "different model")


def test_sampling_options_validated(run_dir: Path) -> None:
    assert_clean_error(run_cli("sample", str(run_dir), "--top-p", "1.5"), "--top-p")
    assert_clean_error(run_cli("sample", str(run_dir), "--temperature", "-1"), "--temperature")


def test_data_and_models_listing() -> None:
    r = run_cli("data", "list")
    assert r.returncode == 0 and "names" in r.stdout
    r = run_cli("models", "show", "transformer")
    assert r.returncode == 0 and "--n-head" in r.stdout and "--seq-len" in r.stdout


def test_data_show_images(tmp_path: Path) -> None:
    r = run_cli("data", "show", "digits", "--grid", str(tmp_path / "g.png"))
    assert r.returncode == 0, r.stderr
    assert '"num_classes": 10' in r.stdout and (tmp_path / "g.png").stat().st_size > 0
    assert "mnist5k" in run_cli("data", "list").stdout
