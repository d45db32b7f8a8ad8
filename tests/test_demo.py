"""`genlab demo` start to finish with a tiny budget (slow: it trains five models and evaluates three)."""

from pathlib import Path

import pytest

from genlab.demo import run_demo


@pytest.mark.slow
def test_demo_runs_every_part(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_demo(tmp_path / "demo", seconds=3)
    out = capsys.readouterr().out
    for needle in ("20 names sampled", "IWAE bound", "variational bound", "one row per prompt", "'here is a 4'",
                   "POST /v1/text/generate (streamed)", "first piece after"):
        assert needle in out, needle
    for run in ("names-transformer", "mnist5k-vae", "mnist5k-diffusion", "mnist5k-text-to-image"):
        assert (tmp_path / "demo" / run / "model.safetensors").is_file(), run
    assert (tmp_path / "demo" / "mnist5k-text-to-image" / "generated.png").is_file()
    assert (tmp_path / "demo" / "served.png").read_bytes().startswith(b"\x89PNG")  # drawn through the HTTP API
