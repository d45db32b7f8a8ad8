"""`genlab tune`: Optuna studies over genlab runs — search space, pruning, resume, parallel workers, failures."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

import genlab  # noqa: E402
from genlab.config import Choice, Range  # noqa: E402
from genlab.errors import ConfigError  # noqa: E402
from genlab.tune import TuneOptions, open_study, search_space, tune  # noqa: E402
from tests.helpers import TINY_TEXT, run_cli, tiny_options  # noqa: E402

QUIET = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tune") / "names.txt"
    path.write_text(TINY_TEXT)
    return path


def gpt_options(corpus: Path, **extra: object) -> dict[str, object]:
    return tiny_options("transformer", data=str(corpus), tokenizer="char", max_steps=30, eval_interval=10) | extra


def load_study(folder: Path) -> "optuna.Study":
    info = json.loads((folder / "study.json").read_text())
    return optuna.load_study(study_name=info["study_name"], storage=info["storage"])


def test_declared_space_minus_the_fixed_options(tmp_path: Path) -> None:
    space = search_space("transformer", {"lr", "n_embd"})
    assert space["n_layer"] == Range(1, 6, integer=True) and isinstance(space["n_head"], Choice)
    assert "lr" not in space and "n_embd" not in space and "weight_decay" in space
    ngram = search_space("ngram", set())
    assert set(ngram) == {"order", "smoothing"}
    file = tmp_path / "space.yaml"
    file.write_text("lr: {low: 1e-4, high: 1e-3, log: true}\nn_layer: null\nbatch_size: [8, 16]\ntop: 1\n")
    with pytest.raises(ConfigError, match="'top' is not an option"):
        search_space("transformer", set(), file)
    file.write_text("lr: {low: 1e-4, high: 1e-3, log: true}\nn_layer: null\nbatch-size: [8, 16]\n")
    space = search_space("transformer", set(), file)
    assert space["lr"] == Range(1e-4, 1e-3, log=True) and "n_layer" not in space
    assert space["batch_size"] == Choice((8, 16))


@pytest.mark.parametrize("text, match", [
    ("lr: {low: 0.1, high: 0.01}", "empty range"),
    ("lr: {low: 0, high: 0.01, log: true}", "log range must start above 0"),
    ("n_layer: []", "empty list"),
    ("n_layer: [two]", "n_layer"),
    ("tokenizer: {low: 1, high: 2}", "numeric option"),
    ("lr: 3", "give {low"),
    ("- lr", "mapping"),
])
def test_bad_search_spaces(tmp_path: Path, text: str, match: str) -> None:
    file = tmp_path / "space.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=match):
        search_space("transformer", set(), file)


def test_a_study_prunes_keeps_the_best_config_and_continues(corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    opts = TuneOptions(trials=6, sampler_seed=1, pruner="median")
    first = tune("transformer", folder, gpt_options(corpus), opts)
    study = load_study(folder)
    states = [t.state.name for t in study.trials]
    assert len(states) == 6 and states.count("COMPLETE") >= 3
    assert study.user_attrs["genlab_model"] == "transformer"
    assert study.user_attrs["fixed_options"]["max_steps"] == 30  # given options apply to every trial
    for t in study.trials:
        run = Path(t.user_attrs["run_dir"])
        assert run.parent == (folder / "trials").resolve() and (run / "config.json").is_file()
        config = json.loads((run / "config.json").read_text())
        assert config["train"]["max_steps"] == 30 and config["model_config"]["dropout"] == t.params["dropout"]
        # the pruner's steps are percents of the budget: validations at 33%, 66% and 100%, carried between
        if t.state.name == "COMPLETE":
            assert sorted(t.intermediate_values) == list(range(33, 101))
            assert t.intermediate_values[33] == t.intermediate_values[65] != t.intermediate_values[66]
    best = study.best_trial
    assert first["best_value"] == best.value == min(t.value for t in study.trials if t.state.name == "COMPLETE")
    # the best trial's value is its run's best validation loss, and its config file reproduces it
    config = yaml.safe_load((folder / "best_config.yaml").read_text())
    assert config["model"]["dropout"] == best.params["dropout"] and "vocab_size" not in config["model"]
    assert config["train"]["lr"] == best.params["lr"]
    again = genlab.train("transformer", tmp_path / "again", config_file=folder / "best_config.yaml")
    assert again["best_val"] == pytest.approx(best.value, rel=1e-5)
    # running again continues the same study up to the new total
    tune("transformer", folder, gpt_options(corpus), TuneOptions(trials=8, sampler_seed=1, pruner="median"))
    assert len(load_study(folder).trials) == 8


def lr_study(corpus: Path, tmp_path: Path, pruner: str, lrs: list[float]) -> list:
    """A study of enqueued trials that differ only in their learning rate; its trials once run."""
    folder, space = tmp_path / "study", tmp_path / "space.yaml"
    space.write_text(f"lr: {sorted(set(lrs))}\n" + "".join(f"{k}: null\n" for k in
                                                          ("n_layer", "n_head", "n_embd", "dropout", "weight_decay")))
    opts = TuneOptions(trials=len(lrs), space_file=space, pruner=pruner)
    fixed = gpt_options(corpus)
    study = open_study("transformer", folder, fixed, search_space("transformer", set(fixed), space), opts)
    for lr in lrs:
        study.enqueue_trial({"lr": lr})
    tune("transformer", folder, fixed, opts)
    return load_study(folder).trials


def test_the_median_pruner_stops_a_trial_behind_the_others(corpus: Path, tmp_path: Path) -> None:
    """Three good trials, then one with a learning rate so low that it cannot keep up: pruned at its first check."""
    trials = lr_study(corpus, tmp_path, "median", [0.003, 0.003, 0.003, 0.00001])
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["PRUNED"]
    assert trials[-1].params["lr"] == 0.00001 and trials[-1].last_step == 33  # percent of its budget


def test_successive_halving_lets_only_the_leaders_go_on(corpus: Path, tmp_path: Path) -> None:
    """ASHA: the first trial sets the bar; a worse one stops at the first rung it reaches (33% here, past the
    10% and 30% rungs), an equal one goes on."""
    trials = lr_study(corpus, tmp_path, "asha", [0.003, 0.00001, 0.003])
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert trials[1].last_step == 33 and trials[2].value == pytest.approx(trials[0].value)


def test_failed_trials_are_recorded_and_the_study_goes_on(corpus: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("n_embd: [31, 32]\n")  # 31 is not divisible by n_head 2: that trial fails
    fixed = gpt_options(corpus, n_head=2)
    del fixed["n_embd"]  # searched here
    summary = tune("transformer", tmp_path / "study", fixed, TuneOptions(trials=6, space_file=space, sampler="random"))
    trials = load_study(tmp_path / "study").trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all("divisible" in t.user_attrs["error"] for t in failed)
    assert all(t.params["n_embd"] == 31 for t in failed) and summary["best_params"]["n_embd"] == 32


def test_cli_errors_are_one_line(corpus: Path, tmp_path: Path) -> None:
    cases = [
        (["tune", "transformer", "--study", str(tmp_path / "s"), "--data", str(corpus), "--n-layers", "2"],
         "unknown option --n-layers"),
        (["tune", "transformer", "--study", str(tmp_path / "s"), "--data", str(corpus), "--sampler", "grid"],
         "unknown --sampler"),
        (["tune", "ngram", "--study", str(tmp_path / "s"), "--data", str(corpus), "--order", "3", "--smoothing",
          "kn"], "nothing to search"),
    ]
    for args, needle in cases:
        r = run_cli(*args, env=QUIET)
        assert r.returncode == 1 and needle in r.stderr and r.stderr.startswith("genlab: error:"), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_a_study_of_another_model_is_refused_and_ngram_tunes_by_validation_perplexity(corpus: Path,
                                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "study"
    summary = tune("ngram", folder, {"data": str(corpus), "tokenizer": "char"}, TuneOptions(trials=4))
    study = load_study(folder)
    assert study.user_attrs["objective"] == "perplexity on the validation split"
    best = Path(summary["best_run"])
    report = genlab.evaluate(best, split="valid", write=False)
    assert summary["best_value"] == pytest.approx(report["perplexity"])
    with pytest.raises(ConfigError, match="made for 'ngram', not 'transformer'"):
        tune("transformer", folder, gpt_options(corpus), TuneOptions(trials=1))


def test_two_workers_share_one_study_and_ctrl_c_marks_the_trial(corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    args = ["tune", "transformer", "--study", str(folder), "--trials", "4", "--jobs", "2"]
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in gpt_options(corpus).items()]
    r = run_cli(*args, *opts, env=QUIET, timeout=600)
    assert r.returncode == 0, r.stderr
    trials = load_study(folder).trials
    assert len(trials) >= 4 and (folder / "worker-1.log").is_file()
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)  # no two trials share a run directory
    # Ctrl-C in the middle of a long trial (never pruned): it is marked, the command says how to continue, which
    # works
    long = [f"--{k.replace('_', '-')}={v}" for k, v in gpt_options(corpus, max_steps=100_000).items()]
    proc = subprocess.Popen([sys.executable, "-m", "genlab", "tune", "transformer", "--study", str(folder),
                             "--trials", str(len(trials) + 1), "--pruner", "none", *long],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **QUIET})
    deadline, new_run = time.monotonic() + 120, folder / "trials" / f"trial-{len(trials):04d}"
    while not (new_run / "checkpoint.safetensors").is_file():  # the new trial is training
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Continue with the same command" in err, err[-2000:]
    interrupted = load_study(folder).trials[-1]
    assert interrupted.state.name == "FAIL" and "interrupted" in interrupted.user_attrs["error"]
    r = run_cli(*args[:4], "--trials", str(len(trials) + 2), *opts, env=QUIET, timeout=600)
    assert r.returncode == 0 and len(load_study(folder).trials) == len(trials) + 2


def test_eval_seconds_validates_on_a_clock(corpus: Path, tmp_path: Path) -> None:
    """--eval-seconds adds validations by training time (what a time-budgeted trial's pruner needs); each is
    reported once, with the fraction of the budget used, and the end of training adds none twice."""
    def validations(**extra: object) -> list[tuple[int, float]]:
        seen: list[tuple[int, float]] = []
        options = gpt_options(corpus, max_steps=7, eval_interval=1000, **extra)
        genlab.train("transformer", tmp_path / f"run{len(extra)}", options,
                     on_validation=lambda step, loss, progress: seen.append((step, progress)))
        return seen

    assert validations() == [(7, 1.0)]  # steps alone: only the final validation
    clocked = validations(eval_seconds=1e-9)  # every step is past a nanosecond
    assert [step for step, _ in clocked] == list(range(1, 8))
    assert [progress for _, progress in clocked] == pytest.approx([s / 7 for s in range(1, 8)])
