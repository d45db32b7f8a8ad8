"""Small utilities shared by tests: tiny corpora and running the CLI in a subprocess."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TINY_TEXT = "".join(f"{w}\n" for w in ["anna", "emma", "olivia", "ava", "mia", "isabella", "sophia", "amelia",
                                       "harper", "evelyn", "abigail", "emily", "ella", "elizabeth", "camila"] * 8)


def tiny_options(model: str, **extra: object) -> dict[str, object]:
    """Options for a model small enough to train in a second or two."""
    opts: dict[str, object] = {"n_embd": 32, "n_layer": 1}
    opts |= {"n_hidden": 32} if model != "transformer" else {"n_head": 2}
    opts |= {"seq_len": 16, "batch_size": 8, "warmup_steps": 5, "eval_interval": 50, "log_interval": 5}
    return opts | extra


def train_tiny_lms(root: Path, names: list[str], per_model: dict[str, dict] | None = None,
                   **options: object) -> dict[str, tuple[Path, dict]]:
    """Each LM in `names` trained in this process on TINY_TEXT without held-out splits, with `options` (and
    `per_model[name]` for one of them): name -> (run directory, training summary)."""
    import genlab

    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    runs = {}
    for name in names:
        opts = tiny_options(name, data=str(corpus), lr=1e-2, valid_fraction=0.0, test_fraction=0.0, **options)
        runs[name] = (root / name, genlab.train(name, root / name, opts | (per_model or {}).get(name, {})))
    return runs


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "genlab", *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)


def cli_in_process(args: list[object], monkeypatch: Any, capsys: Any) -> tuple[int, str, str]:
    """`genlab ARGS` in this process, as the console script runs it: exit code, stdout, stderr."""
    from genlab.cli import main

    monkeypatch.setattr(sys, "argv", ["genlab", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


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



def make_served_runs(root: Path) -> Path:
    """A folder of tiny runs of every kind a server offers: lm/chars-3gram (n-gram), lm/gpt (Transformer),
    images/diffusion (class-conditional), images/t2i (text-conditioned diffusion, scratch encoder)."""
    import genlab
    from tests.test_diffusion import TINY_NET
    from tests.test_vae import make_tiny_npz

    root.mkdir(parents=True, exist_ok=True)
    text = root.parent / "names.txt"
    text.write_text(TINY_TEXT)
    genlab.train("ngram", root / "lm" / "chars-3gram", {"data": str(text), "order": 3, "tokenizer": "char"})
    genlab.train("transformer", root / "lm" / "gpt", tiny_options("transformer", data=str(text), max_steps=20,
                                                                     tokenizer="char"))
    npz = make_tiny_npz(root.parent / "tiny.npz")
    images = {"data": str(npz), **TINY_NET, "channel_mult": "1,2", "timesteps": 100, "sample_steps": 3,
              "max_steps": 4, "batch_size": 8, "warmup_steps": 2, "eval_interval": 4, "valid_fraction": 0.0}
    genlab.train("diffusion", root / "images" / "diffusion", images | {"conditional": True})
    captioned = add_captions(make_tiny_npz(root.parent / "captioned.npz"))
    genlab.train("diffusion", root / "images" / "t2i", images | {"data": str(captioned), "text_encoder": "scratch",
                                                                 "text_width": 16, "text_layers": 1})
    return root


def live_server(app: object) -> contextlib.AbstractContextManager[str]:
    """Serve an ASGI app for real on a free loopback port, in a thread; the context yields its base URL."""
    from genlab.server import running

    return running(app)
