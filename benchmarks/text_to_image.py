"""Text-to-image benchmark: text encoders × text-conditioned image models, each trained for one CPU budget, scored
on prompts the models never saw.

    .venv/bin/python benchmarks/text_to_image.py [--parts objects scenes] [--seconds 180] [--scene-seconds 300]
        [--encoders scratch minilm lm] [--models diffusion-xattn diffusion-pooled cvae cgan]
        [--scene-models diffusion-xattn-p2 diffusion-pooled-p2] [--objects fashion-mnist-captions]
        [--scenes mnist5k-scenes] [--lm-seconds 120] [--samples 500] [--images-per-prompt 2] [--sample-steps 10]
        [--runs-dir runs/bench-t2i] [--seed 0] [--threads N] [--batch-size N] [--reuse] [--name text_to_image]

Prints a markdown table per part and writes benchmarks/results/NAME.json (rows of other data sets, encoders,
models or budgets kept) and a labelled grid of each part's best run, benchmarks/results/NAME-PART.png
(NAME-PART-DATA.png for a data set other than the part's default; prompt on the left, held-out prompts
marked). Runs stay in --runs-dir (RUNS/DATA-ENCODER-MODEL, with their eval.json and eval.md).

Encoders (`--text-encoder`): "scratch" (a 2-layer Transformer trained with the image model), "minilm" (the
frozen pretrained all-MiniLM-L6-v2 of the genlab[minilm] extra) and "lm" (a genlab character-level Transformer
language model trained for --lm-seconds on the data set's training captions, one per line, then frozen: the
toolkit's own LM feeding its image model). Models: "diffusion-xattn" (the diffusion U-Net with cross-attention
to the prompt's tokens, its defaults plus DIFFUSION below), "diffusion-pooled" (the same without
cross-attention: the pooled prompt embedding alone), "diffusion-xattn-pos" (cross-attention with the U-Net's
learned position embedding), "diffusion-xattn-pos-a2" (that with attention in the two lowest levels),
"diffusion-xattn-p2" (cross-attention, each 2×2 patch of pixels folded into channels: a U-Net at half the
resolution, about four times the images per second on a CPU; the scenes' default with "diffusion-pooled-p2", the
same without cross-attention; "diffusion-xattn-p2-pos" adds the position embedding; "-ln" after it draws the
training noise levels from a logit-normal density, "-ground" adds the grounding loss, `--grounding-weight`
GROUNDING, and "-ground-ln" both; "diffusion-xattn-only-p2-pos-ground-ln" is that last one with the prompt
entering by cross-attention alone, `--pooled-prompt false`; "diffusion-pooled-p2-pos-ln" is the pooled-only
baseline of those: no cross-attention, hence nothing to ground), "cvae"
(benchmarks/vae.py's MLP VAE) and "cgan" (benchmarks/gan.py's DCGAN hinge + spectral norm), the last two
conditioned on the pooled embedding. Scenes
default to mnist5k-scenes, whose judge can read the goal: its region classifier reads 96% of real test scene
halves right and 90% of the real held-out pictures wholly right, against 58% on fashion-mnist-scenes, where
shirts, pullovers and coats look alike; scene U-Nets train without dropout (SCENE_OPTIONS).

Each run trains for the budget (`max_seconds`; steps and images/s recorded beside it), then `genlab.evaluate`
scores the weights genlab.load loads (see genlab.tasks.images.ImageGenTask.evaluate and genlab.eval.text_image):
  - on the test split's captions (the first caption of each of --samples test images): FD / KID / precision /
    recall in the feature net's space, the label accuracy of those images (the feature net's class against the
    caption's class), and CLIPScore / R-precision (1 + 99 test captions) of the data set's own small CLIP;
  - on the held-out prompts of the built-in set (--images-per-prompt images each): "phrasing" (new templates),
    "synonym" (nouns no caption uses), "combination" (scene pictures no training scene shows): class accuracy,
    attribute agreement (the fraction of low/high attribute pairs of one class ordered right by the measured
    attribute), relation accuracy (both items classified right in their regions; "swapped": both drawn, each in
    the other's region), CLIPScore and R-precision
    of each image with the prompt's canonical wording, and the same scores of matching real test images (the
    judges' ceiling).
Diffusion models sample with DPM-Solver++ (--sample-steps, 10: as good as 20 in benchmarks/diffusion.py's
sampler table) and guidance w = DIFFUSION["guidance"]; the likelihood bounds are computed on a small subset
(LIKELIHOOD) to keep the evaluation short (sampling, not training, dominates a CPU benchmark's time).
"""

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import genlab
from gan import GAN as GAN_OPTIONS  # benchmarks/gan.py's DCGAN options
from genlab.checkpoint import atomic_write_json
from genlab.data.images import FASHION_DIR, ImageDataConfig, load_images
from image_scoring import device_name, machine
from vae import MLP as VAE_MLP  # benchmarks/vae.py's mlp run: architecture and training options
from vae import TRAIN as VAE_TRAIN

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

