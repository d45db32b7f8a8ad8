"""A 2-process torchrun run on CPU (gloo) follows the 1-process loss curve with the same global batch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_TEXT


def train_losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_torchrun_two_processes_match_one(tmp_path: Path, model: str) -> None:
    corpus = tmp_path / "names.txt"
    corpus.write_text(TINY_TEXT * 4)
    width = ["--n-hidden", "32"] if model != "transformer" else ["--n-head", "2"]
    common = ["train", model, "--data", str(corpus), "--n-embd", "32", "--n-layer", "1", *width,
              "--seq-len", "16", "--batch-size", "8", "--max-steps", "20", "--log-interval", "1",
              "--eval-interval", "10", "--warmup-steps", "2", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "genlab", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "genlab", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(a) == len(b) == 20
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    assert a[-1] < a[0]  # it trained
