"""Reports a person looks at: one self-contained HTML file of a run, of several runs side by side, or of a study.

    run_report(path) -> str            a run: family, config, data facts, curves, last evaluation, samples
    comparison_report(paths) -> str    several runs: options that differ, metrics side by side, overlaid curves
    study_report(path) -> str          a `genlab tune` study: best trial, every trial, Optuna's plots
    write_report(paths, out) -> Path   whichever of the three `paths` call for, written atomically

Everything is inline (pictures as base64 PNG, one CSS block, no scripts or fonts), so the file opens offline and
can be mailed; its Content-Security-Policy keeps the browser from fetching anything.
"""

import base64
import html
import io
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from genlab import __version__, api
from genlab.checkpoint import CONFIG, RunDir, atomic_write_text
from genlab.errors import CheckpointError, ConfigError
from genlab.eval.report import comparison_png, curves_png, figure_png, pyplot, series

REPORT = "report.html"
STUDY = "study.json"  # what `genlab tune` writes into a study folder: storage URL, study name, model
# Metrics a reader looks for first (flattened eval.json names), in this order; the others follow as written.
HEADLINE = ("perplexity", "cross_entropy_nats", "bits_per_char", "fd", "kid", "precision", "recall",
            "vlb_bits_per_dim", "neg_elbo_bits_per_dim", "iwae_bits_per_dim", "label_accuracy",
            "captions.clip_score", "captions.r_precision")
# Pictures the image commands leave in a run (glob patterns), with what they show.
PICTURES = {
    "samples.png": "samples (genlab sample)",
    "generated.png": "generated from prompts, one row each (genlab generate)",
    "eval_samples.png": "samples drawn by genlab eval",
    "eval_prompts_*.png": "held-out prompts of genlab eval, one row per prompt",
    "reconstructions.png": "odd rows: held-out images, even rows: their reconstructions (genlab reconstruct)",
    "eval_reconstructions.png": "odd rows: held-out images, even rows: their reconstructions (genlab eval)",
    "interpolations.png": "latent walks, one per row (genlab interpolate)",
    "edit.png": "the input, the masked input (inpainting) and the edits (genlab edit)",
}
TEXT_TOKENS = 300  # a language model's sample: enough for a few lines, short enough to read
TEXT_CHARS = 2000
SHORT_LINE = 24  # a sample whose lines are all this short (names, words) is shown in columns
NESTED_CHARS = 160  # a nested value shown whole (data facts deeper than the table goes) is cut here
MIN_GRID_PX = 360  # small sample grids are drawn larger, pixels kept sharp

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430;
       max-width: 1150px; margin: 2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.7rem; margin: 0 0 .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d8dce3; }
