"""The image-generation task end to end through the CLI: train, sample, reconstruct, interpolate, eval;
bad input fails with one clear line; runs are never overwritten without --overwrite."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.errors import ConfigError
from genlab.tasks.images import balanced_labels, resolve_label
from tests.helpers import cli_in_process as cli
from tests.helpers import run_cli
from tests.test_vae import SHAPES, make_tiny_npz

QUIET = {"OMP_NUM_THREADS": "1"}  # tiny models on a shared machine: see tests/test_vae.py
TRAIN = ["--max-steps", "30", "--batch-size", "16", "--hidden", "32", "--latent-dim", "4", "--eval-interval", "15",
         "--warmup-steps", "5"]


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("genlab: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="module")
def cond_run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conditional VAE trained by the real console entry point in a subprocess."""
    out = tmp_path_factory.mktemp("runs") / "cvae"
    r = run_cli("train", "vae", "--data", str(tiny), "--out", str(out), "--conditional", *TRAIN, env=QUIET)
    assert r.returncode == 0, r.stderr
    assert "finished after 30 steps" in r.stderr
    return out


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_run_directory(cond_run: Path) -> None:
    art = json.loads((cond_run / "images.json").read_text())
    assert art["class_names"] == SHAPES and art["num_classes"] == 4 and art["pixel_range"] == "unit"
    cfg = json.loads((cond_run / "config.json").read_text())
    assert cfg["model_config"]["resolution"] == 16 and cfg["model_config"]["n_classes"] == 4
    val = [r for r in genlab.api.RunDir(cond_run).read_metrics() if r["split"] == "val"]
    assert val and all(r["loss"] > 0 for r in val)  # negative ELBO, nats per image


def test_sample_reconstruct_interpolate(cond_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from PIL import Image

    code, _, err = cli(["sample", cond_run, "--label", "Square", "--num-samples", 12, "--out", tmp_path / "sq.png",
                        "--npz", tmp_path / "sq.npz", "--seed", 1], monkeypatch, capsys)
    assert code == 0, err
    assert "'square'" in err and (tmp_path / "sq.png").is_file()
    npz = np.load(tmp_path / "sq.npz")
    assert npz["images"].shape == (12, 1, 16, 16) and npz["images"].dtype == np.uint8
    assert (npz["labels"] == 2).all()
    code, _, err = cli(["sample", cond_run, "--label", "3"], monkeypatch, capsys)  # an index; default path
    assert code == 0 and (cond_run / "samples.png").is_file()
    code, _, err = cli(["reconstruct", cond_run, "--num-images", 8], monkeypatch, capsys)
    assert code == 0, err
    w, h = Image.open(cond_run / "reconstructions.png").size
    assert (w, h) == (8 * 18 + 2, 2 * 18 + 2)  # one row of inputs, one of reconstructions
    code, _, err = cli(["interpolate", cond_run, "--pairs", 2, "--steps", 5], monkeypatch, capsys)
    assert code == 0, err
    assert Image.open(cond_run / "interpolations.png").size == (7 * 18 + 2, 2 * 18 + 2)


def test_eval_writes_report(cond_run: Path, monkeypatch, capsys) -> None:
    code, out, err = cli(["eval", cond_run, "--num-samples", 40, "--iwae-samples", 8, "--json"], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report == json.loads((cond_run / "eval.json").read_text())
    assert report["iwae_k"] == 8 and report["iwae_nll_nats"] <= report["neg_elbo_nats"]
    assert report["binarised"] is True and "Bernoulli" in report["likelihood_model"]
    assert report["n_generated"] == 40 and set(report["per_label_accuracy"]) == set(SHAPES)
    for key in ("fd", "kid", "precision", "recall", "label_accuracy"):
        assert key in report
    md = (cond_run / "eval.md").read_text()
    assert "iwae_nll_nats" in md and "eval_samples.png" in md and "loss_curves.png" in md
    for name in ("eval_samples.png", "eval_reconstructions.png", "loss_curves.png"):
        assert (cond_run / name).is_file()


def test_bad_input_one_clear_line(cond_run: Path, tiny: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    code, _, err = cli(["sample", cond_run, "--label", "Trouser"], monkeypatch, capsys)
    assert_one_line_error(code, err, "Trouser", "'square'")
    code, _, err = cli(["sample", cond_run, "--prompt", "a cat"], monkeypatch, capsys)
    assert_one_line_error(code, err, "--prompt")
    code, _, err = cli(["eval", cond_run, "--iwae-samples", 0], monkeypatch, capsys)
    assert_one_line_error(code, err, "--iwae-samples")
    # An image size the conv architecture cannot produce: refused before anything is written.
    bad = tmp_path / "bad"
    code, _, err = cli(["train", "vae", "--data", tiny, "--out", bad, "--arch", "conv", "--image-size", 10, *TRAIN],
                       monkeypatch, capsys)
    assert_one_line_error(code, err, "multiple of 4")
    assert not bad.exists()
    # An unconditional model asked for a label; a model without an encoder asked to reconstruct.
    plain = tmp_path / "plain"
    genlab.train("vae", plain, {"data": str(tiny), "max_steps": 5, "batch_size": 16, "hidden": 16, "latent_dim": 2})
    capsys.readouterr()  # the progress bar
    code, _, err = cli(["sample", plain, "--label", "square"], monkeypatch, capsys)
    assert_one_line_error(code, err, "without labels")


def test_no_overwrite_without_flag(cond_run: Path, tiny: Path) -> None:
    before = (cond_run / "model.safetensors").read_bytes()
    r = run_cli("train", "vae", "--data", str(tiny), "--out", str(cond_run), *TRAIN, env=QUIET)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "already exists" in r.stderr and "--overwrite" in r.stderr
    assert (cond_run / "model.safetensors").read_bytes() == before


def test_label_resolution() -> None:
    assert resolve_label("TROUSER", ["T-shirt/top", "Trouser"], True) == 1
    assert resolve_label("0", ["T-shirt/top", "Trouser"], True) == 0
    with pytest.raises(ConfigError, match="not one the model was trained on"):
        resolve_label("7", ["a", "b"], True)
    with pytest.raises(ConfigError, match="without labels"):
        resolve_label("a", ["a", "b"], False)
    assert balanced_labels(6, 4).tolist() == [0, 1, 2, 3, 0, 1]


class _NoEncoder:
    """A stand-in generator without encode/decode (as a GAN)."""

    conditional = False
    pixel_range = "symmetric"
    registry_name = "toy-gan"

    def generate(self, num_samples, labels=None, generator=None):
        return torch.zeros(num_samples, 1, 4, 4)


def test_models_without_encoder(tmp_path: Path) -> None:
    from genlab.tasks.images import IMAGE_GEN

    art = {"class_names": None, "num_classes": 0, "channels": 1, "image_size": 4, "pixel_range": "symmetric"}
    with pytest.raises(ConfigError, match="needs a model with an encoder"):
        IMAGE_GEN.reconstruct(_NoEncoder(), art, {}, tmp_path)
    with pytest.raises(ConfigError, match="needs a model with a latent space"):
        IMAGE_GEN.interpolate(_NoEncoder(), art, {}, tmp_path)
    res = IMAGE_GEN.sample(_NoEncoder(), art, {}, num_samples=3, run_dir=tmp_path, log=None)
    assert Path(res["grid"]).is_file()
