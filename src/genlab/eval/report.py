"""The evaluation report of a run: RUN/eval.md with the metrics table, pictures and training curves.

Shared by every image generator (VAEs, GANs, ...); it knows nothing of models:

    plot_curves(records, path)                  metrics.jsonl records -> PNG of the loss curves (Agg backend)
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


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "training curves") -> Path | None:
    """Loss curves of train and val records into a PNG at `path`; None when there is nothing to plot."""
    keys = curve_keys(records)
    series = {}
    for split in ("train", "val"):
        for k in keys:
            pts = [(r["step"], r[k]) for r in records
                   if r.get("split") == split and isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            if pts:
                series[f"{split} {k}"] = pts
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, pts in series.items():
        steps, values = zip(*pts, strict=True)
        ax.plot(steps, values, label=name, marker="o" if name.startswith("val") else None, markersize=3,
                linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


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
