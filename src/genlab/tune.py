"""`genlab tune MODEL --study DIR --trials N`: choosing hyper-parameters by experiment, on Optuna.

    genlab tune transformer --data names --study runs/tune-names --trials 30 --max-steps 600 --eval-interval 100

Every option given applies to every trial; the others with a search range (declared beside each config field,
`option(..., search=Range(...))`, or given in a YAML file with `--space`) are what the sampler (TPE, or random)
suggests. Each trial is an ordinary run directory, DIR/trials/trial-NNNN. Trials report their periodic
validation loss to a pruner, which stops the unpromising ones early: successive halving (ASHA, the default: at
10%, 30% and 90% of the budget only the best third of the trials that got there goes on) or the median rule (stop
a trial that trails the median of the finished ones). The pruner compares trials at equal fractions of their
budget (its "steps" are percent of --max-steps, or of --max-seconds when time is the bound):
under a time budget a fast small model and a slow wide one are judged at the same elapsed time, where the learning
rate schedule, which follows time, also stands at the same point. The objective is what each family
already reports: the best validation loss (cross-entropy for LMs, the negative ELBO for VAEs, the pooled FD of
a GAN), a diffusion model's pooled FD of samples against validation images, an n-gram model's validation
perplexity (the task's `tune_objective`).

The study lives in DIR/study.db (SQLite), or in any database Optuna reaches (`--storage URL`): running the same
command again continues it, `--jobs J` runs J processes on it, and several machines can work on one study by
running `genlab tune` against the same URL. At the end: DIR/best_config.yaml (`genlab train MODEL --config` it)
and DIR/report.html.
"""

import dataclasses
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from genlab import api
from genlab.checkpoint import RunDir, atomic_write_json, atomic_write_text
from genlab.config import Choice, Range, _base_type, _coerce
from genlab.errors import ConfigError, GenlabError
from genlab.progress import is_quiet
from genlab.registry import get_model_class
from genlab.tasks import task_for

STUDY_FILE = "study.json"
BEST_CONFIG = "best_config.yaml"
SAMPLERS = ("tpe", "random")
PRUNERS = ("asha", "median", "none")
PRUNER_WARMUP_PERCENT = 10  # no pruning in the first 10% of a trial's budget, where learning curves still cross


@dataclass
class TuneOptions:
    trials: int = 20  # finished trials (complete, pruned or failed) the study should reach
    timeout: float | None = None  # seconds for this process's share of the search
    jobs: int = 1  # processes sharing the study
    storage: str | None = None  # any database URL Optuna accepts; default sqlite:///DIR/study.db
    space_file: Path | None = None  # YAML: option -> {low, high[, log][, int]} | [choices] | null
    sampler: str = "tpe"
    pruner: str = "asha"
    sampler_seed: int = 0
    study_name: str = "genlab"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("`genlab tune` needs Optuna: pip install 'genlab[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # genlab prints one line per trial instead
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the storage's heartbeat
    return optuna


# --- the search space ---

def search_space(model: str, fixed: set[str], space_file: Path | None = None) -> dict[str, Range | Choice]:
    """Option -> range searched: the ranges declared in the model's, data and training configs, updated from
    `space_file`, minus the options given on the command line (they apply to every trial)."""
    cls = get_model_class(model)
    fields = {f.name: f for section in task_for(cls).config_sections(cls).values()
              for f in dataclasses.fields(section) if f.init and not f.metadata.get("derived")}
    space = {name: f.metadata["search"] for name, f in fields.items() if f.metadata.get("search") is not None}
    if space_file is not None:
        space.update(_read_space_file(space_file, fields))
    return {name: s for name, s in space.items() if s is not None and name not in fixed}


def _read_space_file(path: Path, fields: dict[str, dataclasses.Field]) -> dict[str, Range | Choice | None]:
    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read the search space {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to ranges, e.g. lr: {{low: 1e-4, high: 1e-2, "
                          "log: true}")
    out: dict[str, Range | Choice | None] = {}
    for name, spec in entries.items():
        key = str(name).replace("-", "_")
        if key not in fields:
            raise ConfigError(f"{path}: {name!r} is not an option of this model; `genlab models show MODEL` lists "
                              "them")
        where = f"{path}: {name}"
        if spec is None:
            out[key] = None  # not searched
        elif isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{where}: an empty list of choices")
            out[key] = Choice(tuple(_coerce(v, fields[key].type, key) for v in spec))
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "int"}:
            base = _base_type(fields[key].type)[0]
            if base not in (int, float):
                raise ConfigError(f"{where}: a range needs a numeric option; {name} takes {base.__name__}: give a "
                                  "list of choices")
            integer = base is int or bool(spec.get("int", False))
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: low and high must be numbers") from None
            if not low < high:
                raise ConfigError(f"{where}: an empty range (low {low:g} must be below high {high:g})")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"{where}: a log range must start above 0")
            out[key] = Range(low, high, bool(spec.get("log", False)), integer)
        else:
            raise ConfigError(f"{where}: give {{low: ..., high: ...[, log: true][, int: true]}}, a list of choices, "
                              "or null")
    return out


def _suggest(trial: Any, space: dict[str, Range | Choice]) -> dict[str, Any]:
    params = {}
    for name, spec in space.items():
        if isinstance(spec, Choice):
            params[name] = trial.suggest_categorical(name, list(spec.choices))
        elif spec.integer:
            params[name] = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log)
        else:
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    return params


