"""Diffusion benchmark: a conditional diffusion model against a GAN and a VAE; its samplers, guidance and grids.

The diffusion model, the best GAN and a VAE are trained for the same wall-clock budget each and scored alike;
then the diffusion model's samplers, its guidance trade-off and sample grids.

    .venv/bin/python benchmarks/diffusion.py [--parts train samplers guidance grids] [--seconds 300 1200]
        [--data fashion-mnist|mnist5k] [--models diffusion gan-hinge vae-mlp] [--runs-dir runs/bench-diffusion]
        [--run DIR] [--device auto|cpu|cuda] [--samples 1000] [--sampler-samples 1000] [--ddpm-steps 1000]
        [--seed 0] [--threads N] [--name diffusion]

Prints a markdown table per part and writes benchmarks/results/NAME.json (NAME is --name, "diffusion" by
default, so that other budgets keep their own files) and PNGs benchmarks/results/NAME-*.png. Each part is
selectable (--parts; default all four) and its section of NAME.json is replaced when it runs while the other
sections are kept, so parts can run at different times and on different machines: e.g. train on a CPU, then
`--parts samplers guidance --run runs/bench-diffusion/fashion-mnist-1200s-diffusion --device cuda` on a GPU.
Every section records its machine (image_scoring.machine()), device and wall time. The trained runs stay in
--runs-dir (RUNS/DATA-BUDGETs-MODEL; kept so that later parts and the README's grids can reuse them).

Sample quality is always measured the same way: samples drawn with balanced labels (classes 0, 1, ..., K−1,
0, 1, ...: every class equally) from a CPU generator seeded with 0, scored against the whole test split in
genlab's feature-net space (genlab.eval.images: Fréchet distance FD, KID, precision, recall; not Inception
FID, so not comparable with published numbers), plus the mean per-label accuracy: the feature net's
`classify` of each sample against the label it was drawn for, averaged per class, then over classes.
Sampling speed is images/s of one timed call over all the samples (after a small warm-up call); NFE is the
network evaluations per image, counted with a forward hook on the denoiser (guidance runs the conditional and
the null label together, so it counts twice).

1. train: Fashion-MNIST (--data, skipped with a note when /usr/share/datasets/fashion-mnist is absent;
   mnist5k for quick checks), class-conditional. At each budget of --seconds, three models are trained for
   that many seconds each (`max_seconds`, the learning-rate schedule following time) with genlab.train:
   "diffusion" (the model's defaults, `genlab models show diffusion`, with the DIFFUSION overrides below),
   "gan-hinge" (benchmarks/gan.py's best GAN: DCGAN, hinge loss, spectral norm, its hyper-parameters, made
   conditional) and "vae-mlp" (benchmarks/vae.py's MLP VAE, made conditional). Each is scored on --samples
   samples (default 1000). The diffusion model samples with its default sampler, steps and guidance (recorded
   per row). Every model is trained with seed --seed (0) and scored with the weights genlab.load loads, those
   of its best validation loss (a GAN's: its sample FD in pooled pixel space; recorded as weights_step).
   Train images/s is steps × batch size / training seconds (which include the periodic validation, as the
   run's summary counts them). The real-data FD (1000 training images against the test split: what a perfect
   model would get with 1000 samples) is the floor. A model whose training or scoring fails gets its error in
   its row; the rest goes on.
2. samplers: on the longest-budget diffusion run (or --run): DDPM-1000, DDIM-100/50/20/10 (η = the run's, 0
   by default: deterministic), DPM-Solver++(2M)-20/10, all with the same --sampler-samples labels and seed and
   the run's default guidance; FD and speed as ratios to DDPM-1000. The goal: DPM-Solver++-20 within 10 % of
   DDPM-1000's FD at 40× its speed or more. DDPM-1000 is 1000 network passes (2000 with guidance) per image,
   hours for 1000 images on a CPU: --sampler-samples shrinks the count, --ddpm-steps caps the reference's
   steps (the row is then DDPM-N and the ratios are to it; 0 drops it), and progress is printed as it goes.
3. guidance: w = 0, 1, 2, 3, 5, 8 (ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅), Ho & Salimans 2022; w = 0 is the plain
   conditional model) with DPM-Solver++-20 on --sampler-samples samples: FD against mean per-label accuracy,
   the fidelity / diversity trade-off of Ho & Salimans' Fig. 1, plotted to NAME-guidance.png.
4. grids (same run as 2., its default sampling): NAME-classes.png (10 samples per class, one class per row),
   NAME-ddim-steps.png (the same noise and labels through deterministic DDIM with 5, 10, 20, 50 and 100 steps,
   one row each), NAME-sdedit.png (per row: a test image of one class, then SDEdit (Meng et al. 2022) to another
   class at strengths 0.3, 0.5, 0.7, 0.9), NAME-inpaint.png (per row: a test image, the image with its right
   half masked, then that half inpainted with seeds 0-5, given the image's own label).
The train part also saves each model's first 100 samples (one class per column) as NAME-DATA-BUDGETs-MODEL.png.
"""

