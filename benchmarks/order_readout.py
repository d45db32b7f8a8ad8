"""Can word order be read from a caption at all, and how much of a training signal does it take? Minutes on a CPU.

The scenes models read a caption's nouns and its relation's axis but not which noun goes where
(benchmarks/scene_binding.py: no order gap). This script takes the image model out: a reader maps a caption
(mnist5k-scenes' training captions) straight to a picture, with one of three targets:
  order   the part of the picture that depends on word order alone: the mean of the training scenes of
          "A <relation> B" minus the mean of those of "B <relation> A" (pictures trained both ways)
  means   the mean of the training scenes of the caption's picture (order-aware and order-blind parts)
  images  the training scene itself, as a denoiser's loss sees it from pure noise (the same expected gradient
          as "means", plus the scatter of single scenes around their mean)
Scored every --eval-every steps on every picture trained both ways, asked in the canonical wording ("a A to the
left of a B"): the cosine between out("A r B") − out("B r A") and mean(A r B) − mean(B r A). A reader blind to
order scores 0; the "picture id" row (an embedding per picture, given instead of the caption, target "order")
shows what a reader that knows the picture reaches.

The reader reads the frozen encoder's token states through genlab's TextConditioner (projected to 64 wide):
learned queries, one per place of a 6×6 grid, started as N(0, 1) (--readers places) or zero (places-zero),
4-head cross-attention to the tokens, and each place's output decoded to its 8×8 pixels.

    python benchmarks/order_readout.py                      # minilm, places, targets order / means / images
    python benchmarks/order_readout.py --encoders minilm scratch --targets order --steps 12000

Prints a table (steps → cosine per row) and writes benchmarks/results/<--name>.json.
"""

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checkpoint import atomic_write_json
from genlab.data.captions import DIGIT_TRAIN_NOUNS, SCENE_RELATIONS, scene_prompt
from genlab.data.images import ImageDataConfig, load_images
from genlab.nn.attention import attention
from genlab.nn.conditioning import TextConditioner
from genlab.text_encoders import text_encoder_spec

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
GRID, WIDTH, HEADS = 6, 64, 4  # 6×6 places of 8×8 pixels cover the 48×48 scene