# --- the study ---

def open_study(model: str, study_dir: Path, fixed: dict[str, Any], space: dict[str, Range | Choice],
               opts: TuneOptions, worker: int = 0) -> Any:
    """Create or continue the study in `study_dir` (or at opts.storage); refuse one made for another model."""
    optuna = _optuna()
    if opts.sampler not in SAMPLERS:
        raise ConfigError(f"unknown --sampler {opts.sampler!r}; choose {', '.join(SAMPLERS)}")
    if opts.pruner not in PRUNERS:
        raise ConfigError(f"unknown --pruner {opts.pruner!r}; choose {', '.join(PRUNERS)}")
    if not space:
        raise ConfigError(f"nothing to search: every option of {model!r} with a range is fixed on the command line; "
                          "drop one or give ranges with --space FILE")
    study_dir.mkdir(parents=True, exist_ok=True)
    url = opts.storage or f"sqlite:///{study_dir.resolve() / 'study.db'}"
    # A heartbeat lets the next run mark the trials of a killed process as failed instead of running forever.
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    seed = opts.sampler_seed + worker  # each worker its own random start
    # Multivariate TPE models the options jointly (width and learning rate interact); 5 random trials start it.
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True) if opts.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(storage=storage, study_name=opts.study_name, direction="minimize", sampler=sampler,
                                pruner=_pruner(optuna, opts.pruner), load_if_exists=True)
    made_for = study.user_attrs.get("genlab_model")
    if made_for is not None and made_for != model:
        raise ConfigError(f"the study {opts.study_name!r} at {url} was made for {made_for!r}, not {model!r}; choose "
                          "another --study folder or --study-name")
    if made_for is None:
        study.set_user_attr("genlab_model", model)
        study.set_user_attr("objective", task_for(get_model_class(model)).tune_objective_name(model))
        study.set_user_attr("fixed_options", fixed)
        study.set_user_attr("search_space", {name: s.describe() for name, s in space.items()})
    elif study.user_attrs.get("fixed_options") != fixed:
        print(f"genlab: warning: this study ran with the options {study.user_attrs.get('fixed_options')}; these "
              f"trials use {fixed}, so their values may not compare", file=sys.stderr)
    atomic_write_json(study_dir / STUDY_FILE, {"storage": url, "study_name": opts.study_name, "model": model})
    return study


def _pruner(optuna: Any, name: str) -> Any:
    if name == "asha":
        # Asynchronous successive halving (Li et al. 2020): rungs at 10%, 30% and 90% of the budget, a third of the
        # trials that reach a rung go on. One bracket: Hyperband's several would split a short study's few trials.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=PRUNER_WARMUP_PERCENT, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=PRUNER_WARMUP_PERCENT)
    return optuna.pruners.NopPruner()