DIFFUSION = {"max_steps": 10_000_000, "log_interval": 50, "precision": "bf16", "guidance": 2.0}
P2_POS = DIFFUSION | {"cross_attention": True, "patch_size": 2, "position_embedding": True}
LOGIT_NORMAL = {"timestep_sampling": "logit-normal"}  # mean 0, std 1: Esser et al.'s choice
GROUNDING = 0.1  # weight of the grounding loss (scenes: each item phrase read from its half; 1.0 was worse)
PIXEL_GROUNDING = 0.05  # weight of TokenCompose's pixel term: positions in an item's half read its phrase
MODELS = {  # name -> (genlab model family, options, label in the tables)
    "diffusion-xattn": ("diffusion", DIFFUSION | {"cross_attention": True}, "diffusion, cross-attention"),
    "diffusion-xattn-pos": ("diffusion", DIFFUSION | {"cross_attention": True, "position_embedding": True},
                            "diffusion, cross-attention + position embedding"),
    "diffusion-xattn-pos-a2": ("diffusion", DIFFUSION | {"cross_attention": True, "position_embedding": True,
                                                         "attention_levels": 2},
                               "diffusion, cross-attention + position embedding, attention in two levels"),
    "diffusion-xattn-p2": ("diffusion", DIFFUSION | {"cross_attention": True, "patch_size": 2},
                           "diffusion, cross-attention, 2×2 pixels folded into channels"),
    "diffusion-xattn-p2-pos": ("diffusion", P2_POS, "diffusion, cross-attention + position embedding, 2×2 patches"),
    "diffusion-xattn-p2-pos-ln": ("diffusion", P2_POS | LOGIT_NORMAL, "diffusion, cross-attention + position "
                                                                      "embedding, 2×2 patches, logit-normal timesteps"),
    "diffusion-xattn-p2-pos-ground": ("diffusion", P2_POS | {"grounding_weight": GROUNDING},
                                      "diffusion, cross-attention + position embedding, 2×2 patches, grounding loss"),
    "diffusion-xattn-p2-pos-ground-ln": ("diffusion", P2_POS | LOGIT_NORMAL | {"grounding_weight": GROUNDING},
                                         "diffusion, cross-attention + position embedding, 2×2 patches, grounding "
                                         "loss, logit-normal timesteps"),
    "diffusion-xattn-p2-pos-groundpx-ln": ("diffusion", P2_POS | LOGIT_NORMAL | {
        "grounding_weight": GROUNDING, "grounding_pixel_weight": PIXEL_GROUNDING},
        "diffusion, cross-attention + position embedding, 2×2 patches, grounding loss with its pixel term, "
        "logit-normal timesteps"),
    "diffusion-xattn-only-p2-pos-ground-ln": ("diffusion", P2_POS | LOGIT_NORMAL | {"grounding_weight": GROUNDING,
                                                                                  "pooled_prompt": False},
                                              "diffusion, cross-attention alone (no pooled prompt) + position "
                                              "embedding, 2×2 patches, grounding loss, logit-normal timesteps"),
    "diffusion-pooled-p2-pos-ln": ("diffusion", P2_POS | LOGIT_NORMAL | {"cross_attention": False},
                                   "diffusion, pooled only, position embedding, 2×2 patches, logit-normal timesteps"),
    "diffusion-pooled": ("diffusion", DIFFUSION | {"cross_attention": False}, "diffusion, pooled only"),
    "diffusion-pooled-p2": ("diffusion", DIFFUSION | {"cross_attention": False, "patch_size": 2},
                            "diffusion, pooled only, 2×2 pixels folded into channels"),
    "cvae": ("vae", VAE_MLP | VAE_TRAIN, "MLP VAE, pooled"),
    "cgan": ("gan", GAN_OPTIONS | {"loss": "hinge", "lr": 2e-4, "spectral_norm": True}, "DCGAN hinge + SN, pooled"),
}
ENCODERS = ("scratch", "minilm", "lm")
LM = {"tokenizer": "char", "seq_len": 64, "n_layer": 2, "n_head": 4, "n_embd": 128, "batch_size": 64, "lr": 3e-3,
      "warmup_steps": 100, "max_steps": 10_000_000, "eval_interval": 500}