import argparse
import dataclasses
import io
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import genlab
from gan import MODELS as GAN_MODELS  # benchmarks/gan.py's GANs: architecture and training options
from genlab.checkpoint import WEIGHTS, RunDir, atomic_write_bytes, atomic_write_json
from genlab.data.images import FASHION_DIR, from_model_range, save_image_grid, to_model_range
from genlab.distributed import pick_device
from genlab.eval.images import feature_net, image_metrics
from genlab.tasks.images import IMAGE_GEN, balanced_labels, generate_uint8
from image_scoring import METRIC_KEYS, METRIC_SAMPLES, machine
from vae import MLP as VAE_MLP  # benchmarks/vae.py's mlp run: architecture and training options
from vae import TRAIN as VAE_TRAIN

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("train", "samplers", "guidance", "grids")
DATASETS = {"mnist5k": None, "fashion-mnist": FASHION_DIR}  # name -> folder that must exist (None: built in)

# The diffusion model's options where they differ from its defaults (`genlab models show diffusion`): tune here.
# max_steps is out of the way so that the time budget (max_seconds) ends training. bf16 autocast: on a CPU with
# AVX512-BF16 the U-Net trains about 1.8× faster than in fp32 (157 vs 89 images/s measured on this machine); the
# GAN and VAE, whose steps are not autocast, train in fp32.
DIFFUSION = {"conditional": True, "max_steps": 10_000_000, "log_interval": 50, "precision": "bf16"}
MODELS = {  # name -> (genlab model family, options, label in the tables)
    "diffusion": ("diffusion", DIFFUSION, "diffusion U-Net"),
    "gan-hinge": ("gan", GAN_MODELS["hinge"][1] | {"conditional": True}, "DCGAN hinge + SN"),
    "vae-mlp": ("vae", VAE_MLP | VAE_TRAIN | {"conditional": True}, "MLP VAE (Bernoulli)"),
}
SAMPLERS = [("ddpm", 1000, None), ("ddim", 100, None), ("ddim", 50, None), ("ddim", 20, None), ("ddim", 10, None),
            ("dpm-solver++", 20, None), ("dpm-solver++", 10, None),
            ("ddim", 20, "linspace"), ("dpm-solver++", 20, "trailing"), ("dpm-solver++", 20, "linspace"),
            ("dpm-solver++", 20, "logsnr"), ("dpm-solver++", 10, "trailing"), ("dpm-solver++", 10, "linspace"),
            ("dpm-solver++", 10, "logsnr")]  # (sampler, steps, timestep spacing or None: the sampler's default);
# the first is the reference of the ratios; the rows with a spacing compare the spacings of genlab.schedulers.base
GOAL = {"sampler": "dpm-solver++", "steps": 20, "max_fd_ratio": 1.10, "min_speedup": 40.0}
GUIDANCE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)
GUIDANCE_SAMPLING = {"sampler": "dpm-solver++", "steps": 20}
DDIM_STRIP_STEPS = (5, 10, 20, 50, 100)
SDEDIT_PAIRS = ((9, 7), (7, 5), (2, 4), (1, 3))  # (class of the test image, class it is edited to)
SDEDIT_STRENGTHS = (0.3, 0.5, 0.7, 0.9)
INPAINT_CLASSES = (0, 3, 7, 9)
INPAINT_SEEDS = 6
PROGRESS_EVERY_S = 30.0


