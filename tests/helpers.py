"""Small utilities shared by tests: tiny corpora and running the CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

TINY_TEXT = "".join(f"{w}\n" for w in ["anna", "emma", "olivia", "ava", "mia", "isabella", "sophia", "amelia",
                                       "harper", "evelyn", "abigail", "emily", "ella", "elizabeth", "camila"] * 8)


def tiny_options(model: str, **extra: object) -> dict[str, object]:
    """Options for a model small enough to train in a second or two."""
    opts: dict[str, object] = {"n_embd": 32, "n_layer": 1}
    opts |= {"n_hidden": 32} if model != "transformer" else {"n_head": 2}
    opts |= {"seq_len": 16, "batch_size": 8, "warmup_steps": 5, "eval_interval": 50, "log_interval": 5}
    return opts | extra


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "genlab", *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)


def add_captions(path: Path) -> Path:
    """Give a labelled .npz (images, labels[, test_images, test_labels]) two captions per image, naming its label."""
    import numpy as np

    with np.load(path) as f:
        arrays = dict(f)
    for prefix in ("", "test_"):
        if f"{prefix}labels" in arrays:
            arrays[f"{prefix}captions"] = np.array([[f"shape {k}", f"a picture of shape {k}"]
                                                    for k in arrays[f"{prefix}labels"]])
    np.savez(path, **arrays)
    return path

