"""Progress on standard error: a bar on a terminal, plain periodic lines in logs (no carriage returns)."""

import io
from pathlib import Path

import pytest

from genlab import progress
from genlab.progress import progress_bar
from tests.helpers import TINY_TEXT, run_cli, tiny_options


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_lines_and_a_terminal_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)
    log, tty = io.StringIO(), Terminal()
    for stream in (log, tty):
        with progress_bar(total=3, file=stream, desc="work", unit="step") as bar:
            for _ in range(3):
                bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and lines[-1].startswith("work: 100%") and "3/3" in lines[-1]
    assert "\r" in tty.getvalue()  # the terminal's bar redraws in place


def test_short_work_prints_nothing_to_a_log() -> None:
    log = io.StringIO()
    with progress_bar(total=3, file=log, desc="quick", leave=False) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_a_training_log_has_no_carriage_returns(tmp_path: Path) -> None:
    corpus = tmp_path / "names.txt"
    corpus.write_text(TINY_TEXT)
    opts = tiny_options("transformer", data=str(corpus), max_steps=20)
    r = run_cli("train", "transformer", "--out", str(tmp_path / "run"),
                *[f"--{k.replace('_', '-')}={v}" for k, v in opts.items()], env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "finished after 20 steps" in r.stderr