# --- sampling and scoring ---

class Progress:
    """Counts the images the diffusion model's denoiser evaluates (a forward hook), for the NFE and for
    progress lines at most every PROGRESS_EVERY_S seconds; does nothing for models without a denoiser."""

    def __init__(self, model: Any, what: str, expected_evals: int | None):
        self.net = getattr(model, "sampling_net", None)
        self.what, self.expected = what, expected_evals
        self.evals = 0

    def __enter__(self) -> "Progress":
        self.t0 = self.last = time.perf_counter()
        self.handle = self.net.register_forward_hook(self._hook) if self.net is not None else None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self.handle.remove()

    def _hook(self, module: Any, inputs: tuple, output: Any) -> None:
        self.evals += len(inputs[0])
        now = time.perf_counter()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            elapsed = now - self.t0
            line = f"  {self.what}: {self.evals:,} network evaluations, {elapsed:.0f} s"
            if self.expected:
                done = self.evals / self.expected
                line += f" ({100 * done:.0f} % of {self.expected:,}; ~{elapsed * (1 - done) / done:.0f} s left)"
            print(line, flush=True)


def sampling_record(model: Any, options: dict[str, Any]) -> dict[str, Any] | None:
    """The sampler, steps, guidance and η a diffusion model samples with given `options`; None for the others."""
    if not hasattr(model, "sampling_options"):
        return None
    return dataclasses.asdict(model.sampling_options(**options))


def expected_nfe(model: Any, options: dict[str, Any]) -> int:
    record = sampling_record(model, options)
    if record is None:
        return 1
    return record["steps"] * (2 if model.conditional and record["guidance"] != 0 else 1)


def draw(model: Any, n: int, seed: int, what: str, **options: Any) -> dict[str, Any]:
    """`n` samples with balanced labels (conditional models) and `seed`, timed after a 2-image warm-up call.
    Returns the uint8 samples, their labels, seconds, images/s and the NFE measured by the hook."""
    labels = balanced_labels(n, model.artifacts["num_classes"]) if model.conditional else None
    warm = {**options, "steps": 2} if sampling_record(model, options) is not None else options
    generate_uint8(model, 2, None if labels is None else labels[:2], seed, **warm)
    with Progress(model, what, n * expected_nfe(model, options)) as progress:
        t0 = time.perf_counter()
        samples = generate_uint8(model, n, labels, seed, **options)
        seconds = time.perf_counter() - t0
    nfe = progress.evals / n if progress.net is not None else None
    return {"samples": samples, "labels": labels, "seconds": seconds, "images_per_s": n / seconds, "nfe": nfe}


