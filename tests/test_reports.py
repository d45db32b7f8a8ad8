"""`genlab report`: the HTML report of a run, of several runs side by side, and of a `genlab tune` study.

The runs are copies of the session's tiny served runs (evaluating writes into a run); the studies are made with
Optuna directly, as `genlab tune` leaves them (study.json, a SQLite study, a run directory per trial). The
reports are opened in a real headless Chromium too (skipped without one, see tests/conftest.py).
"""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

import genlab
from genlab.errors import CheckpointError, ConfigError
from genlab.reports import comparison_report, fmt, run_report, study_report, write_report
from tests.helpers import run_cli, tiny_options

optuna = pytest.importorskip("optuna")

PNG = re.compile(r'<img[^>]* src="data:image/png;base64,[A-Za-z0-9+/=]+"')


@pytest.fixture(scope="module")
def runs(served_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of the served runs, the Transformer and the diffusion model evaluated."""
    root = tmp_path_factory.mktemp("reports") / "runs"
    shutil.copytree(served_runs, root)
    shutil.copy(served_runs.parent / "names.txt", root.parent)
    genlab.evaluate(root / "lm" / "gpt")
    genlab.evaluate(root / "images" / "diffusion", num_samples=16, likelihood_images=4, likelihood_timesteps=4,
                    steps=2)
    for run in (root / "lm" / "gpt", root / "images" / "diffusion"):
        write_report([run])  # as `genlab eval` does after evaluating
    return root


def make_study(folder: Path, run_dir: Path, outcomes: list[str]) -> Path:
    """A study folder as `genlab tune` writes it, one trial per outcome: "complete", "pruned" or "fail"."""
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder.resolve()}/study.db"
    study = optuna.create_study(storage=storage, study_name="tiny", direction="minimize")
    study.set_user_attr("genlab_model", "transformer")
    study.set_user_attr("objective", "best validation loss (nats/token)")
    study.set_user_attr("fixed_options", {"data": "names.txt", "max_steps": 20})
    study.set_user_attr("search_space", {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                         "n_layer": {"type": "int", "low": 1, "high": 3}})

    def objective(trial: optuna.Trial) -> float:
        lr, n_layer = trial.suggest_float("lr", 1e-4, 1e-2, log=True), trial.suggest_int("n_layer", 1, 3)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        value = 2.0 + lr * 10 + n_layer / 10
        for step in (10, 20):
            trial.report(value + 10 / step, step)
        outcome = outcomes[trial.number]
        if outcome == "pruned":
            raise optuna.TrialPruned()
        if outcome == "fail":
            trial.set_user_attr("error", "TrainingError: training diverged at step 7")
            raise RuntimeError("diverged")
        return value

    study.optimize(objective, n_trials=len(outcomes), catch=(RuntimeError,))
    (folder / "study.json").write_text(json.dumps({"storage": storage, "study_name": "tiny", "model": "transformer"}))
    (folder / "best_config.yaml").write_text("model:\n  n_layer: 1\ntrain:\n  lr: 0.001\n")
    return folder


@pytest.fixture(scope="module")
def study(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    outcomes = ["complete", "pruned", "complete", "fail", "complete"]
    return make_study(tmp_path_factory.mktemp("study") / "tiny", runs / "lm" / "gpt", outcomes)


# --- one run ---

def test_a_language_model_report_shows_config_curves_metrics_and_text(runs: Path) -> None:
    run = runs / "lm" / "gpt"
    page = (run / "report.html").read_text()
    config = json.loads((run / "config.json").read_text())
    for name in ("n_head", "seq_len", "lr", "vocab_size"):
        assert f"<th>{name}</th>" in page
    assert f">{fmt(config['train']['lr'])}</td>" in page
    assert PNG.search(page)  # the training curves, inline
    evaluation = json.loads((run / "eval.json").read_text())
    assert f">{fmt(evaluation['perplexity'])}</td>" in page
    sample = re.search(r"<pre[^>]*>(.*?)</pre>", page, re.S)
    assert sample and len(sample.group(1).strip()) > 20
    assert "https://" not in page and "<script" not in page  # self-contained


def test_an_image_model_report_shows_its_sample_grid_and_metrics(runs: Path) -> None:
    page = run_report(runs / "images" / "diffusion")
    assert "eval_samples.png" in page and "class=grid" in page
    assert "<th>fd</th>" in page and "<th>conditional</th>" in page
    assert len(PNG.findall(page)) >= 2  # curves and the grid
    assert "<pre" not in page  # no text sample for an image model


def test_an_unevaluated_run_and_unloadable_weights_are_said_not_fatal(runs: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(runs / "lm" / "chars-3gram", broken)
    for name in ("eval.json", "report.html"):
        (broken / name).unlink(missing_ok=True)
    for weights in broken.iterdir():
        if weights.name not in ("config.json",):
            weights.write_bytes(b"garbage")
    page = run_report(broken)
    assert "not evaluated yet" in page and "no text sample" in page
    assert "no training curves" in page  # an n-gram run is counted, not trained by steps


def test_genlab_eval_writes_the_report_of_an_ngram_run(runs: Path) -> None:
    run = runs / "lm" / "chars-3gram"
    r = run_cli("eval", str(run), "--data", str(runs.parent / "names.txt"))
    assert r.returncode == 0, r.stderr
    page = (run / "report.html").read_text()
    assert "<th>perplexity</th>" in page and "<th>order</th>" in page and "<pre" in page


# --- several runs ---

def test_a_comparison_has_every_run_the_options_that_differ_and_one_curve_figure(runs: Path, tmp_path: Path) -> None:
    other = tmp_path / "gpt-lr"
    genlab.train("transformer", other, tiny_options("transformer", data=str(runs.parent / "names.txt"),
                                                    max_steps=10, tokenizer="char", lr=1e-2))
    paths = [runs / "lm" / "gpt", other, runs / "lm" / "chars-3gram"]
    page = comparison_report(paths)
    for name in (f"{tmp_path.name}/gpt-lr", "runs/lm/gpt", "runs/lm/chars-3gram"):  # below their shared folder
        assert re.search(rf"<th>[^<]*{name}</th>", page), name
    assert "<th>lr</th>" in page and "<th>max_steps</th>" in page and "<th>n_head</th>" in page
    assert "<th>perplexity</th>" in page  # gpt's evaluation beside the others' blanks
    assert len(PNG.findall(page)) == 1
    with pytest.raises(ConfigError, match="twice"):
        comparison_report([other, other])


# --- a study ---

def test_a_study_report_shows_the_best_trial_every_state_and_the_plots(study: Path) -> None:
    page = study_report(study)
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study.resolve()}/study.db").trials
    best = min((t for t in trials if t.value is not None and t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f">{fmt(best.value)}</td>" in page and "<h3>Its run," in page
    for state in ("COMPLETE", "PRUNED", "FAIL"):
        assert f'<td class="{state}">{state}</td>' in page
    assert "training diverged at step 7" in page and "pruned after step 20" in page
    assert "float in [0.0001, 0.01], log scale" in page and "best_config.yaml" in page
    assert len(PNG.findall(page)) == 5  # history, intermediate values, parallel coordinates, importances; its run


def test_importances_need_two_completed_trials_and_their_errors_are_said(study: Path, runs: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    lone = make_study(tmp_path / "lone", runs / "lm" / "gpt", ["complete", "pruned"])
    page = study_report(lone)
    assert "no parameter importances plot: it needs at least 2 completed trials" in page

    import optuna.visualization.matplotlib as plots

    def fail(study: object) -> None:
        raise RuntimeError("zero total variance")

    monkeypatch.setattr(plots, "plot_param_importances", fail)
    assert "no parameter importances plot: RuntimeError: zero total variance" in study_report(study)


def test_a_study_without_optuna_names_the_extra(study: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(ConfigError, match=re.escape("pip install 'genlab[tune]'")):
        write_report([study])


def test_a_copied_study_folder_reads_its_own_database_and_a_missing_one_is_an_error(study: Path,
                                                                                   tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    optuna.delete_study(study_name="tiny", storage=f"sqlite:///{copy}/study.db")  # the original keeps its trials
    with pytest.raises(CheckpointError, match="holds no study named 'tiny'"):
        study_report(copy)
    (copy / "study.db").unlink()
    (copy / "study.json").write_text(json.dumps({"storage": f"sqlite:///{tmp_path}/gone.db", "study_name": "tiny"}))
    with pytest.raises(CheckpointError, match="does not exist"):
        study_report(copy)


# --- the command ---

def test_cli_writes_reports_where_asked_and_bad_paths_are_one_error_line(runs: Path, study: Path,
                                                                         tmp_path: Path) -> None:
    r = run_cli("report", str(runs / "lm" / "gpt"), str(runs / "lm" / "chars-3gram"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "wrote report.html" and (tmp_path / "report.html").is_file()
    plain = tmp_path / "plain"
    plain.mkdir()
    for args, message in (([str(tmp_path / "nope")], "does not exist"),
                          ([str(plain)], "neither a run directory"),
                          ([str(runs / "lm" / "gpt"), str(study)], "got 1 run(s) and 1 study")):
        r = run_cli("report", *args)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("genlab: error: ") and message in r.stderr, r.stderr


# --- in a real browser ---

@pytest.mark.parametrize("which", ["run", "study"])
def test_reports_render_in_chromium(page: object, runs: Path, study: Path, which: str) -> None:
    path = write_report([runs / "images" / "diffusion" if which == "run" else study])
    page.goto(path.resolve().as_uri())
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and all(w > 0 for w in widths)
    assert page.console_errors == []