LIKELIHOOD = {"vae": {"iwae_samples": 8}, "diffusion": {"likelihood_images": 64, "likelihood_timesteps": 20}}
PARTS = {"objects": "fashion-mnist-captions", "scenes": "mnist5k-scenes"}  # part -> default data set
# Scenes' U-Nets train without dropout: its Bernoulli masks take 15% of a 48x48 step on the CPU, and at these
# budgets the model underfits 9,000+ scenes anyway.
SCENE_OPTIONS = {"diffusion": {"dropout": 0.0}}
GRID_PROMPTS = 8  # prompts per kind in the labelled grids
GRID_IMAGES = 4


def needs_fashion(data: str) -> bool:
    return data.startswith("fashion-mnist")


def train_lm(data: str, runs: Path, seconds: float, seed: int) -> Path:
    """A character-level Transformer LM on the data set's training captions (one per line), reused if present."""
    out = runs / f"{data}-lm"
    if (out / "model.safetensors").is_file():
        return out
    ds = load_images(ImageDataConfig(data=data))
    text = runs / f"{data}-train-captions.txt"
    text.parent.mkdir(parents=True, exist_ok=True)
    text.write_text("\n".join(c for caps in ds.captions["train"] for c in caps) + "\n", encoding="utf-8")
    print(f"training the caption language model ({seconds:.0f} s) ...", flush=True)
    genlab.train("transformer", out, LM | {"data": str(text), "max_seconds": seconds, "seed": seed}, overwrite=True)
    return out


def run_one(data: str, encoder: str, model: str, seconds: float, args: argparse.Namespace, lm: Path | None,
            part: str) -> dict:
    family, options, _ = MODELS[model]
    if part == "scenes":
        options = options | SCENE_OPTIONS.get(family, {})
    if args.batch_size:
        options = options | {"batch_size": args.batch_size}
    out = args.runs_dir / f"{data}-{encoder}-{model}"
    row: dict[str, Any] = {"data": data, "encoder": encoder, "model": model, "seconds": seconds}
    try:
        text_encoder = str(lm) if encoder == "lm" else encoder
        if args.reuse and (out / "model.safetensors").is_file():
            summary = trained_summary(out)
        else:
            summary = genlab.train(family, out, options | {"data": data, "text_encoder": text_encoder,
                                                           "max_seconds": seconds, "seed": args.seed}, overwrite=True)
        batch = int(options.get("batch_size", 64))
        row |= {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "batch_size": batch,
                "train_images_per_s": summary["steps"] * batch / summary["train_seconds"]}
        extra = LIKELIHOOD.get(family, {}) | ({"steps": args.sample_steps} if family == "diffusion" else {})
        t0 = time.time()
        report = genlab.evaluate(out, num_samples=args.samples, images_per_prompt=args.images_per_prompt,
                                 seed=args.seed, **extra)
        row["eval_seconds"] = time.time() - t0
        row |= scores(report)
    except Exception as e:  # one failed row must not lose the others
        traceback.print_exc()
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def trained_summary(run: Path) -> dict:
    """Steps and training seconds of a finished run, from its metrics.jsonl (for --reuse): the seconds are those of
    the last logged training step, scaled to the final step at the same rate."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in records if r.get("split") == "train"][-1]
    steps = max(r["step"] for r in records)
    return {"steps": steps, "train_seconds": last["elapsed_s"] * steps / last["step"]}


def scores(report: dict) -> dict:
    """The numbers of the tables from a run's eval report."""
    out = {k: report.get(k) for k in ("fd", "kid", "precision", "recall", "label_accuracy")}
    captions = report.get("captions", {})
    out["test_clip_score"], out["test_r_precision"] = captions.get("clip_score"), captions.get("r_precision")
    held = report.get("held_out_prompts", {})
    for kind in ("phrasing", "synonym", "combination"):
        part = held.get(kind)
        if part is None:
            continue
        for key in ("class_accuracy", "attribute_agreement", "relation_accuracy", "item_accuracy",
                    "swapped_accuracy", "clip_score", "r_precision"):
            if key in part:
                out[f"{kind}_{key}"] = part[key]
                ref = part.get("reference", {}).get(key)
                if ref is not None:
                    out[f"{kind}_{key}_reference"] = ref
    out["scorer_retrieval_accuracy"] = (held.get("scorer") or captions.get("scorer") or {}).get("retrieval_accuracy")
    out["region_classifier_accuracy"] = held.get("region_classifier_accuracy")
    return out