class PlaceReader(nn.Module):
    """Caption → (1, 48, 48): learned place queries attend to the caption's tokens; each place decodes its pixels."""

    def __init__(self, text: TextConditioner, cell: int, zero_start: bool):
        super().__init__()
        self.text, self.cell = text, cell
        self.places = nn.Parameter(torch.zeros(GRID * GRID, WIDTH) if zero_start else torch.randn(GRID * GRID, WIDTH))
        self.q, self.kv = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 2 * WIDTH)
        self.decode = nn.Parameter(torch.randn(GRID * GRID, WIDTH, cell * cell) / WIDTH**0.5)  # one map per place
        self.bias = nn.Parameter(torch.zeros(GRID * GRID, cell * cell))

    def forward(self, captions: list[str]) -> torch.Tensor:
        cond = self.text(captions)
        B, P = len(captions), GRID * GRID
        q = self.q(self.places).reshape(1, P, HEADS, -1).transpose(1, 2).expand(B, -1, -1, -1)
        k, v = self.kv(cond.tokens).reshape(B, -1, 2, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
        h = attention(q.contiguous(), k.contiguous(), v.contiguous(), cond.mask[:, None, None, :])
        pixels = torch.einsum("bpc,pcd->bpd", h.transpose(1, 2).reshape(B, P, WIDTH), self.decode) + self.bias
        c = self.cell
        return pixels.reshape(B, GRID, GRID, c, c).permute(0, 1, 3, 2, 4).reshape(B, 1, GRID * c, GRID * c)


class PictureLookup(nn.Module):
    """The ceiling: an embedding per picture (A, relation, B), given instead of the caption."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.embed, self.decode = nn.Embedding(1000, WIDTH), nn.Linear(WIDTH, size * size)

    def forward(self, pictures: list[tuple[int, int, int]]) -> torch.Tensor:
        ids = torch.tensor([a * 100 + relation * 10 + b for a, relation, b in pictures])
        return self.decode(self.embed(ids)).reshape(-1, 1, self.size, self.size)


def mirror(picture: tuple[int, int, int]) -> tuple[int, int, int]:
    """(A, relation, B) → (B, relation, A): the same axis, the items the other way round."""
    a, relation, b = picture
    return b, relation, a


def train_reader(name: str, reader: nn.Module, inputs: list, targets: torch.Tensor, probe: tuple[list, list],
                 probe_targets: torch.Tensor, args: argparse.Namespace) -> dict:
    """Adam on the mean squared error to `targets`, one random caption of each drawn scene; every --eval-every steps
    the cosine between reader(probe[0]) − reader(probe[1]) and probe_targets."""
    rng = random.Random(args.seed)
    opt = torch.optim.Adam([p for p in reader.parameters() if p.requires_grad], lr=args.lr)
    curve, t0 = [], time.time()

    def score(step: int) -> None:
        with torch.no_grad():
            out = reader(probe[0]) - reader(probe[1])
        cos = float(F.cosine_similarity(out.flatten(1), probe_targets.flatten(1)).mean())
        curve.append({"step": step, "cosine": round(cos, 4), "seconds": round(time.time() - t0, 1)})
        print(f"  {name}: step {step:>6}  cosine {cos:+.3f}  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    score(0)
    for step in range(1, args.steps + 1):
        batch = rng.sample(range(len(inputs)), args.batch_size)
        pick = [inputs[i] for i in batch]
        if isinstance(pick[0], list):  # a scene's captions: one at random, as training draws them
            pick = [rng.choice(p) for p in pick]
        loss = F.mse_loss(reader(pick), targets[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0:
            score(step)
    return {"reader": name, "curve": curve, "final_cosine": curve[-1]["cosine"],
            "steps_per_second": round(args.steps / (time.time() - t0), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["minilm"], choices=["minilm", "scratch"])
    parser.add_argument("--readers", nargs="+", default=["places"], choices=["places", "places-zero"])
    parser.add_argument("--targets", nargs="+", default=["order", "means", "images"],
                        choices=["order", "means", "images"])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="order_readout")
    args = parser.parse_args()
    if min(args.steps, args.eval_every, args.batch_size) < 1:
        parser.error("--steps, --eval-every and --batch-size must be at least 1")

    ds = load_images(ImageDataConfig(data="mnist5k-scenes"))
    x = ds.splits["train"].float() / 127.5 - 1
    f = ds.facts["train"]
    keys = list(zip(f["class_a"].tolist(), f["relation"].tolist(), f["class_b"].tolist(), strict=True))
    scenes_of = {k: [i for i, key in enumerate(keys) if key == k] for k in sorted(set(keys))}
    means = {k: x[torch.tensor(idx)].mean(0) for k, idx in scenes_of.items()}
    # scenes of two different digits whose picture is trained both ways
    both = [i for i, k in enumerate(keys) if k != mirror(k) and mirror(k) in means]
    pictures = sorted({keys[i] for i in both})

    def canonical(picture: tuple[int, int, int]) -> str:
        a, relation, b = picture
        return scene_prompt(DIGIT_TRAIN_NOUNS, a, SCENE_RELATIONS[relation], b)

    probe_targets = torch.stack([means[k] - means[mirror(k)] for k in pictures])
    targets = {"order": torch.stack([means[keys[i]] - means[mirror(keys[i])] for i in both]),
               "means": torch.stack([means[keys[i]] for i in both]),
               "images": x[torch.tensor(both)]}
    captions = [ds.captions["train"][i] for i in both]
    print(f"{len(both)} training scenes of {len(pictures)} pictures trained both ways; order target rms "
          f"{float(targets['order'].square().mean().sqrt()):.3f}, scatter of single scenes around their picture's "
          f"mean rms {float((targets['images'] - targets['means']).square().mean().sqrt()):.3f}", file=sys.stderr)

    torch.manual_seed(args.seed)
    rows = [train_reader("picture id (ceiling)", PictureLookup(x.shape[-1]), [keys[i] for i in both],
                         targets["order"], (pictures, [mirror(k) for k in pictures]), probe_targets, args)
            | {"encoder": "-", "target": "order"}]
    all_captions = [c for caps in ds.captions["train"] for c in caps]
    probe = ([canonical(k) for k in pictures], [canonical(mirror(k)) for k in pictures])
    for encoder in args.encoders:
        for reader in args.readers:
            for target in args.targets:
                torch.manual_seed(args.seed)
                text = TextConditioner(text_encoder_spec(encoder, all_captions), WIDTH, WIDTH)
                model = PlaceReader(text, x.shape[-1] // GRID, zero_start=reader == "places-zero")
                rows.append(train_reader(f"{encoder}, {reader}, target {target}", model, captions, targets[target],
                                         probe, probe_targets, args) | {"encoder": encoder, "target": target})

    steps = [c["step"] for c in rows[0]["curve"]]
    print("| reader | " + " | ".join(f"step {s}" for s in steps) + " | steps/s |")
    print("|---|" + "---:|" * (len(steps) + 1))
    for row in rows:
        print(f"| {row['reader']} | " + " | ".join(f"{c['cosine']:+.3f}" for c in row["curve"])
              + f" | {row['steps_per_second']} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    atomic_write_json(out, {"command": " ".join(["benchmarks/order_readout.py", *sys.argv[1:]]), "args": vars(args),
                            "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