class Scorer:
    """The data set and the (cached) feature net of each run's data, loaded once."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cache: dict[str, tuple[Any, Any]] = {}

    def data(self, model: Any) -> tuple[Any, Any]:
        key = json.dumps(model.run_config["data"], sort_keys=True)
        if key not in self.cache:
            ds = IMAGE_GEN.dataset(model.run_config)
            self.cache[key] = (ds, feature_net(ds, device=self.device))
        return self.cache[key]

    def score(self, model: Any, drawn: dict[str, Any]) -> dict[str, Any]:
        """The image metrics of drawn["samples"] against the whole test split, the mean per-label accuracy."""
        ds, net = self.data(model)
        samples, labels = drawn["samples"], drawn["labels"]
        metrics = image_metrics(samples, ds, labels=labels, split="test", net=net)
        out = {k: metrics.get(k) for k in METRIC_KEYS}
        if labels is not None:
            predicted = net.classify(samples)
            names = model.artifacts.get("class_names") or [str(k) for k in range(model.artifacts["num_classes"])]
            per_label = {names[k]: float((predicted[labels == k] == k).float().mean())
                         for k in range(len(names)) if (labels == k).any()}
            out |= {"label_accuracy_mean": statistics.mean(per_label.values()),
                    "label_accuracy": metrics.get("label_accuracy"), "per_label_accuracy": per_label}
        return out | {"samples_per_s": round(drawn["images_per_s"], 2), "sample_seconds": round(drawn["seconds"], 2),
                      "nfe": drawn["nfe"]}


# --- runs ---

def budget_name(seconds: float) -> str:
    return f"{seconds:g}s"


def run_path(runs_dir: Path, data: str, seconds: float, name: str) -> Path:
    return runs_dir / f"{data}-{budget_name(seconds)}-{name}"


def train_stats(run: Path) -> dict[str, Any]:
    """Steps, training seconds, batch size and train images/s of a run: from RUN/bench_train.json (written
    after training here), else from its config and last logged training record; and the step of the weights
    genlab.load loads (the best validation loss's)."""
    rd = RunDir(run)
    batch = rd.read_config()["train"]["batch_size"]
    saved = rd.file("bench_train.json")
    if saved.is_file():
        summary = json.loads(saved.read_text(encoding="utf-8"))
        steps, seconds = summary["steps"], summary["train_seconds"]
    else:
        last = [r for r in rd.read_metrics() if r.get("split") == "train" and "elapsed_s" in r]
        steps, seconds = (last[-1]["step"], last[-1]["elapsed_s"]) if last else (None, None)
    rate = round(steps * batch / seconds, 1) if steps and seconds else None
    scored = None
    if rd.file(WEIGHTS).is_file():
        from safetensors import safe_open

        with safe_open(str(rd.file(WEIGHTS)), framework="pt") as f:
            scored = (f.metadata() or {}).get("step")
    return {"steps": steps, "train_seconds": None if seconds is None else round(seconds, 1), "batch_size": batch,
            "train_images_per_s": rate, "weights_step": None if scored is None else int(scored)}


def param_counts(model: Any) -> dict[str, int]:
    if hasattr(model, "denoiser"):
        return {"params": sum(p.numel() for p in model.denoiser.parameters())}
    if hasattr(model, "G"):
        return {"params_g": sum(p.numel() for p in model.G.parameters()),
                "params_d": sum(p.numel() for p in model.D.parameters())}
    return {"params": sum(p.numel() for p in model.parameters())}


def load(run: Path, device: torch.device) -> Any:
    if not RunDir(run).file("config.json").is_file():
        raise FileNotFoundError(f"{run} holds no genlab run (no config.json); train it first (--parts train) "
                                "or name one with --run")
    return genlab.load(run, device=str(device))


def error_text(e: BaseException) -> str:
    traceback.print_exc()
    return f"{type(e).__name__}: {e}"


# --- the parts ---

def part_train(args: argparse.Namespace, scorer: Scorer) -> dict[str, Any]:
    """Train every model at every budget and score it; one row per (budget, model)."""
    rows, real = [], None
    for seconds in args.seconds:
        for name in args.models:
            family, options, label = MODELS[name]
            out = run_path(args.runs_dir, args.data, seconds, name)
            options = options | {"data": args.data, "max_seconds": seconds, "seed": args.seed,
                                 "device": str(args.device)}
            row: dict[str, Any] = {"budget_s": seconds, "model": name, "label": label, "family": family,
                                   "run_dir": str(out), "options": options}
            print(f"\n== train {name} on {args.data} for {seconds:g} s -> {out}", flush=True)
            t0 = time.perf_counter()
            try:
                summary = genlab.train(family, out, options, overwrite=True)
                atomic_write_json(RunDir(out).file("bench_train.json"),
                                  {k: summary[k] for k in ("steps", "train_seconds", "best_val", "interrupted")})
                model = load(out, args.device)
                row |= train_stats(out) | param_counts(model)
                config = model.run_config
                row |= {"model_config": config["model_config"], "train_config": config["train"],
                        "sampling": sampling_record(model, {})}
                drawn = draw(model, args.samples, 0, f"{name} sampling")
                grid = f"{args.name}-{args.data}-{budget_name(seconds)}-{name}.png"
                save_image_grid(drawn["samples"][:100], RESULTS / grid, nrow=10)
                row |= {"grid": grid, **scorer.score(model, drawn)}
                real = real or row.get("baseline_train_sample")
            except Exception as e:  # one failed model must not end the benchmark
                row["error"] = error_text(e)
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items()
                              if k not in ("options", "model_config", "train_config", "per_label_accuracy")}),
                  flush=True)
    return {"data": args.data, "budgets_s": args.seconds, "samples": args.samples, "seed": args.seed,
            "settings": {name: MODELS[name][1] for name in args.models}, "rows": rows, "real_data": real}