# --- tables and pictures ---

COLUMNS = {
    "objects": [("steps", "steps", "{:.0f}"), ("train_images_per_s", "img/s", "{:.0f}"), ("fd", "FD", "{:.2f}"),
                ("label_accuracy", "test-caption acc", "{:.3f}"), ("test_r_precision", "R-prec", "{:.3f}"),
                ("phrasing_class_accuracy", "new phrasing acc", "{:.3f}"),
                ("synonym_class_accuracy", "new synonym acc", "{:.3f}"),
                ("phrasing_attribute_agreement", "attribute agreement", "{:.3f}"),
                ("synonym_r_precision", "synonym R-prec", "{:.3f}")],
    "scenes": [("steps", "steps", "{:.0f}"), ("train_images_per_s", "img/s", "{:.0f}"), ("fd", "FD", "{:.2f}"),
               ("test_r_precision", "R-prec", "{:.3f}"),
               ("combination_relation_accuracy", "held-out relation acc", "{:.3f}"),
               ("combination_item_accuracy", "held-out item acc", "{:.3f}"),
               ("combination_swapped_accuracy", "held-out swapped", "{:.3f}"),
               ("combination_r_precision", "held-out R-prec", "{:.3f}")],
}


def table(part: str, rows: list[dict]) -> str:
    cols = COLUMNS[part]
    lines = ["| data | budget | encoder | model | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---:|---|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = ["error: " + r["error"][:60] if "error" in r and c[0] not in r else
                 (c[2].format(r[c[0]]) if isinstance(r.get(c[0]), (int, float)) else "–") for c in cols]
        lines.append(f"| {r['data']} | {r['seconds']:.0f} s | {r['encoder']} | {MODELS[r['model']][2]} | "
                     + " | ".join(cells) + " |")
    refs = {c[0]: rows[0].get(f"{c[0]}_reference") for c in cols if rows and rows[0].get(f"{c[0]}_reference")}
    if refs:
        lines.append("| | | real test images | (judges' ceiling) | " + " | ".join(
            c[2].format(refs[c[0]]) if c[0] in refs else "" for c in cols) + " |")
    return "\n".join(lines)


