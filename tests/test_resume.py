"""Killing a run with SIGKILL and resuming it gives the same final weights as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers import TINY_TEXT, add_captions, run_cli
from tests.test_vae import make_tiny_npz

# Runs `genlab` with the model's batches slowed down in this process only, so that a kill lands between
# checkpoints. Each family's batches are a pure function of the step, which is what makes resume exact.
SLOW_CLI = """
import sys, time
from {module} import {batches} as Batches
original = Batches.__call__
def slow(self, step):
    time.sleep(0.05)
    return original(self, step)
Batches.__call__ = slow
sys.argv[0] = "genlab"
from genlab.cli import main
main()
"""
IMAGE_MODELS = {"diffusion", "diffusion-text"}  # diffusion-text: the diffusion model on captions
QUIET = {"OMP_NUM_THREADS": "1"}  # tiny models on a shared machine: one thread each (see tests/test_vae.py)


def slow_cli(model: str) -> str:
    module, batches = ("genlab.data.images", "ImageBatches") if model in IMAGE_MODELS else \
        ("genlab.data.token_batches", "TokenBatches")
    return SLOW_CLI.format(module=module, batches=batches)


def make_data(folder: Path, model: str) -> Path:
    """A tiny labelled image set (32 training images) for image models, a names corpus for language models."""
    if model in IMAGE_MODELS:
        path = make_tiny_npz(folder / "tiny.npz", n_train_per_class=8, n_test_per_class=2)
        # two captions per image: which one a step uses must survive the resume too
        return add_captions(path) if model == "diffusion-text" else path
    corpus = folder / "names.txt"
    corpus.write_text(TINY_TEXT * 4)
    return corpus


def options(data: Path, model: str) -> list[str]:
    """60 steps, a checkpoint every 10 and a log line every 5. Dropout > 0 so that the restored random state
    matters too; the diffusion model is conditional (label dropout draws random numbers) and keeps an EMA."""
    schedule = ["--max-steps", "60", "--eval-interval", "10", "--warmup-steps", "5", "--log-interval", "5"]
    if model.startswith("diffusion"):
        condition = ["--conditional"] if model == "diffusion" else ["--text-encoder", "scratch", "--text-width", "16",
                                                                    "--text-layers", "1"]
        return ["--data", str(data), *condition, "--base-channels", "8", "--channel-mult", "1,2", "--cond-dim",
                "16", "--attention-heads", "2", "--dropout", "0.1", "--ema-decay", "0.9", "--timesteps", "50",
                "--sample-steps", "2", "--batch-size", "8", *schedule]
    width = ["--n-hidden", "32"] if model != "transformer" else ["--n-head", "2"]
    return ["--data", str(data), "--n-embd", "32", "--n-layer", "2", *width, "--dropout", "0.1",
            "--seq-len", "16", "--batch-size", "8", *schedule]


def checkpoint_step(run: Path) -> int:
    path = run / "checkpoint.safetensors"
    if not path.exists():
        return -1
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["step"])
    except Exception:
        return -1


@pytest.mark.parametrize("model", ["lstm", "transformer", "diffusion", "diffusion-text"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, model: str) -> None:
    data = make_data(tmp_path, model)
    family = model.split("-")[0]
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = run_cli("train", family, "--out", str(full), *options(data, model), env=QUIET)
    assert r.returncode == 0, r.stderr

    # The victim's batches are slowed down (in its own process) so the kill lands between checkpoints.
    proc = subprocess.Popen([sys.executable, "-c", slow_cli(model), "train", family, "--out", str(killed),
                             *options(data, model)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **QUIET})
    deadline = time.time() + 120
    while checkpoint_step(killed) < 20 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = checkpoint_step(killed)
    assert 20 <= step < 60, f"killed at checkpoint step {step}"

    r = run_cli("train", family, "--out", str(killed), "--resume", env=QUIET)
    assert r.returncode == 0, r.stderr
    a, b = load_file(full / "checkpoint.safetensors"), load_file(killed / "checkpoint.safetensors")
    weights = [k for k in a if k.startswith("model.")]
    assert weights and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in weights), [k for k in weights if not torch.equal(a[k], b[k])][:5]
    if family == "diffusion":  # the EMA copy is part of the model's weights, so it was compared too
        assert any(k.startswith("model.ema.") for k in weights)
    if model == "diffusion-text":  # and the scratch text encoder trained with it
        assert any(".text.encoder." in k for k in weights)
    best_full, best_killed = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert best_full.keys() == best_killed.keys()
    assert all(torch.equal(best_full[k], best_killed[k]) for k in best_full)
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    # one log line per 5 steps and one validation per 10, none repeated after the resume
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(5, 61, 5))
    assert [r["step"] for r in records if r["split"] == "val"] == list(range(10, 61, 10))


def test_ctrl_c_saves_a_checkpoint_then_resumes(tmp_path: Path) -> None:
    corpus = make_data(tmp_path, "lstm")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", slow_cli("lstm"), "train", "lstm", "--out", str(run),
                             *options(corpus, "lstm")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **QUIET})
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at" in err and "--resume" in err and "Traceback" not in err
    step = checkpoint_step(run)
    assert 0 < step < 60
    r = run_cli("train", "lstm", "--out", str(run), "--resume", env=QUIET)
    assert r.returncode == 0, r.stderr
    assert checkpoint_step(run) == 60