h3 { font-size: 1rem; margin: .6rem 0 .2rem; } .sub, figcaption, footer { color: #5a6270; }
.sub { margin-top: 0; } footer { margin-top: 3rem; font-size: 12px; }
table { border-collapse: collapse; margin: .4rem 0; font-size: 14px; }
th, td { text-align: left; padding: .22rem .7rem; border-bottom: 1px solid #eceef2; vertical-align: top; }
td { max-width: 60ch; overflow-wrap: anywhere; font-variant-numeric: tabular-nums; }
table.wide td.num { text-align: right; }
thead th, tr.group th { background: #f3f5f8; } tr.head th, tr.head td { font-weight: 600; }
.cols { display: flex; flex-wrap: wrap; gap: 0 2.5rem; align-items: flex-start; }
figure { margin: 1rem 0; } figcaption { font-size: 13px; } img { max-width: 100%; height: auto; }
img.grid { image-rendering: pixelated; } .summary img { width: 600px; }
pre { background: #f6f7f9; padding: .8rem; white-space: pre-wrap; } pre.lines { columns: 11em; }
.note { color: #8a5a00; } .COMPLETE { color: #1b6e20; } .PRUNED { color: #8a5a00; } .FAIL { color: #b00020; }
"""


# --- HTML pieces (every text escaped here) ---

def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any) -> str:
    """A value as a reader wants it: 5 significant digits, lists joined, nested values as short JSON."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list, tuple)) for v in value):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, default=str)
        return text if len(text) <= NESTED_CHARS else text[:NESTED_CHARS] + " …"
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flatten(tree: dict[str, Any], prefix: str = "", depth: int | None = None) -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; values nested deeper than `depth` levels stay whole."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and (depth is None or depth > 1):
            out |= flatten(value, name, None if depth is None else depth - 1)
        else:
            out[name] = value
    return out


def headline_first(names: Iterable[str]) -> list[str]:
    names = list(names)
    return [h for h in HEADLINE if h in names] + [n for n in names if n not in HEADLINE]


def td(value: Any) -> str:
    return f'<td class="num">{esc(fmt(value))}</td>' if is_number(value) else f"<td>{esc(fmt(value))}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of `rows`, each a list of finished <td>/<th> cells (or a finished <tr>); with a `header` it is
    a wide table (one column per run or field), its numbers right-aligned."""
    head = f"<thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr></thead>" if header else ""
    body = "".join(r if isinstance(r, str) else f"<tr>{''.join(r)}</tr>" for r in rows)
    return f'<table{" class=wide" if header else ""}>{head}<tbody>{body}</tbody></table>'


def kv_table(values: dict[str, Any], bold: Iterable[str] = ()) -> str:
    bold = set(bold)
    rows = (f'<tr{" class=head" if k in bold else ""}><th>{esc(k)}</th>{td(v)}</tr>' for k, v in values.items())
    return table([], rows) if values else note("nothing recorded")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def link(path: Path, text: str) -> str:
    """A link to a run: its report.html when it has one, else its folder."""
    target = path / REPORT if (path / REPORT).is_file() else path
    return f'<a href="{esc(target.resolve().as_uri())}">{esc(text)}</a>'


def figure(png: bytes, caption: str, grid: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    style = ""
    if grid:
        from PIL import Image

        width = Image.open(io.BytesIO(png)).size[0]
        style = f' style="width: {width * max(1, MIN_GRID_PX // width)}px"'
    return (f'<figure><img{" class=grid" if grid else ""}{style} alt="{esc(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>')


def page(title: str, body: str) -> str:
    made = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" "
            "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
            f"<footer>genlab {esc(__version__)} report, {esc(made)}</footer>\n</body></html>\n")


# --- a run ---

@dataclass
class Run:
    """What a report needs of a run directory, read without loading its weights."""

    path: Path
    card: dict[str, Any]  # api.describe: family, task, about, data_info, metrics of the last `genlab eval`
    config: dict[str, Any]  # RUN/config.json
    records: list[dict[str, Any]]  # RUN/metrics.jsonl; none for n-gram runs, which are counted, not trained

    @classmethod
    def read(cls, path: str | Path) -> "Run":
        run = RunDir(path)
        return cls(run.path, api.describe(path), run.read_config(), run.read_metrics())

    def steps(self) -> int | None:
        return max((r["step"] for r in self.records if is_number(r.get("step"))), default=None)

    def train_seconds(self) -> float | None:
        return max((r["elapsed_s"] for r in self.records if is_number(r.get("elapsed_s"))), default=None)

    def best_val(self) -> tuple[int, float] | None:
        """(step, loss) of the lowest validation loss, whose weights are RUN/model.safetensors."""
        return min(series(self.records, "val", "loss"), key=lambda p: p[1], default=None)

    def sections(self) -> dict[str, dict[str, Any]]:
        return {name: self.config[key] for name, key in (("model", "model_config"), ("data", "data"),
                                                         ("train", "train")) if key in self.config}

    def options(self) -> dict[str, Any]:
        """Every option by its command-line name (the model's first where a data option shares the name)."""
        out: dict[str, Any] = {}
        for values in self.sections().values():
            for k, v in values.items():
                out.setdefault(k, v)
        return out

    def metrics(self) -> dict[str, Any]:
        flat = flatten(self.card["metrics"] or {})
        return {k: flat[k] for k in headline_first(flat)}


def summary(run: Run) -> str:
    """The run at a glance: family, data, training length, best validation loss, headline metrics, curves."""
    best = run.best_val()
    facts = {"family": run.card["family"], "data": run.card["data"], "steps": run.steps(),
             "train seconds": run.train_seconds(),
             "best validation loss": f"{best[1]:.5g} at step {best[0]}" if best else None}
    facts |= {k: v for k, v in run.metrics().items() if k in HEADLINE}
    curves = curves_png(run.records)
    shown = (figure(curves, "training curves: train and validation losses against the step") if curves else
             note("no training curves: RUN/metrics.jsonl has no losses (n-gram models are counted, not trained)"))
    return f'<div class="cols summary">{kv_table(facts, bold=HEADLINE)}{shown}</div>'


def text_sample(run: Run, model: Any = None) -> str:
    try:
        model = api.load(run.path) if model is None else model
        text = "".join(api.text_stream(model, "", max_new_tokens=TEXT_TOKENS, seed=0))
    except Exception as e:  # a report still describes a run whose weights cannot be loaded or sampled
        return note(f"no text sample: the model could not be loaded or sampled ({type(e).__name__}: {e})")
    shown = text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"
    lines = max(map(len, shown.splitlines()), default=0) <= SHORT_LINE  # names, words: in columns
    return (f"<p>{TEXT_TOKENS} tokens from an empty prompt, seed 0:</p>"
            f"<pre{' class=lines' if lines else ''}>{esc(shown)}</pre>")


def pictures(run: Run) -> str:
    shown = [figure(p.read_bytes(), f"{p.name}: {about}", grid=True)
             for pattern, about in PICTURES.items() for p in sorted(run.path.glob(pattern))]
    if not shown:
        return note("no sample grids yet: `genlab sample RUN` or `genlab eval RUN` draws some")
    return f'<div class="cols">{"".join(shown)}</div>'


def run_report(path: str | Path, model: Any = None) -> str:
    """The HTML report of one run. `model`: the run already loaded (saves loading it again for a text sample)."""
    run = Run.read(path)
    card = run.card
    configs = "".join(f"<div><h3>{esc(name)}</h3>{kv_table(values)}</div>" for name, values in run.sections().items())
    evaluation = (kv_table(run.metrics(), bold=HEADLINE) if card["metrics"] is not None else
                  note("not evaluated yet: `genlab eval RUN` writes RUN/eval.json"))
    body = [f"<h1>{esc(run.path.name)}</h1>",
            f'<p class="sub">{esc(card["family"])}: {esc(card["about"])}<br>{esc(run.path.resolve())}</p>',
            summary(run),
            "<h2>Configuration</h2>", f'<div class="cols">{configs}</div>',
            "<h2>Data</h2>", kv_table(flatten(card["data_info"], depth=2)),
            "<h2>Last evaluation</h2>", evaluation,
            "<h2>Samples</h2>", pictures(run) if card["task"] == "images" else text_sample(run, model)]
    return page(f"{run.path.name}: genlab report", "\n".join(body))


# --- several runs ---

def labels(paths: list[Path]) -> list[str]:
    """Each run's path below the folder all of them share: short, and unique."""
    full = [p.resolve() for p in paths]
    repeated = [str(p) for p, n in Counter(full).items() if n > 1]
    if repeated:
        raise ConfigError(f"{repeated[0]} is given twice; a comparison needs different runs")
    common = Path(os.path.commonpath(full))
    return [p.relative_to(common).as_posix() if p != common else p.name for p in full]


def side_by_side(names: list[str], groups: list[tuple[str, dict[str, list[Any]]]]) -> str:
    """One column per run; `groups` are (title, {row name: a value per run}), each under a heading row."""
    rows = []
    for title, values in groups:
        rows.append(f'<tr class="group"><th colspan="{len(names) + 1}">{esc(title)}</th></tr>')
        rows += [f"<tr><th>{esc(k)}</th>{''.join(td(v) for v in vs)}</tr>" for k, vs in values.items()]
    return table(["", *names], rows)


def comparison_report(paths: Sequence[str | Path]) -> str:
    """Runs side by side: family, training, the options that differ, last evaluations, overlaid loss curves."""
    runs = [Run.read(p) for p in paths]
    names = labels([r.path for r in runs])
    best = [r.best_val() for r in runs]
    training = {"family": [r.card["family"] for r in runs], "data": [r.card["data"] for r in runs],
                "steps": [r.steps() for r in runs], "train seconds": [r.train_seconds() for r in runs],
                "best validation loss": [b[1] if b else None for b in best],
                "at step": [b[0] if b else None for b in best]}
    options = [r.options() for r in runs]
    differ = {k: [o.get(k) for o in options] for k in dict.fromkeys(k for o in options for k in o)
              if len({json.dumps(o.get(k), sort_keys=True, default=str) for o in options}) > 1}
    metrics = [r.metrics() for r in runs]
    numeric = headline_first(dict.fromkeys(k for m in metrics for k, v in m.items() if is_number(v)))
    evaluated = {k: [m.get(k) for m in metrics] for k in ["data", *numeric] if any(k in m for m in metrics)}
    groups = [("training", training), ("options that differ", differ), ("last evaluation", evaluated)]
    curves = comparison_png({n: r.records for n, r in zip(names, runs, strict=True)})
    body = [f"<h1>{len(runs)} runs compared</h1>",
            '<p class="sub">' + "<br>".join(f"{link(r.path, n)}: {esc(r.card['family'])}"
                                           for n, r in zip(names, runs, strict=True)) + "</p>",
            side_by_side(names, [(t, v) for t, v in groups if v]),
            "" if any(m for m in metrics) else note("none of the runs is evaluated yet: `genlab eval RUN`"),
            "<h2>Loss curves</h2>",
            figure(curves, "validation (left) and train (right) loss, one line per run") if curves else
            note("no run has training curves (n-gram models are counted, not trained)")]
    return page(f"{len(runs)} runs: genlab comparison", "\n".join(body))


# --- a study of `genlab tune` ---

SQLITE = "sqlite:///"
PLOTS = {  # Optuna's matplotlib plots in the order shown: (name, what it shows)
    "plot_optimization_history": ("optimization history", "each completed trial's value and the best so far"),
    "plot_intermediate_values": ("intermediate values", "each trial's validation loss against the percent of its "
                                                        "training budget used; pruned trials stop early"),
    "plot_parallel_coordinate": ("parallel coordinates", "each completed trial's parameters and value"),
    "plot_param_importances": ("parameter importances", "how much of the value's variation each parameter "
                                                        "explains (fANOVA)"),
}


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("study reports need Optuna: pip install 'genlab[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(optuna: Any, folder: Path) -> tuple[Any, str]:
    """The Optuna study that DIR/study.json names, and the storage it was read from."""
    path = folder / STUDY
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        storage, name = str(spec["storage"]), str(spec["study_name"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable study file ({type(e).__name__}: {e})") from None
    if storage.startswith(SQLITE):
        db = Path(storage.removeprefix(SQLITE))
        if (folder / db.name).is_file():  # the folder's own: it may be moved or copied since `genlab tune` ran
            db = folder / db.name
            storage = SQLITE + str(db.resolve())
        if not db.is_file():  # opening it would create an empty database
            raise CheckpointError(f"the study database {db} named in {path} does not exist")
    try:
        return optuna.load_study(study_name=name, storage=storage), storage
    except KeyError:
        raise CheckpointError(f"{storage} holds no study named {name!r}") from None
    except Exception as e:  # each storage back end has its own errors; any of them means the study is unreadable
        raise CheckpointError(f"cannot open study {name!r} in {storage}: {e}") from None


def spec_text(spec: Any) -> str:
    """{"type": "float", "low": 1e-4, "high": 1e-2, "log": true} → "float in [0.0001, 0.01], log scale"."""
    if not isinstance(spec, dict):
        return fmt(spec)
    if spec.get("type") == "categorical":
        return "one of " + ", ".join(fmt(c) for c in spec.get("choices", []))
    extras = [f"step {fmt(spec['step'])}"] if spec.get("step") is not None else []
    extras += ["log scale"] if spec.get("log") else []
    return ", ".join([f"{spec.get('type')} in [{fmt(spec.get('low'))}, {fmt(spec.get('high'))}]", *extras])


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def study_plots(optuna: Any, study: Any, trials: list[Any], complete: list[Any]) -> str:
    """Optuna's plots where they have something to show; a line saying why where one is missing."""
    pyplot()  # the Agg backend, before Optuna imports pyplot
    import optuna.visualization.matplotlib as plots

    searched = any(t.params for t in complete)
    missing = {
        "plot_optimization_history": None if complete else "no completed trial yet",
        "plot_intermediate_values": None if any(t.intermediate_values for t in trials) else
        "no trial reported intermediate values",
        "plot_parallel_coordinate": None if complete and searched else "no completed trial with searched parameters",
        "plot_param_importances": None if len(complete) >= 2 and searched else
        "it needs at least 2 completed trials and 1 searched parameter",
    }
    out = []
    for name, (title, about) in PLOTS.items():
        why = missing[name]
        if why is None:
            try:
                # Optuna sets its ggplot style globally: keep it to its own plots. It calls them experimental.
                with pyplot().rc_context(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fig = getattr(plots, name)(study).figure
                    fig.set_size_inches(8, 4.5)
                    out.append(figure(figure_png(fig), f"{title}: {about}"))
                continue
            except Exception as e:  # e.g. importances when the value never varied: say so, keep the report
                why = f"{type(e).__name__}: {e}"
        out.append(note(f"no {title} plot: {why}"))
    return "\n".join(out)


def trial_rows(trials: list[Any], params: list[str], best: int | None) -> list[str]:
    """One <tr> per trial, the best one bold; a note says why a trial failed or where it was pruned."""
    rows = []
    for t in trials:
        run_dir = t.user_attrs.get("run_dir")
        if t.state.name == "FAIL":
            why = t.user_attrs.get("error", "failed")
        elif t.state.name == "PRUNED" and t.intermediate_values:
            why = f"pruned after step {max(t.intermediate_values)}"
        else:
            why = ""
        cells = [td(t.number), f'<td class="{esc(t.state.name)}">{esc(t.state.name)}</td>', td(t.value),
                 *(td(t.params.get(p)) for p in params),
                 f"<td>{esc(seconds_text(t.duration.total_seconds() if t.duration else None))}</td>",
                 f"<td>{link(Path(run_dir), Path(run_dir).name) if run_dir else '—'}</td>", f"<td>{esc(why)}</td>"]
        rows.append(f'<tr{" class=head" if t.number == best else ""}>{"".join(cells)}</tr>')
    return rows


def best_trial(best: Any) -> str:
    """The best trial's value and parameters, and a summary of its run."""
    if best is None:
        return note("no completed trial yet")
    run_dir = best.user_attrs.get("run_dir")
    facts = {"value": best.value, "trial": best.number, **best.params, "run directory": run_dir}
    parts = [kv_table(facts, bold=["value"])]
    if run_dir is None:
        parts.append(note("the trial did not record its run directory"))
    else:
        try:
            parts += [f"<h3>Its run, {link(Path(run_dir), Path(run_dir).name)}</h3>", summary(Run.read(run_dir))]
        except CheckpointError as e:
            parts.append(note(f"its run cannot be read: {e}"))
    return "\n".join(parts)


def study_report(path: str | Path) -> str:
    """The HTML report of a `genlab tune` study folder."""
    optuna = import_optuna()
    folder = Path(path)
    study, storage = open_study(optuna, folder)
    attrs = study.user_attrs
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    states = Counter(t.state.name for t in trials)
    params = list(dict.fromkeys(p for t in trials for p in t.params))
    facts = {"genlab model": attrs.get("genlab_model"), "objective": attrs.get("objective"),
             "direction": study.direction.name.lower(), "storage": storage,
             "trials": f"{len(trials)} (" + ", ".join(f"{n} {s.lower()}" for s, n in states.items()) + ")"}
    space = {k: spec_text(v) for k, v in (attrs.get("search_space") or {}).items()}
    best_config = folder / "best_config.yaml"
    search = [f"<div><h3>search space</h3>{kv_table(space)}</div>",
              f"<div><h3>fixed options</h3>{kv_table(attrs.get('fixed_options') or {})}</div>"]
    if best_config.is_file():
        search.append(f"<div><h3>best_config.yaml</h3><pre>{esc(best_config.read_text(encoding='utf-8'))}</pre></div>")
    header = ["#", "state", "value", *params, "duration", "run", "note"]
    body = [f"<h1>Study {esc(study.study_name)}</h1>",
            f'<p class="sub">{esc(folder.resolve())}</p>', kv_table(facts),
            "<h2>Best trial</h2>", best_trial(best),
            "<h2>Search</h2>", f'<div class="cols">{"".join(search)}</div>',
            "<h2>Plots</h2>", study_plots(optuna, study, trials, complete),
            "<h2>All trials</h2>",
            table(header, trial_rows(trials, params, best and best.number)) if trials else note("no trials yet")]
    return page(f"{study.study_name}: genlab study report", "\n".join(body))


# --- which report, and where ---

def kind_of(path: Path) -> str:
    """"run" or "study"; CheckpointError for anything else."""
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if (path / STUDY).is_file():
        return "study"
    if (path / CONFIG).is_file():
        return "run"
    raise CheckpointError(f"{path} is neither a run directory (no {CONFIG}) nor a study folder of `genlab tune` "
                          f"(no {STUDY})")


def write_report(paths: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the report `paths` call for: one run's, a comparison of several runs, or one study's. `out`
    defaults to report.html in the run or study folder, ./report.html for a comparison. Returns the file."""
    paths = [Path(p) for p in paths]
    kinds = [kind_of(p) for p in paths]
    if kinds == ["study"]:
        text, default = study_report(paths[0]), paths[0] / REPORT
    elif kinds == ["run"]:
        text, default = run_report(paths[0]), paths[0] / REPORT
    elif kinds and set(kinds) == {"run"}:
        text, default = comparison_report(paths), Path(REPORT)
    else:
        counts = Counter(kinds)
        raise ConfigError(f"a report is of one run, of several runs (a comparison) or of one study; got "
                          f"{counts['run']} run(s) and {counts['study']} stud{'y' if counts['study'] == 1 else 'ies'}")
    target = Path(out) if out is not None else default
    target = target / REPORT if target.is_dir() else target
    atomic_write_text(target, text)
    return target
