"""Does a scenes run put each noun in its place? Held-out pictures against pictures it was trained on.

    .venv/bin/python benchmarks/scene_binding.py RUN [RUN ...] [--images-per-prompt 4] [--guidance 2]
        [--sample-steps 10] [--seed 0] [--name scene_binding]

For a text-to-image run trained on a built-in scenes set (mnist5k-scenes: "a seven to the left of a two"), three
groups of prompts, each picture in both wordings ("A left of B", "B right of A"), the benchmark's wording
(genlab.data.captions.scene_eval_prompts):
  - held-out: the 20 pictures no training scene shows (the data set's "combination" prompts);
  - mirror: the same class pairs the other way round, the pictures training shows instead of them;
  - seen: 20 seeded random pictures of other pairs, trained in both arrangements.
Per group the region classifier's readings of the generated images (genlab.eval.text_image.prompt_obedience):
relation accuracy (both items right, in their places), item accuracy and swapped accuracy (both items drawn,
each in the other's place). A model that reads word order has relation well above swapped on the seen group; one
that recalls each pair's trained arrangement has held-out swapped near mirror relation. Prints a table and writes
benchmarks/results/NAME.json.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.checkpoint import atomic_write_json
from genlab.data.captions import DIGIT_TRAIN_NOUNS, HELD_OUT_PICTURES, EvalPrompt, scene_eval_prompts
from genlab.data.images import ImageDataConfig, load_images
from genlab.eval.text_image import prompt_obedience, region_classifier
from genlab.pipelines import TextToImagePipeline
from image_scoring import machine
from text_to_image import trained_summary

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SEEN_PICTURES = 20


def prompt_groups(seed: int) -> dict[str, list[EvalPrompt]]:
    """Each group's prompts, every picture in both wordings (the held-out prompts' template and nouns)."""
    held = set(HELD_OUT_PICTURES)
    mirror = [(b, rel, a) for a, rel, b in HELD_OUT_PICTURES]
    rng = np.random.default_rng(seed)
    seen: list[tuple[int, str, int]] = []
    while len(seen) < SEEN_PICTURES:
        a, b = (int(v) for v in rng.choice(10, 2, replace=False))
        picture = (a, ("left", "above")[int(rng.integers(2))], b)
        mirrored = (b, picture[1], a)
        if not {picture, mirrored} & (held | set(seen)):
            seen.append(picture)
    return {group: scene_eval_prompts(DIGIT_TRAIN_NOUNS, pictures)
            for group, pictures in (("held-out", HELD_OUT_PICTURES), ("mirror (seen)", mirror),
                                    ("seen, both ways", seen))}


def score_run(run: Path, args: argparse.Namespace) -> dict:
    model = genlab.load(run)
    data = model.run_config["data"]["data"]
    if data != "mnist5k-scenes":
        sys.exit(f"scene_binding: {run} was trained on {data}; this script knows mnist5k-scenes' nouns")
    ds = load_images(ImageDataConfig(data=data))
    regions = region_classifier(ds)
    pipe = TextToImagePipeline(model)
    steps = trained_summary(run)["steps"]
    budget = model.run_config["train"].get("max_seconds")
    row: dict = {"run": str(run), "label": f"{run.name}, {f'{budget:.0f} s, ' if budget else ''}{steps} steps"}
    for group, prompts in prompt_groups(args.seed).items():
        images = torch.cat([pipe([p.text for p in prompts], guidance=args.guidance, steps=args.sample_steps,
                                 seed=args.seed + r).images for r in range(args.images_per_prompt)])
        each = prompts * args.images_per_prompt
        report = prompt_obedience(images, each, ds, regions=regions)
        row[group] = {k: report[k] for k in ("relation_accuracy", "item_accuracy", "swapped_accuracy", "n_scenes")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="scene_binding")
    args = parser.parse_args()
    t0 = time.time()
    rows = [score_run(run, args) for run in args.runs]
    print("| run | prompts | relation acc | swapped | item acc | images |\n|---|---|---:|---:|---:|---:|")
    for row in rows:
        for group in ("held-out", "mirror (seen)", "seen, both ways"):
            g = row[group]
            print(f"| {row['label']} | {group} | {g['relation_accuracy']:.3f} | {g['swapped_accuracy']:.3f} "
                  f"| {g['item_accuracy']:.3f} | {g['n_scenes']} |")
    out = {"rows": rows, "options": {k: v for k, v in vars(args).items() if k != "runs"},
           "seconds": time.time() - t0, "machine": machine(),
           "command": "benchmarks/scene_binding.py " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{args.name}.json", out)
    print(f"wrote {RESULTS / (args.name + '.json')}")


if __name__ == "__main__":
    main()