def labelled_grid(run: Path, data: str, path: Path, seed: int) -> None:
    """Prompt → images for GRID_PROMPTS held-out prompts of each kind (kind and "held out" in the label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = load_images(ImageDataConfig(data=data))
    rows: list[tuple[str, str]] = []
    for kind in ("phrasing", "synonym", "combination"):
        prompts = [p for p in ds.eval_prompts if p.kind == kind]
        step = max(1, len(prompts) // GRID_PROMPTS)
        rows += [(p.text, kind) for p in prompts[::step][:GRID_PROMPTS]]
    result = genlab.generate(run, [r[0] for r in rows], GRID_IMAGES, seed=seed, log=None,
                             out=run / "benchmark-grid.png")
    images = result["images"].numpy()
    fig, axes = plt.subplots(len(rows), GRID_IMAGES, figsize=(GRID_IMAGES * 0.9 + 3.6, len(rows) * 0.9))
    for i, (text, kind) in enumerate(rows):
        for j in range(GRID_IMAGES):
            ax = axes[i, j]
            img = images[i * GRID_IMAGES + j]
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(f"{text}\n(held out: {kind})", rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_rows(path: Path, results: dict, part: str, rows: list[dict]) -> None:
    """Write `rows` into results[part], keeping rows of other encoders, models or budgets from earlier
    invocations (the table can be filled in over several runs of this script; each row records its budget and
    machine)."""
    fresh = {(r["data"], r["seconds"], r["encoder"], r["model"]) for r in rows}
    kept = [r for r in results.get(part, {}).get("rows", [])
            if (r["data"], r["seconds"], r["encoder"], r["model"]) not in fresh]
    results[part] = results.get(part, {}) | {"rows": kept + rows}
    atomic_write_json(path, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--seconds", type=float, default=180.0, help="training budget of each objects run")
    parser.add_argument("--scene-seconds", type=float, default=300.0, help="training budget of each scenes run")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    parser.add_argument("--models", nargs="+", default=["diffusion-xattn", "diffusion-pooled", "cvae", "cgan"],
                        choices=list(MODELS))
    parser.add_argument("--scene-models", nargs="+", default=["diffusion-xattn-p2", "diffusion-pooled-p2"],
                        choices=list(MODELS))
    parser.add_argument("--objects", default=PARTS["objects"])
    parser.add_argument("--scenes", default=PARTS["scenes"])
    parser.add_argument("--lm-seconds", type=float, default=120.0)
    parser.add_argument("--samples", type=int, default=500, help="images generated from test captions for FD & co.")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--sample-steps", type=int, default=10, help="diffusion: DPM-Solver++ steps in evaluation")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-t2i")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training batch of every run (default: each model's own; larger pays on a GPU)")
    parser.add_argument("--reuse", action="store_true", help="evaluate runs already trained in --runs-dir again "
                                                             "instead of training them (steps from metrics.jsonl)")
    parser.add_argument("--name", default="text_to_image")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for part in args.parts:
        data = args.objects if part == "objects" else args.scenes
        if needs_fashion(data) and not FASHION_DIR.is_dir():
            print(f"skipping {part}: {data} needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
            continue
        seconds = args.seconds if part == "objects" else args.scene_seconds
        models = args.models if part == "objects" else args.scene_models
        lm = train_lm(data, args.runs_dir, args.lm_seconds, args.seed) if "lm" in args.encoders else None
        rows = []
        for encoder in args.encoders:
            for model in models:
                print(f"\n== {part}: {encoder} × {model}, {seconds:.0f} s ==", flush=True)
                rows.append(run_one(data, encoder, model, seconds, args, lm, part)
                            | {"machine": machine(), "command": " ".join(sys.argv)})
                print(json.dumps(rows[-1], indent=1, default=str), flush=True)
                save_rows(path, results, part, rows)  # after every run: a crash loses nothing finished
        # the grid of the data set's best row, earlier runs' rows too
        rows = [r for r in results[part]["rows"] if r["data"] == data]
        ok = [r for r in rows if "error" not in r]
        key = "combination_relation_accuracy" if part == "scenes" else "phrasing_class_accuracy"
        best = max(ok, key=lambda r: r.get(key) or 0.0) if ok else None
        if best is not None:
            grid = RESULTS / (f"{args.name}-{part}.png" if data == PARTS[part] else f"{args.name}-{part}-{data}.png")
            labelled_grid(args.runs_dir / f"{data}-{best['encoder']}-{best['model']}", data, grid, args.seed)
            results[part].pop("grid_run", None)
            results[part].setdefault("grid_runs", {})[data] = f"{data}-{best['encoder']}-{best['model']}"
            atomic_write_json(path, results)
        print(f"\n### {part}: {data} ({device_name()}; each row: its training budget)\n")
        print(table(part, rows))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
