"""The evaluation report of a run: RUN/eval.md with the metrics table, pictures and training curves.

Shared by every image generator (VAEs, GANs, ...); it knows nothing of models:

    plot_curves(records, path)                  metrics.jsonl records -> PNG of the loss curves (Agg backend)
    curves_png(records) -> bytes                the same PNG in memory (genlab.reports inlines it in HTML)
    comparison_png({label: records}) -> bytes   validation and train loss of several runs, one line per run
    metrics_table(report) -> str                a flat report dict as a markdown table (nested dicts as rows)
    write_report(run_dir, report, figures)      eval.md beside eval.json, with the figures and the curves

Curves: every numeric key containing "loss" or "elbo" in the train and val records of metrics.jsonl
({"step", "split": "train"|"val", "loss", ...}), one line per (split, key), against the step.
"""

import io
import math
from pathlib import Path
from typing import Any

from genlab.checkpoint import METRICS, RunDir, atomic_write_bytes, atomic_write_text

CURVES = "loss_curves.png"


def curve_keys(records: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if ("loss" in k or "elbo" in k) and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.setdefault(k, None)
    return list(keys)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()


def series(records: list[dict[str, Any]], split: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in the records of `split`, finite values only."""
    return [(r["step"], r[key]) for r in records
            if r.get("split") == split and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def curves_png(records: list[dict[str, Any]], title: str = "training curves") -> bytes | None:
    """Loss curves of train and val records as PNG bytes; None when there is nothing to plot."""
    keys = curve_keys(records)
    lines = {f"{split} {k}": pts for split in ("train", "val") for k in keys if (pts := series(records, split, k))}
    if not lines:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=100)
    for name, pts in lines.items():
        steps, values = zip(*pts, strict=True)
        ax.plot(steps, values, label=name, marker="o" if name.startswith("val") or len(pts) == 1 else None,
                markersize=3, linewidth=1.2)  # a lone point shows only as a marker
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return figure_png(fig)


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "training curves") -> Path | None:
    """Loss curves of train and val records into a PNG at `path`; None when there is nothing to plot."""
    png = curves_png(records, title)
    if png is None:
        return None
    atomic_write_bytes(Path(path), png)
    return Path(path)


def comparison_png(runs: dict[str, list[dict[str, Any]]], key: str = "loss") -> bytes | None:
    """`key` of several runs against the step, validation left and train right, one line per run (the same
    colour in both panels); None when no run logged it."""
    panels = [(split, {label: pts for label, records in runs.items() if (pts := series(records, split, key))})
              for split in ("val", "train")]
    panels = [(split, lines) for split, lines in panels if lines]
    if not panels:
        return None
    fig, axes = pyplot().subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=100, squeeze=False)
    colours = {label: f"C{i % 10}" for i, label in enumerate(runs)}
    for ax, (split, lines) in zip(axes[0], panels, strict=True):
        for label, pts in lines.items():
            steps, values = zip(*pts, strict=True)
            ax.plot(steps, values, label=label, color=colours[label], linewidth=1.2,
                    marker="o" if split == "val" or len(pts) == 1 else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{'validation' if split == 'val' else 'train'} {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure_png(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v).replace("|", "\\|")


def metrics_table(report: dict[str, Any]) -> str:
    """| metric | value | rows; a nested dict becomes one row per entry, named `key[entry]`."""
    rows = ["| metric | value |", "|---|---|"]
    for k, v in report.items():
        if isinstance(v, dict):
            rows += [f"| {k}[{_fmt(kk)}] | {_fmt(vv)} |" for kk, vv in v.items()]
        else:
            rows.append(f"| {k} | {_fmt(v)} |")
    return "\n".join(rows)


def write_report(run_dir: Path, report: dict[str, Any], figures: list[tuple[str, Path]] | None = None,
                 notes: list[str] | None = None) -> Path:
    """Write RUN/eval.md: a title, `notes` (one paragraph each), the metrics table, `figures` (caption, PNG
    path inside the run directory) and the loss curves read from RUN/metrics.jsonl. Returns its path."""
    run_dir = Path(run_dir)
    title = f"# Evaluation of {run_dir.name}"
    if "model" in report:
        title += f" ({report['model']})"
    parts = [title, ""]
    for note in notes or []:
        parts += [note, ""]
    parts += ["## Metrics", "", metrics_table(report), ""]
    for caption, path in figures or []:
        parts += [f"## {caption}", "", f"![{caption}]({Path(path).relative_to(run_dir).as_posix()})", ""]
    curves = plot_curves(RunDir(run_dir).read_metrics(), run_dir / CURVES) if (run_dir / METRICS).is_file() else None
    if curves is not None:
        parts += ["## Training curves", "", f"![training curves]({CURVES})", ""]
    path = run_dir / "eval.md"
    atomic_write_text(path, "\n".join(parts))
    return path