def tune(model: str, study_dir: str | Path, overrides: dict[str, Any] | None = None,
         opts: TuneOptions | None = None, worker: int = 0) -> dict[str, Any]:
    """Run (or continue) a study; returns {"best_value", "best_params", "best_run", "trials", ...}."""
    optuna = _optuna()
    opts = opts or TuneOptions()
    if opts.trials < 1 or opts.jobs < 1:
        raise ConfigError("--trials and --jobs must be at least 1")
    study_dir = Path(study_dir)
    fixed = dict(overrides or {})
    api.resolve_configs(model, fixed)  # unknown options and bad values: an error now, not in every trial
    space = search_space(model, set(fixed), opts.space_file)
    study = open_study(model, study_dir, fixed, space, opts, worker)
    task = task_for(get_model_class(model))
    workers = [_start_worker(model, study_dir, fixed, opts, i) for i in range(1, opts.jobs)] if worker == 0 else []

    def objective(trial: Any) -> float:
        params = _suggest(trial, space)
        run = study_dir / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run.resolve()))

        last: tuple[int, float] | None = None  # (percent, loss) of the last report

        def report(step: int, loss: float, progress: float) -> None:
            # The pruner's step is the percent of the budget used. Percents passed since the last validation get
            # the loss measured then (what was known at that point), so every trial has a value at every percent
            # from its first validation on, and any two compare at equal progress.
            nonlocal last
            percent = min(int(progress * 100), 100)
            if last is not None:
                if percent <= last[0]:
                    return
                for passed in range(last[0] + 1, percent):
                    trial.report(last[1], passed)
            last = (percent, loss)
            trial.report(loss, percent)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {loss:.4g} at step {step} ({percent}% of the budget)")

        try:
            summary = api.train(model, run, {**fixed, **params}, overwrite=True, on_validation=report)
            if summary.get("interrupted"):
                raise KeyboardInterrupt
            value = task.tune_objective(RunDir(run), summary)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C); run the same command to continue the study")
            raise
        except Exception as e:  # a crash or a divergence fails this trial only; the study goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {e}" if not isinstance(e, GenlabError) else str(e))
            raise
        return value

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    try:
        if len(study.get_trials(deepcopy=False, states=finished)) < opts.trials:
            study.optimize(objective, timeout=opts.timeout, catch=(Exception,),
                           callbacks=[optuna.study.MaxTrialsCallback(opts.trials, states=finished), _print_trial])
    finally:
        for proc in workers:
            proc.wait()
    if worker:
        return {}
    return _finish(study, study_dir, model)


def _start_worker(model: str, study_dir: Path, fixed: dict[str, Any], opts: TuneOptions,
                  index: int) -> subprocess.Popen:
    """Another `genlab tune` process on the same study (its output in DIR/worker-N.log)."""
    args = [sys.executable, "-m", "genlab", "tune", model, "--study", str(study_dir), "--trials", str(opts.trials),
            "--sampler", opts.sampler, "--pruner", opts.pruner, "--sampler-seed", str(opts.sampler_seed),
            "--study-name", opts.study_name, "--worker", str(index),
            "--storage", opts.storage or f"sqlite:///{study_dir.resolve() / 'study.db'}"]
    if opts.timeout is not None:
        args += ["--timeout", str(opts.timeout)]
    if opts.space_file is not None:
        args += ["--space", str(opts.space_file)]
    for key, value in fixed.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    log = open(study_dir / f"worker-{index}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def _print_trial(study: Any, trial: Any) -> None:
    if trial.state.name == "PRUNED":
        step = trial.last_step
        shown = (f"pruned at {step}% of its budget ({trial.intermediate_values[step]:.5g})" if step is not None
                 else "pruned")
    else:
        shown = f"{trial.value:.5g}" if trial.value is not None else trial.state.name.lower()
    why = trial.user_attrs.get("error")
    try:
        best = f"; best {study.best_value:.5g} (trial {study.best_trial.number})"
    except ValueError:
        best = ""
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    if not is_quiet():  # a line per trial is the study's progress
        print(f"trial {trial.number}: {shown}{f' ({why})' if why else ''}{best}  [{params}]", file=sys.stderr,
              flush=True)


def _finish(study: Any, study_dir: Path, model: str) -> dict[str, Any]:
    """The best trial's config as DIR/best_config.yaml, the report, and a summary."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    summary: dict[str, Any] = {"study_dir": str(study_dir), "trials": counts}
    try:
        best = study.best_trial
    except ValueError:
        summary["message"] = f"no trial completed ({counts}); see {study_dir}/trials/ and the trials' errors"
        return summary
    run = RunDir(best.user_attrs["run_dir"])
    saved = run.read_config()
    derived = {f.name for f in dataclasses.fields(get_model_class(model).Config) if f.metadata.get("derived")}
    config = {"model": {k: v for k, v in saved["model_config"].items() if k not in derived},
              "data": saved["data"], **({"train": saved["train"]} if "train" in saved else {})}
    atomic_write_text(study_dir / BEST_CONFIG, f"# genlab tune: trial {best.number}, objective {best.value:.6g}\n"
                      f"# reproduce: genlab train {model} --config {study_dir / BEST_CONFIG}\n"
                      + yaml.safe_dump(config, sort_keys=False))
    report = _write_report(study_dir)
    summary |= {"best_value": best.value, "best_params": best.params, "best_trial": best.number,
                "best_run": str(run.path), "best_config": str(study_dir / BEST_CONFIG), "report": report}
    summary["message"] = (f"trials: {counts}; best {best.value:.5g} (trial {best.number}, {run.path}); "
                          f"config: {study_dir / BEST_CONFIG}" + (f"; report: {report}" if report else ""))
    return summary


def _write_report(study_dir: Path) -> str | None:
    try:
        from genlab.reports import write_report
    except ImportError:
        return None
    return str(write_report([study_dir], study_dir / "report.html"))
