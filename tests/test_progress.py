"""Progress on standard error: a bar on a terminal, plain periodic lines in logs (no carriage returns)."""

import io
import re
from pathlib import Path

import pytest

from genlab import progress
from genlab.progress import progress_bar
from tests.helpers import TINY_TEXT, run_cli, tiny_options
from tests.helpers import cli_in_process as cli


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


# --- --quiet: no progress at all, results and errors as before ---

TQDM_LINE = re.compile(r"\[\d+:\d\d")  # the elapsed time every tqdm line shows: "[00:01, 12.3step/s]"


def progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if TQDM_LINE.search(line)]


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress lines from the first update, so that work of a second shows them (in a log: not a terminal)."""
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)


def test_quiet_disables_bars_inside_the_block_only(eager: None) -> None:
    def run(**kwargs: object) -> str:
        log = io.StringIO()
        for _ in progress_bar(range(3), file=log, desc="work", **kwargs):
            pass
        return log.getvalue()

    assert progress_lines(run())
    with progress.quiet():
        assert progress.is_quiet() and run() == ""
        with progress.quiet(False):  # a flag passed through does not turn progress back on
            assert run() == ""
        assert sum(1 for _ in progress_bar(range(5))) == 5  # a disabled bar still iterates
    assert not progress.is_quiet() and progress_lines(run())
    with progress.quiet(False):
        assert progress_lines(run())


def test_train_quiet(tmp_path: Path, eager: None, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "names.txt"
    corpus.write_text(TINY_TEXT)
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in tiny_options("transformer", max_steps=20).items()]
    train = ["train", "transformer", "--data", corpus, *opts]
    code, _, err = cli([*train, "--out", tmp_path / "loud"], monkeypatch, capsys)
    assert code == 0, err
    assert progress_lines(err) and "finished after 20 steps" in err
    for flag in ("--quiet", "-q"):
        code, _, err = cli([flag, *train, "--out", tmp_path / flag], monkeypatch, capsys)
        assert code == 0, err
        assert progress_lines(err) == [] and "finished after 20 steps" in err  # the result still prints
    assert not progress.is_quiet()  # left on the way out
    code, _, err = cli([*train, "--out", tmp_path / "late", "--quiet"], monkeypatch, capsys)
    assert code != 0 and "put it first (genlab --quiet COMMAND" in err


def test_sample_and_eval_quiet(tmp_path: Path, eager: None, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    """A diffusion model's sampling (a bar per denoising pass, one over the images) and its evaluation."""
    import genlab
    from tests.test_diffusion import TINY_NET
    from tests.test_vae import make_tiny_npz

    run = tmp_path / "diffusion"
    genlab.train("diffusion", run, {"data": str(make_tiny_npz(tmp_path / "tiny.npz")), **TINY_NET,
                                    "channel_mult": "1,2", "conditional": True, "timesteps": 100, "sample_steps": 3,
                                    "max_steps": 4, "batch_size": 8, "warmup_steps": 2, "eval_interval": 4})
    capsys.readouterr()
    commands = {"sample": ["sample", run, "--num-samples", 4, "--steps", 3, "--seed", 0],
                "eval": ["eval", run, "--num-samples", 16, "--likelihood-images", 8, "--likelihood-timesteps", 4,
                         "--steps", 2]}
    for name, args in commands.items():
        code, out, err = cli(args, monkeypatch, capsys)
        assert code == 0, err
        assert progress_lines(err), f"{name} showed no progress:\n{err}"
        # the denoising steps too: eval samples its images in batches of 500, one update each
        assert any(line.startswith("denoising") for line in progress_lines(err)), f"{name}:\n{err}"
        assert "\x1b" not in err  # nested bars move no cursor in a log
        code, quiet_out, quiet_err = cli(["-q", *args], monkeypatch, capsys)
        assert code == 0, quiet_err
        assert progress_lines(quiet_err) == [], f"genlab -q {name}:\n{quiet_err}"
        assert quiet_out.splitlines()[:1] == out.splitlines()[:1]  # results as before (eval: its table)
        if name == "sample":
            assert "wrote 4 samples" in quiet_err