def part_samplers(model: Any, args: argparse.Namespace, scorer: Scorer) -> dict[str, Any]:
    configs = [(s, min(n, args.ddpm_steps) if s == "ddpm" else n, spacing) for s, n, spacing in SAMPLERS]
    configs = [c for c in configs if c[1] > 0]
    rows = []
    for sampler, steps, spacing in configs:
        what = f"{sampler}-{steps}" + (f" ({spacing})" if spacing else "")
        print(f"\n== sampler {what}: {args.sampler_samples} images", flush=True)
        row: dict[str, Any] = {"sampler": sampler, "steps": steps, "spacing": spacing or "default"}
        try:
            options = {"sampler": sampler, "steps": steps} | ({"spacing": spacing} if spacing else {})
            row["sampling"] = sampling_record(model, options)
            drawn = draw(model, args.sampler_samples, 0, what, **options)
            row |= scorer.score(model, drawn)
            print(f"  {what}: {drawn['seconds']:.1f} s, {drawn['images_per_s']:.2f} images/s, "
                  f"NFE {drawn['nfe']:g}, FD {row['fd']:.2f}", flush=True)
        except Exception as e:
            row["error"] = error_text(e)
        rows.append(row)
    ref = rows[0] if rows and rows[0]["sampler"] == "ddpm" and "error" not in rows[0] else None
    for r in rows:
        if ref is not None and "error" not in r:
            r["fd_ratio"] = r["fd"] / ref["fd"]
            r["speedup"] = r["samples_per_s"] / ref["samples_per_s"]
    goal_row = next((r for r in rows if r["sampler"] == GOAL["sampler"] and r["steps"] == GOAL["steps"]
                     and r["spacing"] == "default"), None)
    goal = dict(GOAL, reference=None if ref is None else f"ddpm-{ref['steps']}")
    if goal_row is not None and "fd_ratio" in goal_row:
        goal |= {"fd_ratio": goal_row["fd_ratio"], "speedup": goal_row["speedup"],
                 "met": goal_row["fd_ratio"] <= GOAL["max_fd_ratio"] and goal_row["speedup"] >= GOAL["min_speedup"]}
    return {"samples": args.sampler_samples, "seed": 0, "ddpm_steps": args.ddpm_steps, "rows": rows, "goal": goal}


def part_guidance(model: Any, args: argparse.Namespace, scorer: Scorer) -> dict[str, Any]:
    if not model.conditional:
        return {"skipped": "the run is unconditional: guidance needs a conditional model"}
    rows = []
    for w in GUIDANCE_SCALES:
        what = f"guidance w = {w:g}"
        print(f"\n== {what}: {args.sampler_samples} images", flush=True)
        row: dict[str, Any] = {"guidance": w}
        try:
            options = GUIDANCE_SAMPLING | {"guidance": w}
            row["sampling"] = sampling_record(model, options)
            row |= scorer.score(model, draw(model, args.sampler_samples, 0, what, **options))
            print(f"  {what}: FD {row['fd']:.2f}, mean per-label accuracy {row['label_accuracy_mean']:.3f}",
                  flush=True)
        except Exception as e:
            row["error"] = error_text(e)
        rows.append(row)
    plot = f"{args.name}-guidance.png"
    plot_guidance([r for r in rows if "error" not in r], RESULTS / plot, model)
    return {"samples": args.sampler_samples, "seed": 0, "sampling": GUIDANCE_SAMPLING, "rows": rows, "plot": plot}


