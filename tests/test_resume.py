"""Killing a run with SIGKILL and resuming it gives the same final weights as an uninterrupted run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers import TINY_TEXT, run_cli

SLOW_CLI = """
import sys, time
from genlab.data.text import TokenBatches
original = TokenBatches.__call__
def slow(self, step):
    time.sleep(0.05)
    return original(self, step)
TokenBatches.__call__ = slow
sys.argv[0] = "genlab"
from genlab.cli import main
main()
"""


def options(corpus: Path, model: str) -> list[str]:
    width = ["--n-hidden", "32"] if model != "transformer" else ["--n-head", "2"]
    # Dropout > 0 so that the restored random state matters too.
    return ["--data", str(corpus), "--n-embd", "32", "--n-layer", "2", *width, "--dropout", "0.1",
            "--seq-len", "16", "--batch-size", "8", "--max-steps", "60", "--eval-interval", "10",
            "--warmup-steps", "5", "--log-interval", "5"]


def checkpoint_step(run: Path) -> int:
    path = run / "checkpoint.safetensors"
    if not path.exists():
        return -1
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["step"])
    except Exception:
        return -1


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, model: str) -> None:
    corpus = tmp_path / "names.txt"
    corpus.write_text(TINY_TEXT * 4)
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = run_cli("train", model, "--out", str(full), *options(corpus, model))
    assert r.returncode == 0, r.stderr

    # The victim's batches are slowed down (in its own process) so the kill lands between checkpoints.
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "train", model, "--out", str(killed),
                             *options(corpus, model)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while checkpoint_step(killed) < 20 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = checkpoint_step(killed)
    assert 20 <= step < 60, f"killed at checkpoint step {step}"

    r = run_cli("train", model, "--out", str(killed), "--resume")
    assert r.returncode == 0, r.stderr
    a, b = load_file(full / "checkpoint.safetensors"), load_file(killed / "checkpoint.safetensors")
    weights = [k for k in a if k.startswith("model.")]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    assert torch.equal(load_file(full / "model.safetensors")["head.weight"],
                       load_file(killed / "model.safetensors")["head.weight"])
    steps = [line for line in (killed / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(steps) == 12  # one log line per 5 steps, none repeated after the resume


def test_ctrl_c_saves_a_checkpoint_then_resumes(tmp_path: Path) -> None:
    corpus = tmp_path / "names.txt"
    corpus.write_text(TINY_TEXT * 4)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "train", "lstm", "--out", str(run),
                             *options(corpus, "lstm")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    r = run_cli("train", "lstm", "--out", str(run), "--resume")
    assert r.returncode == 0, r.stderr
    assert checkpoint_step(run) == 60
