"""Does a scenes run put each noun in its place? Held-out pictures against pictures it was trained on.

    .venv/bin/python benchmarks/scene_binding.py RUN [RUN ...] [--images-per-prompt 4] [--guidance 2]
        [--sample-steps 10] [--seed 0] [--gap-scenes 256] [--name scene_binding]

For a text-to-image run trained on a built-in scenes set (mnist5k-scenes: "a seven to the left of a two"), three
groups of prompts, each picture in both wordings ("A left of B", "B right of A"), the benchmark's wording
(genlab.data.captions.scene_eval_prompts):
  - held-out: the 20 pictures no training scene shows (the data set's "combination" prompts);
  - mirror: the same class pairs the other way round, the pictures training shows instead of them;
  - seen: 20 seeded random pictures of other pairs, trained in both arrangements.
Per group the region classifier's readings of the generated images (genlab.eval.text_image.prompt_obedience):
relation accuracy (both items right, in their places), item accuracy and swapped accuracy (both items drawn,
each in the other's place). A model that reads word order has relation well above swapped on the seen group; one
that recalls each pair's trained arrangement has held-out swapped near mirror relation.

Then, without sampling, the order gap: on test scenes of two different digits, the sampling denoiser's error in x0
at several noise levels given the right caption ("a seven to the left of a two"), the caption with the two nouns
swapped ("a two to the left of a seven") and the empty prompt. (swapped − right) / right is how much the model's
prediction depends on word order; (empty − right) / right how much on the caption at all. It is the quantity
training can improve directly, and it moves long before sampled images do. Beside it, for runs with
cross-attention, how the right caption's item phrases are read (genlab.nn.grounding, averaged over layers and
phrases): the share of a phrase's reading that comes from inside its half (0.5: read alike from both halves),
and how much the positions in its half read it (the rest of their attention goes to the caption's other words).
Prints both tables and writes benchmarks/results/NAME.json.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import genlab
from genlab.checkpoint import atomic_write_json
from genlab.data.captions import (
    DIGIT_TRAIN_NOUNS,
    HELD_OUT_PICTURES,
    SCENE_RELATIONS,
    EvalPrompt,
    scene_eval_prompts,
    scene_grounding,
    scene_prompt,
)
from genlab.data.images import ImageDataConfig, ImageDataset, load_images, to_model_range
from genlab.eval.text_image import prompt_obedience, region_classifier
from genlab.models.diffusion.ddpm import Diffusion
from genlab.nn.grounding import box_read, inside_share, phrase_targets
from genlab.pipelines import TextToImagePipeline
from image_scoring import machine
from text_to_image import trained_summary

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SEEN_PICTURES = 20
GAP_TIMESTEPS = (950, 900, 850, 800, 700, 600, 500, 300)  # of T = 1000: SNR 0.006 ... 3.7 (cosine schedule)


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


@torch.no_grad()
def order_gap(model: Diffusion, ds: ImageDataset, num_scenes: int, seed: int) -> dict[str, dict[str, float]]:
    """Per timestep the mean squared error of the predicted x0 on the first `num_scenes` test scenes of two different
    classes, given the right caption, the nouns swapped and the empty prompt (one noise draw shared by all three)."""
    facts = ds.facts["test"]
    keep = np.flatnonzero(facts["class_a"] != facts["class_b"])[:num_scenes]
    x0 = to_model_range(ds.splits["test"][torch.from_numpy(keep)], model.pixel_range).to(model.device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(model.device)

    def caption(a: int, relation: int, b: int) -> str:
        return scene_prompt(DIGIT_TRAIN_NOUNS, a, SCENE_RELATIONS[relation], b)

    a, r, b = (facts[k][keep].tolist() for k in ("class_a", "relation", "class_b"))
    prompts = {"right": [caption(*f) for f in zip(a, r, b, strict=True)],
               "swapped": [caption(*f) for f in zip(b, r, a, strict=True)], "empty": [""] * len(keep)}
    net, schedule = model.sampling_net, model.schedule
    # where each caption's item phrases belong, for runs whose cross-attention can be read
    phrases = [scene_grounding(text) for text in prompts["right"]] if model.config.cross_attention else None
    out = {}
    for t in GAP_TIMESTEPS:
        tt = torch.full((len(keep),), t, device=model.device)
        x_t = schedule.add_noise(x0, noise, tt)
        err, reading = {}, {}
        for name, texts in prompts.items():
            maps: list[torch.Tensor] | None = [] if name == "right" and phrases is not None else None
            pred = net(x_t, tt, None, texts, attention_maps=maps)
            x0_hat, _ = schedule.split_prediction(pred, x_t, tt, model.config.prediction)
            err[name] = float(((x0_hat.float() - x0) ** 2).mean())
            if maps:
                tokens, boxes, valid = phrase_targets(net.text.encoder, texts, phrases, maps[0].shape[-1],
                                                      model.device)
                reading = {"inside_share": float(torch.cat([inside_share(m, tokens, boxes)[valid] for m in maps])
                                                 .mean()),
                           "box_read": float(torch.cat([box_read(m, tokens, boxes)[valid] for m in maps]).mean())}
        out[str(t)] = err | reading | {"order_gap": (err["swapped"] - err["right"]) / err["right"],
                                       "caption_gap": (err["empty"] - err["right"]) / err["right"]}
    return out


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
    # The order gap reads a denoiser's prediction; VAE and GAN runs have none.
    row["order_gap"] = order_gap(model, ds, args.gap_scenes, args.seed) if isinstance(model, Diffusion) else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gap-scenes", type=int, default=256, help="test scenes of the order-gap table")
    parser.add_argument("--name", default="scene_binding")
    args = parser.parse_args()
    if args.gap_scenes < 1:
        parser.error("--gap-scenes must be at least 1")
    t0 = time.time()
    rows = [score_run(run, args) for run in args.runs]
    print("| run | prompts | relation acc | swapped | item acc | images |\n|---|---|---:|---:|---:|---:|")
    for row in rows:
        for group in ("held-out", "mirror (seen)", "seen, both ways"):
            g = row[group]
            print(f"| {row['label']} | {group} | {g['relation_accuracy']:.3f} | {g['swapped_accuracy']:.3f} "
                  f"| {g['item_accuracy']:.3f} | {g['n_scenes']} |")
    print("\n| run | t | x0 error, right caption | swapped nouns | empty prompt | order gap | caption gap "
          "| phrase read inside its half | its half reads it |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for t, g in (row["order_gap"] or {}).items():
            reading = " | ".join(f"{g[k]:.3f}" if k in g else "–" for k in ("inside_share", "box_read"))
            print(f"| {row['label']} | {t} | {g['right']:.4f} | {g['swapped']:.4f} | {g['empty']:.4f} "
                  f"| {g['order_gap']:+.3f} | {g['caption_gap']:+.3f} | {reading} |")
    out = {"rows": rows, "options": {k: v for k, v in vars(args).items() if k != "runs"},
           "seconds": time.time() - t0, "machine": machine(),
           "command": "benchmarks/scene_binding.py " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{args.name}.json", out)
    print(f"wrote {RESULTS / (args.name + '.json')}")


if __name__ == "__main__":
    main()