def plot_guidance(rows: list[dict[str, Any]], path: Path, model: Any) -> None:
    """FD (y) against mean per-label accuracy (x), one point per w, labelled, joined in order of w."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    xs, ys = [r["label_accuracy_mean"] for r in rows], [r["fd"] for r in rows]
    ax.plot(xs, ys, marker="o", linewidth=1.2)
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(f"w = {r['guidance']:g}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xlabel("mean per-label accuracy of the samples (feature net) →  better class fidelity")
    ax.set_ylabel("FD against the test split (feature net) ↓")
    source = model.artifacts.get("source", "")
    n = rows[0]["n_generated"] if rows else 0
    ax.set_title(f"classifier-free guidance, DPM-Solver++ 20 steps, {n} samples\n{source}", fontsize=10)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def first_test_images(model: Any, scorer: Scorer, classes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of each class in `classes` (uint8) and the classes."""
    ds, _ = scorer.data(model)
    images, labels = ds.splits["test"], ds.labels["test"]
    picks = [int((labels == k).nonzero()[0]) for k in classes]
    return images[picks], torch.tensor(classes)


def part_grids(model: Any, args: argparse.Namespace, scorer: Scorer) -> dict[str, Any]:
    out: dict[str, Any] = {"sampling": sampling_record(model, {})}
    K = model.artifacts["num_classes"]
    cond = model.conditional
    names = model.artifacts.get("class_names") or [str(k) for k in range(K)]
    pr = model.pixel_range

    def grid(key: str, make: Any) -> None:
        path = f"{args.name}-{key}.png"
        print(f"\n== grid {path}", flush=True)
        t0 = time.perf_counter()
        try:
            images, nrow, about = make()
            save_image_grid(images, RESULTS / path, nrow=nrow)
            out[key] = {"file": path, "seconds": round(time.perf_counter() - t0, 1), **about}
        except Exception as e:
            out[key] = {"error": error_text(e)}

    def classes() -> tuple[torch.Tensor, int, dict]:
        labels = torch.arange(K).repeat_interleave(10) if cond else None
        images = generate_uint8(model, 10 * K if cond else 100, labels, seed=0)
        return images, 10, {"rows": "one class per row" if cond else "unconditional", "classes": names}

    def ddim_strip() -> tuple[torch.Tensor, int, dict]:
        labels = torch.arange(10) % K if cond else None
        rows = [generate_uint8(model, 10, labels, seed=0, sampler="ddim", steps=s, eta=0.0) for s in DDIM_STRIP_STEPS]
        return torch.cat(rows), 10, {"rows": [f"ddim-{s} (eta 0)" for s in DDIM_STRIP_STEPS], "seed": 0}

    def sdedit() -> tuple[torch.Tensor, int, dict]:
        src, _ = first_test_images(model, scorer, tuple(a for a, _ in SDEDIT_PAIRS))
        target = torch.tensor([b for _, b in SDEDIT_PAIRS]) if cond else None
        x = to_model_range(src, pr)
        edits = [from_model_range(model.edit(x, target, s, None, torch.Generator().manual_seed(0)).float().cpu(),
                                  pr) for s in SDEDIT_STRENGTHS]
        rows = [torch.cat([src[i:i + 1]] + [e[i:i + 1] for e in edits]) for i in range(len(src))]
        about = {"rows": [f"{names[a]} -> {names[b]}" for a, b in SDEDIT_PAIRS],
                 "columns": ["test image"] + [f"strength {s:g}" for s in SDEDIT_STRENGTHS], "seed": 0}
        return torch.cat(rows), 1 + len(SDEDIT_STRENGTHS), about

    def inpaint() -> tuple[torch.Tensor, int, dict]:
        src, labels = first_test_images(model, scorer, INPAINT_CLASSES)
        size = src.shape[-1]
        mask = torch.zeros(1, 1, size, size)
        mask[..., size // 2:] = 1  # 1 = generate: the right half
        x = to_model_range(src, pr)
        outs = [from_model_range(model.edit(x, labels if cond else None, 1.0, mask,
                                            torch.Generator().manual_seed(seed)).float().cpu(), pr)
                for seed in range(INPAINT_SEEDS)]
        masked = (src.float() * (1 - mask)).to(torch.uint8)
        rows = [torch.cat([src[i:i + 1], masked[i:i + 1]] + [o[i:i + 1] for o in outs]) for i in range(len(src))]
        about = {"rows": [names[k] for k in INPAINT_CLASSES], "columns": ["test image", "right half masked"]
                 + [f"seed {s}" for s in range(INPAINT_SEEDS)], "label": "the image's own" if cond else None}
        return torch.cat(rows), 2 + INPAINT_SEEDS, about

    grid("classes", classes)
    grid("ddim-steps", ddim_strip)
    grid("sdedit", sdedit)
    grid("inpaint", inpaint)
    return out


# --- tables ---

def num(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def train_table(section: dict[str, Any]) -> str:
    lines = ["| budget | model | steps | FD ↓ | KID ↓ | precision ↑ | recall ↑ | label acc ↑ | train img/s "
             "| sample img/s | sampling |", "|" + "---|" * 11]
    for r in section["rows"]:
        head = f"| {budget_name(r['budget_s'])} | {r['label']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error'][:200].replace('|', '/')} |" + " |" * 8)
            continue
        s = r.get("sampling")
        how = f"{s['sampler']} {s['steps']} steps, w = {s['guidance']:g}" if s else "one pass"
        lines.append(f"{head} {num(r['steps'], 0)} | {r['fd']:.2f} | {r['kid']:.3f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {num(r.get('label_accuracy_mean'), 3)} | "
                     f"{num(r['train_images_per_s'], 0)} | {num(r['samples_per_s'], 1)} | {how} |")
    real = section.get("real_data")
    if real:
        lines.append(f"| – | real data ({real['n']} training images) | – | {real['fd']:.2f} | {real['kid']:.3f} | "
                     f"{real['precision']:.3f} | {real['recall']:.3f} | – | – | – | – |")
    return "\n".join(lines)


def sampler_table(section: dict[str, Any]) -> str:
    ref = section["goal"].get("reference") or "DDPM"
    lines = [f"| sampler | steps | spacing | NFE | FD ↓ | FD / {ref} | img/s | speed × {ref} | label acc ↑ |",
             "|" + "---|" * 9]
    for r in section["rows"]:
        spacing = r.get("spacing", "default")
        if "error" in r:
            lines.append(f"| {r['sampler']} | {r['steps']} | {spacing} | failed: "
                         f"{r['error'][:200].replace('|', '/')} |" + " |" * 5)
            continue
        lines.append(f"| {r['sampler']} | {r['steps']} | {spacing} | {num(r['nfe'], 0)} | {r['fd']:.2f} | "
                     f"{num(r.get('fd_ratio'), 3)} | {num(r['samples_per_s'], 2)} | {num(r.get('speedup'), 1)} | "
                     f"{num(r.get('label_accuracy_mean'), 3)} |")
    g = section["goal"]
    if "met" in g:
        lines.append(f"\ngoal ({g['sampler']}-{g['steps']} within {100 * (g['max_fd_ratio'] - 1):.0f} % of "
                     f"{ref}'s FD at ≥ {g['min_speedup']:g}× its speed): FD ratio {g['fd_ratio']:.3f}, "
                     f"speed-up {g['speedup']:.1f}× -> {'met' if g['met'] else 'not met'}"
                     + ("" if ref == "ddpm-1000" else " (the goal is stated against DDPM-1000; this reference is "
                        "capped by --ddpm-steps)"))
    return "\n".join(lines)


def guidance_table(section: dict[str, Any]) -> str:
    if "skipped" in section:
        return f"guidance: skipped ({section['skipped']})"
    lines = ["| w | NFE | FD ↓ | KID ↓ | precision ↑ | recall ↑ | mean per-label acc ↑ |", "|" + "---|" * 7]
    for r in section["rows"]:
        if "error" in r:
            lines.append(f"| {r['guidance']:g} | failed: {r['error'][:200].replace('|', '/')} |" + " |" * 5)
            continue
        lines.append(f"| {r['guidance']:g} | {num(r['nfe'], 0)} | {r['fd']:.2f} | {r['kid']:.3f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['label_accuracy_mean']:.3f} |")
    return "\n".join(lines) + f"\n\nplot: benchmarks/results/{section['plot']}"


def grids_table(section: dict[str, Any]) -> str:
    lines = ["| grid | file |", "|---|---|"]
    for key in ("classes", "ddim-steps", "sdedit", "inpaint"):
        g = section.get(key, {})
        lines.append(f"| {key} | {'benchmarks/results/' + g['file'] if 'file' in g else g.get('error', '–')} |")
    return "\n".join(lines)


TABLES = {"train": train_table, "samplers": sampler_table, "guidance": guidance_table, "grids": grids_table}


# --- the command ---

def device_record(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to run (default: all)")
    parser.add_argument("--seconds", nargs="+", type=float, default=[300.0, 1200.0],
                        help="training budgets, seconds per model (train; the longest names the default run)")
    parser.add_argument("--data", choices=sorted(DATASETS), default="fashion-mnist")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="models of the train part (default: all)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-diffusion",
                        help="where the train part keeps its runs: RUNS/DATA-BUDGETs-MODEL")
    parser.add_argument("--run", type=Path, default=None,
                        help="diffusion run of the samplers, guidance and grids parts (default: the longest-budget "
                             "diffusion run in --runs-dir)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--samples", type=int, default=METRIC_SAMPLES, help="samples scored per model (train)")
    parser.add_argument("--sampler-samples", type=int, default=METRIC_SAMPLES,
                        help="samples per row of the samplers and guidance parts")
    parser.add_argument("--ddpm-steps", type=int, default=1000,
                        help="steps of the DDPM reference row (cap it on slow CPUs; 0 drops the row)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (sampling always uses seed 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--name", default="diffusion", help="results/NAME.json and results/NAME-*.png")
    args = parser.parse_args()
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error("--name takes letters, digits, - and _")
    if min(args.samples, args.sampler_samples) < 4 or min(args.seconds) <= 0 or args.ddpm_steps < 0:
        parser.error("--samples and --sampler-samples must be at least 4, --seconds positive, --ddpm-steps >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = pick_device(args.device)
    args.runs_dir = args.runs_dir.resolve()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / f"{args.name}.json"
    results: dict[str, Any] = {}
    if out_path.is_file():
        try:
            results = json.loads(out_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            results = {}
    results["name"] = args.name
    results.setdefault("parts", {})
    scorer = Scorer(args.device)
    print(f"device: {device_record(args.device)}; torch threads: {torch.get_num_threads()}", flush=True)
    timings: dict[str, float] = {}
    model = None
    run = args.run or run_path(args.runs_dir, args.data, max(args.seconds), "diffusion")
    for part in [p for p in PARTS if p in args.parts]:
        t0 = time.perf_counter()
        section: dict[str, Any]
        if DATASETS[args.data] is not None and not Path(DATASETS[args.data]).is_dir() and \
                (part == "train" or args.run is None):
            section = {"skipped": f"{args.data}: {DATASETS[args.data]} is absent "
                                  "(apt-get install dataset-fashion-mnist)"}
        elif part == "train":
            section = part_train(args, scorer)
        else:
            try:
                if model is None:
                    model = load(run, args.device)
                    print(f"\nsampling run: {run} ({model.run_config['model']}, data "
                          f"{model.artifacts.get('source')})", flush=True)
                section = {"run": str(run), "data": model.artifacts.get("source"), "train": train_stats(run)}
                section |= {"samplers": part_samplers, "guidance": part_guidance, "grids": part_grids}[part](
                    model, args, scorer)
            except Exception as e:  # one failed part must not end the benchmark
                section = {"run": str(run), "error": error_text(e)}
        timings[part] = round(time.perf_counter() - t0, 1)
        section |= {"machine": machine(), "device": device_record(args.device), "wall_seconds": timings[part]}
        results["parts"][part] = section
        atomic_write_json(out_path, results)
        print(f"\n== {part} done in {timings[part]:.0f} s; wrote {out_path}", flush=True)
    print()
    for part, seconds in timings.items():
        section = results["parts"][part]
        print(f"### {part} ({seconds:.0f} s on {section['device']})\n")
        if "skipped" in section and part != "guidance":
            print(f"skipped: {section['skipped']}\n")
        elif "error" in section:
            print(f"failed: {section['error']}\n")
        else:
            if "run" in section:
                t = section["train"]
                print(f"run: {section['run']} ({section['data']}; {t['steps']} steps in {t['train_seconds']} s)\n")
            print(TABLES[part](section) + "\n")
    print(f"machine: {machine()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
