"""Text-to-image evaluation: does a generated image show what its prompt asked for?

Two kinds of judge, both small, trained per data set, deterministic and cached beside the feature net:

    ClipScorer        a contrastive text-image model (a small CLIP, Radford et al. 2021): a CNN image tower and a
                      Transformer text tower over the training captions' words, projected to one normalised
                      space and trained with the symmetric InfoNCE loss and a learned temperature. It gives
                      CLIPScore (Hessel et al. 2021) and R-precision (Xu et al. 2018, AttnGAN).
    classifiers       the feature net of `genlab.eval.images` reads an object prompt's class, `measure_attributes`
                      its attributes (size, brightness, ...), and a `RegionClassifier` (a small CNN on the regions
                      where a scene's two items must lie) its spatial relation.

A scorer this small knows only the training captions' words and saturates early, so every score comes with its
ceiling: `ClipScorer.retrieval_accuracy` is the R-precision of real test images with one of their own captions,
`RegionClassifier.accuracy` the region classifier's accuracy on real test scenes. Like the feature-net metrics
these numbers are comparable only between runs on the same data set and judge version; they are not the CLIP
(ViT-B/32) scores of the literature.

`prompt_report` puts it together for a `generate(prompts, seed)` callable over `dataset.eval_prompts`, per kind:
"phrasing" (training content, new wording), "synonym" (words the training captions never use) and
"combination" (scene pictures, class A <relation> class B, that no training scene shows).
"""

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.checkpoint import load_tensors, save_tensors
from genlab.data.captions import (
    INK_LEVEL,
    INVERSE_RELATION,
    SCENE_RELATIONS,
    EvalPrompt,
    attribute_levels,
    measure_attributes,
    scene_regions,
    words,
)
from genlab.data.images import ImageBatches, ImageDataset, fit_images, image_grid, to_channels, to_model_range
from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.eval.images import JUDGE_DEVICE, FeatureNet, cache_dir_default, feature_net, fit_classifier
from genlab.progress import progress_bar

SCORER_VERSION = "1"  # bump when the architecture or training recipe changes: old caches are then ignored
REGION_VERSION = "1"
JUDGE_SEED = 0  # fixed, never the user's: a judge must not change with the run it judges
MAX_INPUT = 32  # larger images are downscaled first: 48-px scenes score as well at 32 px, 40% cheaper
MAX_WORDS = 32  # longer captions are cut (the built-in ones have well under 20 words)
EMBED_DIM = 64
BATCH = 128
KINDS = ("phrasing", "synonym", "combination")
PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"


# --- captions ---

def _flat_captions(dataset: ImageDataset, split: str) -> list[str]:
    return [c for caps in dataset.captions[split] for c in caps]  # type: ignore[index]


def _check_captioned(dataset: ImageDataset) -> None:
    captions = getattr(dataset, "captions", None)
    if not captions or not captions.get("train"):
        raise DataError(f"text-image scores need a captioned data set; {dataset.source} has no captions "
                        "(use a built-in captioned set such as mnist5k-captions or fashion-mnist-captions)")
    for split in ("train", _eval_split(dataset)):
        caps = captions.get(split) or []
        if len(caps) != len(dataset.splits[split]):
            raise DataError(f"{dataset.source}: {len(caps)} caption lists for {len(dataset.splits[split])} "
                            f"{split} images; every image needs its captions")
        if any(not c for c in caps):
            raise DataError(f"{dataset.source}: some {split} images have no caption; every image needs at least one")


def _eval_split(dataset: ImageDataset) -> str:
    return "test" if len(dataset.splits["test"]) else "valid"


# --- networks ---

class _ConvTower(nn.Module):
    """A stride-2 conv (16 channels), a conv (32) and 2x2 pooling, a conv (64), then a 4x4 map that is flattened, not
    averaged: where things are survives, which scenes ("a bag left of a shoe") need. Then a 256-unit layer.

    Cheaper than the feature net's three pooled stages (a quarter of the multiply-adds at 28 px): the scorer must
    train in about a minute on a CPU, and its images are simple."""

    def __init__(self, channels: int, image_size: int, out_dim: int, max_input: int):
        super().__init__()
        self.input_size = min(image_size, max_input)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(64 * 16, 256), nn.ReLU(), nn.Linear(256, out_dim))
        self.to(memory_format=torch.channels_last)  # about 1.5x faster convolutions on a CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.body(x.contiguous(memory_format=torch.channels_last)))


class _TextTower(nn.Module):
    """Word embeddings plus learned positions (word order matters), a <cls> token read out after two pre-norm
    Transformer layers (Vaswani et al. 2017; bidirectional, as the whole caption is known)."""

    def __init__(self, vocab_size: int, context: int, out_dim: int, width: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.randn(context + 1, width) * 0.02)  # +1: the <cls> slot
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids (N, L) with <cls> at 0 and <pad> = 0 after the words
        x = self.tokens(ids) + self.positions[:ids.shape[1]]
        x = self.layers(x, src_key_padding_mask=ids == 0)
        return self.proj(self.norm(x[:, 0]))  # (N, out_dim)


class _Clip(nn.Module):
    def __init__(self, channels: int, image_size: int, vocab_size: int, context: int, dim: int = EMBED_DIM):
        super().__init__()
        self.image = _ConvTower(channels, image_size, dim, MAX_INPUT)
        self.text = _TextTower(vocab_size, context, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    def loss(self, x: torch.Tensor, ids: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE (van den Oord et al. 2018; CLIP). `same` (B, B): caption i equals caption j; such
        pairs share the target mass instead of counting as negatives (short captions repeat within a batch)."""
        a = F.normalize(self.image(x), dim=-1)
        b = F.normalize(self.text(ids), dim=-1)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * a @ b.T  # CLIP caps the scale at 100
        target = same.float() / same.sum(1, keepdim=True)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# --- the scorer ---

class TextScorer(Protocol):
    """What R-precision needs: unit vectors for images and texts in one space."""

    def image_embed(self, images: torch.Tensor) -> torch.Tensor: ...

    def text_embed(self, texts: list[str]) -> torch.Tensor: ...


class ClipScorer:
    """A trained `_Clip` with its vocabulary; embeddings are L2-normalised float32 CPU tensors."""

    def __init__(self, model: _Clip, vocab: list[str], context: int, dataset: ImageDataset, info: dict):
        self.model = model.eval()
        self.vocab, self.context = vocab, context
        self.index = {w: i for i, w in enumerate(vocab)}
        self.channels, self.image_size = dataset.channels, dataset.image_size
        self.name = f"genlab text-image scorer v{SCORER_VERSION}, {dataset.source}"
        self.retrieval_accuracy: float = info["retrieval_accuracy"]  # real test images: the scorer's ceiling
        self.train_seconds: float = info["train_seconds"]
        self.info = info
        self.from_cache: bool = info.get("from_cache", False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> token ids (N, context + 1): <cls>, the words (unknown ones as <unk>), <pad>s."""
        ids = torch.zeros(len(texts), self.context + 1, dtype=torch.long)
        ids[:, 0] = self.index[CLS]
        unk = self.index[UNK]
        for i, text in enumerate(texts):
            row = [self.index.get(w, unk) for w in words(text)[:self.context]]
            ids[i, 1:1 + len(row)] = torch.tensor(row, dtype=torch.long)
        return ids

    @torch.no_grad()
    def image_embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> unit vectors (N, D)."""
        _check_images(images)
        images = fit_images(images.cpu(), self.channels, self.image_size)
        out = [F.normalize(self.model.image(to_model_range(c.to(self.device), "symmetric")), dim=-1).cpu()
               for c in images.split(512)]
        return torch.cat(out) if out else torch.empty(0, EMBED_DIM)

    @torch.no_grad()
    def text_embed(self, texts: list[str]) -> torch.Tensor:
        """Texts -> unit vectors (N, D). Texts with the same words get bit-identical vectors (they are embedded
        once), so that R-precision's pessimistic ties are exact."""
        ids = self.encode(texts)
        unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
        out = [F.normalize(self.model.text(c.to(self.device)), dim=-1).cpu() for c in unique.split(1024)]
        table = torch.cat(out) if out else torch.empty(0, EMBED_DIM)
        return table[inverse]

    def clip_score(self, images: torch.Tensor, texts: list[str]) -> float:
        """CLIPScore as torchmetrics reports it: 100 × mean over pairs of max(cos(image, text), 0).

        Hessel et al. (2021) weigh the cosine by 2.5 to stretch CLIP ViT-B/32's narrow range; this scorer's range
        is its own, so the weight would only suggest a comparability there is not. 0..100, higher is better."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} texts")
        if not len(texts):
            raise DataError("CLIPScore needs at least one (image, text) pair")
        cos = (self.image_embed(images) * self.text_embed(texts)).sum(-1)
        return float(100 * cos.clamp(min=0).double().mean())

    def r_precision(self, images: torch.Tensor, texts: list[str], pool: Sequence[str], distractors: int = 99,
                    seed: int = 0) -> float:
        """See `r_precision`."""
        return r_precision(self, images, texts, pool, distractors, seed)

    def describe(self) -> dict:
        """Name, retrieval accuracy, training time and recipe: JSON-ready, for reports."""
        return {"name": self.name, **self.info}


def r_precision(scorer: TextScorer, images: torch.Tensor, texts: list[str], pool: Sequence[str],
                distractors: int = 99, seed: int = 0) -> float:
    """R-precision with R = 1 (AttnGAN's protocol, Xu et al. 2018): the fraction of images whose own text ranks
    first, by cosine, among itself and `distractors` others drawn at random (without replacement, seeded) from the
    distinct strings of `pool` that differ from it. Ties count against the image (its text must score strictly
    higher than every distractor), so a scorer that cannot tell texts apart scores 0, not 1. Chance level is
    1 / (distractors + 1)."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images for {len(texts)} texts")
    if not len(texts):
        raise DataError("R-precision needs at least one (image, text) pair")
    if distractors < 1:
        raise ConfigError(f"R-precision needs at least one distractor, not {distractors}")
    unique = sorted(set(pool))
    slot = {s: k for k, s in enumerate(unique)}
    for t in texts:
        if t not in slot:
            slot[t] = len(slot)
            unique.append(t)
    n_pool = len(set(pool))  # the first n_pool entries of `unique`; appended texts are never drawn
    rng = np.random.default_rng(seed)
    candidates = np.empty((len(texts), 1 + distractors), dtype=np.int64)
    for i, t in enumerate(texts):
        own = slot[t]
        others = n_pool - (own < n_pool)
        if others < distractors:
            raise DataError(f"R-precision with {distractors} distractors needs that many distinct pool texts besides "
                            f"{t!r}; the pool has {others}. Pass a larger pool or fewer distractors")
        pick = rng.choice(others, distractors, replace=False)
        if own < n_pool:
            pick[pick >= own] += 1  # skip the text itself
        candidates[i, 0], candidates[i, 1:] = own, pick
    table = scorer.text_embed(unique)
    img = scorer.image_embed(images)
    hits = []
    for rows in np.array_split(np.arange(len(texts)), max(1, len(texts) // 1000)):
        # One elementwise product and sum for every candidate: equal vectors give exactly equal scores.
        scores = (img[rows, None, :] * table[torch.from_numpy(candidates[rows])]).sum(-1)  # (n, 1 + distractors)
        hits.append(scores[:, 0] > scores[:, 1:].max(1).values)
    return float(torch.cat(hits).double().mean())


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected uint8 images (N, C, H, W), got {got}")


def _build_vocab(captions: list[str]) -> tuple[list[str], int]:
    """Sorted words of the training captions after <pad>, <unk>, <cls>; and the context length they need."""
    lengths, vocab = [], set()
    for c in captions:
        w = words(c)
        lengths.append(len(w))
        vocab.update(w)
    return [PAD, UNK, CLS, *sorted(vocab)], max(1, min(MAX_WORDS, max(lengths, default=1)))


def _fingerprint(kind: str, version: str, dataset: ImageDataset, extra: dict, parts: Sequence[str]) -> str:
    """sha256 of the judge's version, its recipe and the train and eval data: images plus `parts` (captions, the
    scene facts) per split."""
    h = hashlib.sha256(f"genlab-{kind}-{version}-{json.dumps(extra, sort_keys=True)}".encode())
    for split in ("train", _eval_split(dataset)):
        x = dataset.splits[split]
        h.update(str(tuple(x.shape)).encode())
        h.update(x.contiguous().numpy().tobytes())
        for part in parts:
            if part == "captions":
                h.update(json.dumps(dataset.captions[split], ensure_ascii=False).encode())  # type: ignore[index]
            else:
                arr = np.ascontiguousarray(dataset.facts[split][part])  # type: ignore[index]
                h.update(f"{part}{arr.dtype}{arr.shape}".encode())
                h.update(arr.tobytes())
    return h.hexdigest()


def scorer_steps(n_train: int) -> int:
    """Default training steps: about 10 epochs, at least 300 (mnist5k captions: 317 steps, ~20 s of one CPU core)
    and at most 800 (Fashion-MNIST, ~55 s of one core; its 54k images need fewer epochs)."""
    return max(300, min(800, math.ceil(10 * n_train / BATCH)))


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Train the judges on one CPU thread (the caller's thread count is restored after): their nets are too small
    to gain much from more, and on a shared machine two threads that wait for each other were 25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _cosine_lr(opt: torch.optim.Optimizer, base: float, step: int, steps: int, warmup: int) -> None:
    lr = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    for g in opt.param_groups:
        g["lr"] = lr


def _train_scorer(dataset: ImageDataset, steps: int, device: torch.device, progress: bool
                  ) -> tuple[_Clip, list[str], int, dict]:
    """Train a `_Clip` on the train split's (image, caption) pairs, one random caption of each image per step."""
    t0 = time.perf_counter()
    captions = dataset.captions["train"]  # type: ignore[index]
    flat = [c for caps in captions for c in caps]
    vocab, context = _build_vocab(flat)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
        torch.manual_seed(JUDGE_SEED)
        model = _Clip(dataset.channels, dataset.image_size, len(vocab), context).to(device)
    scorer = ClipScorer(model, vocab, context, dataset, {"retrieval_accuracy": math.nan, "train_seconds": 0.0})
    tokens = scorer.encode(flat)
    caption_id = torch.unique(tokens, dim=0, return_inverse=True)[1].to(device)  # same words, same caption
    tokens = tokens.to(device)
    counts = torch.tensor([len(c) for c in captions], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]]).to(device)
    counts = counts.to(device)
    images = dataset.splits["train"]
    # The batches' labels are image indices: they pick each image's caption.
    batches = ImageBatches(images, torch.arange(len(images)), min(BATCH, len(images)), JUDGE_SEED, "symmetric",
                           device=device)
    g = torch.Generator().manual_seed(JUDGE_SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    model.train()
    losses: list[float] = []
    with progress_bar(total=steps, desc="training text-image scorer", unit="step", leave=False,
                      disable=not progress) as bar:
        for step in range(steps):
            _cosine_lr(opt, 2e-3, step, steps, warmup=min(100, steps // 10 + 1))
            batch = batches(step)
            i = batch["y"]
            u = torch.rand(len(i), generator=g).to(device)
            j = offsets[i] + (u * counts[i]).long().clamp(max=counts[i] - 1)
            same = caption_id[j][:, None] == caption_id[j][None, :]
            loss = model.loss(batch["x"], tokens[j], same)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update()
    model.eval()
    seconds = time.perf_counter() - t0
    split = _eval_split(dataset)
    pool = _flat_captions(dataset, split)
    distractors = min(99, len(set(pool)) - 1)  # fewer only for tiny data sets
    retrieval = r_precision(scorer, dataset.splits[split], _one_caption_each(dataset, split), pool, distractors)
    info = {"retrieval_accuracy": retrieval, "retrieval_split": split, "retrieval_distractors": distractors,
            "train_seconds": seconds, "steps": steps,
            "final_loss": float(np.mean(losses[-20:])), "vocab_size": len(vocab), "context": context,
            "temperature": float(1 / model.logit_scale.detach().clamp(max=math.log(100)).exp())}
    return model, vocab, context, info


def _one_caption_each(dataset: ImageDataset, split: str) -> list[str]:
    """One caption per image of `split`, picked with the judges' fixed seed."""
    rng = np.random.default_rng(JUDGE_SEED)
    return [caps[int(rng.integers(len(caps)))] for caps in dataset.captions[split]]  # type: ignore[index]


def _save(path: Path, model: nn.Module, meta: dict, what: str) -> None:
    try:
        save_tensors(path, model.state_dict(), {k: json.dumps(v) for k, v in meta.items()})
    except OSError as e:
        warnings.warn(f"could not cache the {what} in {path} ({e}); it will be retrained next time", stacklevel=3)


def _load(path: Path, fingerprint: str, what: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The cached tensors and (JSON-decoded) metadata at `path`, or None (warning when the file is unusable)."""
    if not path.is_file():
        return None
    try:
        tensors, raw = load_tensors(path)
        meta = {k: json.loads(v) for k, v in raw.items()}
        if meta.get("fingerprint") != fingerprint:
            raise CheckpointError(f"{path} was trained on other data")
    except (CheckpointError, ValueError) as e:
        warnings.warn(f"ignoring unusable {what} cache {path} ({e}); retraining", stacklevel=3)
        return None
    return tensors, meta


def clip_scorer(dataset: ImageDataset, cache_dir: Path | None = None, device: torch.device | str | None = None,
                steps: int | None = None, progress: bool = True) -> ClipScorer:
    """The text-image scorer of a captioned `dataset`: loaded from the cache when trained before on the same
    images and captions with the same recipe, else trained (deterministically; `steps` defaults to
    `scorer_steps(train size)`) and cached as safetensors with its vocabulary and scores as JSON metadata."""
    _check_captioned(dataset)
    if steps is not None and steps < 1:
        raise ConfigError(f"the scorer needs at least 1 training step, not {steps}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    steps = steps or scorer_steps(len(dataset.splits["train"]))
    fingerprint = _fingerprint("text-image-scorer", SCORER_VERSION, dataset, {"steps": steps}, ["captions"])
    path = Path(cache_dir or cache_dir_default()) / "text-image-scorers" / f"{fingerprint[:24]}.safetensors"
    cached = _load(path, fingerprint, "text-image scorer")
    if cached is not None:
        tensors, meta = cached
        try:
            model = _Clip(dataset.channels, dataset.image_size, len(meta["vocab"]), meta["context"])
            model.load_state_dict(tensors, strict=True)
            info = {**meta["info"], "from_cache": True}
            return ClipScorer(model.to(device), meta["vocab"], meta["context"], dataset, info)
        except (RuntimeError, KeyError, TypeError) as e:
            warnings.warn(f"ignoring unusable text-image scorer cache {path} ({e}); retraining", stacklevel=2)
    with _one_cpu_thread():
        model, vocab, context, info = _train_scorer(dataset, steps, JUDGE_DEVICE, progress)
    meta = {"format": "genlab-text-image-scorer", "version": SCORER_VERSION, "fingerprint": fingerprint,
            "source": dataset.source, "vocab": vocab, "context": context, "info": info}
    _save(path, model, meta, "text-image scorer")
    return ClipScorer(model.to(device), vocab, context, dataset, {**info, "from_cache": False})


# --- scene regions ---

def _relation_id(relation: str | int) -> int:
    """A relation name or index -> its index into SCENE_RELATIONS."""
    if isinstance(relation, str):
        if relation not in SCENE_RELATIONS:
            raise ConfigError(f"unknown scene relation {relation!r}; known: {', '.join(SCENE_RELATIONS)}")
        return SCENE_RELATIONS.index(relation)
    if not 0 <= int(relation) < len(SCENE_RELATIONS):
        raise ConfigError(f"scene relation index {relation} out of range 0..{len(SCENE_RELATIONS) - 1}")
    return int(relation)


def crop_regions(images: torch.Tensor, relations: Sequence[str | int] | np.ndarray, which: int) -> torch.Tensor:
    """uint8 scenes (N, C, S, S) -> for each scene a window (N, C, S/2, S/2) inside the region where item A
    (`which` 0) or item B (1) must lie under its relation (`scene_regions`: a half of the canvas).

    A region is S x S/2; an item is at most S/2 wide, so a square window of side S/2 holds it at its native
    resolution: the window slides along the region to centre the region's ink (pixels above INK_LEVEL, weighted
    by intensity), or sits in the middle of an empty region."""
    canvas = images.shape[-1]
    side = canvas // 2
    rel = np.array([_relation_id(r) for r in relations], dtype=np.int64)
    if len(rel) != len(images):
        raise ValueError(f"{len(rel)} relations for {len(images)} scenes")
    out = torch.empty(len(images), images.shape[1], side, side, dtype=torch.uint8)
    for r in np.unique(rel).tolist():
        idx = torch.from_numpy(np.flatnonzero(rel == r))
        rows, cols = scene_regions(SCENE_RELATIONS[r], canvas)[which]
        region = images[idx][:, :, rows, cols]  # (n, C, h, w)
        h, w = region.shape[2], region.shape[3]
        ink = region.float().mean(1)
        ink = ink * (ink > INK_LEVEL)
        mass = ink.sum((1, 2))
        empty = mass == 0
        mass = mass.clamp(min=1e-6)
        cy = torch.where(empty, torch.tensor((h - 1) / 2), (ink * torch.arange(h).view(1, h, 1)).sum((1, 2)) / mass)
        cx = torch.where(empty, torch.tensor((w - 1) / 2), (ink * torch.arange(w).view(1, 1, w)).sum((1, 2)) / mass)
        top = (cy - (side - 1) / 2).round().long().clamp(0, h - side)
        left = (cx - (side - 1) / 2).round().long().clamp(0, w - side)
        ar = torch.arange(side)
        n_idx = torch.arange(len(idx)).view(-1, 1, 1)
        window = region.permute(0, 2, 3, 1)[n_idx, (top[:, None] + ar)[:, :, None], (left[:, None] + ar)[:, None, :]]
        out[idx] = window.permute(0, 3, 1, 2)
    return out


class RegionClassifier:
    """A small CNN that names the item inside one scene region; `accuracy` is on real held-out scene regions."""

    def __init__(self, net: _ConvTower, channels: int, canvas: int, info: dict):
        self.net = net.eval()
        self.channels, self.canvas = channels, canvas
        self.accuracy: float = info["accuracy"]
        self.train_seconds: float = info["train_seconds"]
        self.info = info

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def classify(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 region windows (N, C, S/2, S/2) (see `crop_regions`) -> class ids (N,)."""
        out = [self.net(to_model_range(c.to(self.device), "symmetric")).argmax(-1).cpu() for c in crops.split(1024)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def read_scenes(self, images: torch.Tensor, relations: Sequence[str | int] | np.ndarray
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 scenes (N, C, H, W) and their relations -> the classes read in region A and in region B."""
        _check_images(images)
        images = fit_images(images.cpu(), self.channels, self.canvas)
        return self.classify(crop_regions(images, relations, 0)), self.classify(crop_regions(images, relations, 1))


def _scene_facts(dataset: ImageDataset, split: str) -> dict[str, np.ndarray]:
    facts = (getattr(dataset, "facts", None) or {}).get(split) or {}
    missing = {"class_a", "class_b", "relation"} - set(facts)
    if missing:
        raise DataError(f"{dataset.source} holds no scene facts ({', '.join(sorted(missing))}) for its {split} split; "
                        "relation scores need a scenes data set such as mnist5k-scenes")
    return facts


def _region_data(dataset: ImageDataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both region windows of every scene of `split` (`crop_regions`) with the item classes the facts say they
    hold: uint8 (2N, C, S/2, S/2), int64 (2N,)."""
    facts = _scene_facts(dataset, split)
    images, rel = dataset.splits[split], facts["relation"]
    x = torch.cat([crop_regions(images, rel, 0), crop_regions(images, rel, 1)])
    y = torch.from_numpy(np.concatenate([facts["class_a"], facts["class_b"]]).astype(np.int64))
    return x, y


def _num_item_classes(dataset: ImageDataset) -> int:
    facts = _scene_facts(dataset, "train")
    top = int(max(facts["class_a"].max(), facts["class_b"].max())) + 1
    return max(top, dataset.num_classes)


def region_steps(n_train: int) -> int:
    """Default training steps: about 3 epochs of the regions (two per scene), between 200 and 1500."""
    return max(200, min(1500, math.ceil(3 * 2 * n_train / BATCH)))


def region_classifier(dataset: ImageDataset, cache_dir: Path | None = None, device: torch.device | str | None = None,
                      steps: int | None = None, progress: bool = True) -> RegionClassifier:
    """The region classifier of a scenes `dataset` (trained on crops of the training scenes' regions, labelled with
    the item classes of the scene facts), from the cache or trained deterministically and cached."""
    if steps is not None and steps < 1:
        raise ConfigError(f"the region classifier needs at least 1 training step, not {steps}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_classes = _num_item_classes(dataset)
    split = _eval_split(dataset)
    _scene_facts(dataset, split)
    steps = steps or region_steps(len(dataset.splits["train"]))
    side = dataset.image_size // 2
    fingerprint = _fingerprint("region-classifier", REGION_VERSION, dataset, {"steps": steps},
                               ["class_a", "class_b", "relation"])
    path = Path(cache_dir or cache_dir_default()) / "region-classifiers" / f"{fingerprint[:24]}.safetensors"
    cached = _load(path, fingerprint, "region classifier")
    if cached is not None:
        tensors, meta = cached
        try:
            net = _ConvTower(dataset.channels, side, n_classes, side)
            net.load_state_dict(tensors, strict=True)
            return RegionClassifier(net.to(device), dataset.channels, dataset.image_size,
                                    {**meta["info"], "from_cache": True})
        except (RuntimeError, KeyError, TypeError) as e:
            warnings.warn(f"ignoring unusable region classifier cache {path} ({e}); retraining", stacklevel=2)
    with _one_cpu_thread():
        net, info = _train_regions(dataset, n_classes, steps, JUDGE_DEVICE, progress)
    meta = {"format": "genlab-region-classifier", "version": REGION_VERSION, "fingerprint": fingerprint,
            "source": dataset.source, "info": info}
    _save(path, net, meta, "region classifier")
    return RegionClassifier(net.to(device), dataset.channels, dataset.image_size, {**info, "from_cache": False})


def _train_regions(dataset: ImageDataset, n_classes: int, steps: int, device: torch.device, progress: bool
                   ) -> tuple[_ConvTower, dict]:
    """Train a region classifier on the windows of the training scenes (fixed seed); it and its test accuracy."""
    t0 = time.perf_counter()
    side = dataset.image_size // 2
    x, y = _region_data(dataset, "train")
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
        torch.manual_seed(JUDGE_SEED)
        net = _ConvTower(dataset.channels, side, n_classes, side).to(device)
    batches = ImageBatches(x, y, min(BATCH, len(x)), JUDGE_SEED, "symmetric", device=device)
    fit_classifier(net, batches, steps, desc="training region classifier" if progress else None)
    seconds = time.perf_counter() - t0
    split = _eval_split(dataset)
    classifier = RegionClassifier(net, dataset.channels, dataset.image_size, {"accuracy": math.nan,
                                                                              "train_seconds": seconds})
    tx, ty = _region_data(dataset, split)
    accuracy = float((classifier.classify(tx) == ty).double().mean())
    return net, {"accuracy": accuracy, "accuracy_split": split, "train_seconds": seconds, "steps": steps,
                 "num_classes": n_classes}


# --- prompt obedience ---

def _class_id(value: int | str, dataset: ImageDataset) -> int:
    if isinstance(value, str):
        names = dataset.class_names or []
        if value not in names:
            raise ConfigError(f"unknown class {value!r} in a prompt; {dataset.source} has {', '.join(names)}")
        return names.index(value)
    return int(value)


def _ordered_fraction(low: np.ndarray, high: np.ndarray) -> float:
    """The fraction of (low, high) pairs with low < high, ties counting half (the Mann-Whitney U / n·m)."""
    diff = high[None, :] - low[:, None]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def attribute_agreement(values: dict[str, np.ndarray], prompts: Sequence[EvalPrompt]) -> dict:
    """For each (class, attribute) with both "low" and "high" prompts: how often a low image measures below a high
    one (`_ordered_fraction`); the mean over those groups overall and per attribute. 0.5 is chance."""
    groups: dict[tuple[int, str], dict[str, list[int]]] = {}
    for i, p in enumerate(prompts):
        if p.class_id is None:
            continue
        for name, level in (p.attributes or {}).items():
            if level not in ("low", "high"):
                raise ConfigError(f"prompt {p.text!r}: attribute levels are 'low' or 'high', not {level!r}")
            groups.setdefault((int(p.class_id), name), {"low": [], "high": []})[level].append(i)
    scores: dict[str, list[float]] = {}
    for (_, name), idx in sorted(groups.items()):
        if idx["low"] and idx["high"]:
            if name not in values:
                raise ConfigError(f"a prompt asks for attribute {name!r}, which measure_attributes does not measure "
                                  f"(it measures {', '.join(sorted(values))})")
            scores.setdefault(name, []).append(_ordered_fraction(values[name][idx["low"]], values[name][idx["high"]]))
    flat = [s for v in scores.values() for s in v]
    return {"attribute_agreement": float(np.mean(flat)) if flat else math.nan,
            "attribute_groups": len(flat),
            "per_attribute": {name: float(np.mean(v)) for name, v in scores.items()}}


def prompt_obedience(images: torch.Tensor, prompts: Sequence[EvalPrompt], dataset: ImageDataset,
                     net: FeatureNet | None = None, regions: RegionClassifier | None = None) -> dict:
    """How well uint8 images (N, C, H, W) obey their prompts (`EvalPrompt`s, one per image), read by classifiers:

    class_accuracy        prompts with a class: the feature net names that class
    attribute_agreement   prompts with "low"/"high" attributes: measured values ordered as asked (see
                          `attribute_agreement`; 0.5 is chance)
    relation_accuracy     scene prompts: the region classifier names class A in region A and class B in region B;
                          item_accuracy counts each item alone; swapped_accuracy (prompts whose two classes
                          differ, n_swappable of them) the two items drawn in each other's places: the right
                          layout with the nouns' roles confused
    Each comes with its count (n_class, attribute_groups, n_scenes); a kind of prompt not present is left out.
    """
    _check_images(images)
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images; give one prompt per image")
    images = fit_images(images.cpu(), dataset.channels, dataset.image_size)
    report: dict = {}
    with_class = [i for i, p in enumerate(prompts) if p.class_id is not None]
    if with_class:
        net = net or feature_net(dataset)
        want = torch.tensor([_class_id(prompts[i].class_id, dataset) for i in with_class])
        report["class_accuracy"] = float((net.classify(images[with_class]) == want).double().mean())
        report["n_class"] = len(with_class)
    if any(p.attributes and p.class_id is not None for p in prompts):
        values = measure_attributes(to_channels(images, 1))
        report |= attribute_agreement({k: np.asarray(v) for k, v in values.items()}, prompts)
    scenes = [i for i, p in enumerate(prompts) if p.scene is not None]
    if scenes:
        regions = regions or region_classifier(dataset)
        rel = [prompts[i].scene[1] for i in scenes]
        got_a, got_b = regions.read_scenes(images[scenes], rel)
        want_a = torch.tensor([_class_id(prompts[i].scene[0], dataset) for i in scenes])
        want_b = torch.tensor([_class_id(prompts[i].scene[2], dataset) for i in scenes])
        ok_a, ok_b = got_a == want_a, got_b == want_b
        report["relation_accuracy"] = float((ok_a & ok_b).double().mean())
        report["item_accuracy"] = float(torch.cat([ok_a, ok_b]).double().mean())
        report["n_scenes"] = len(scenes)
        differ = want_a != want_b
        if differ.any():
            swapped = (got_a == want_b) & (got_b == want_a)
            report["swapped_accuracy"] = float(swapped[differ].double().mean())
            report["n_swappable"] = int(differ.sum())
    return report


# --- the report ---

def matching_images(prompts: Sequence[EvalPrompt], dataset: ImageDataset, split: str = "test",
                    seed: int = JUDGE_SEED) -> tuple[torch.Tensor, list[EvalPrompt]]:
    """For each prompt a random real image of `split` that shows what it asks for, read from the data's facts:
    an object of its class in the class's low or high third of each attribute it names (the thresholds of
    caption_info, as the captions were made), or a scene of its picture (either wording). Prompts that no image
    matches are left out. Returns the images and the prompts they stand for: what a perfect generator would score.
    """
    facts = (getattr(dataset, "facts", None) or {}).get(split) or {}
    labels = dataset.labels[split]
    candidates: dict[tuple, np.ndarray] = {}
    scenes = {"class_a", "class_b", "relation"} <= set(facts)
    if scenes:  # (A, relation, B) per scene, and each relation's inverse: "A left of B" is "B right of A"
        picture = np.stack([facts["class_a"], facts["relation"], facts["class_b"]], 1)
        inverse = np.array([SCENE_RELATIONS.index(INVERSE_RELATION[r]) for r in SCENE_RELATIONS])
    info = dataset.caption_info or {}
    levels: dict[str, np.ndarray] = {}
    if labels is not None and "thresholds" in info and set(info["thresholds"]) <= set(facts):
        levels = attribute_levels(facts, labels.numpy(), {a: np.asarray(q) for a, q in info["thresholds"].items()})
    rng = np.random.default_rng(seed)
    picks, kept = [], []
    for p in prompts:
        if p.scene is not None and scenes:
            a, r, b = _class_id(p.scene[0], dataset), _relation_id(p.scene[1]), _class_id(p.scene[2], dataset)
            key: tuple = ("scene", a, r, b)
            if key not in candidates:
                same = (picture == (a, r, b)).all(1) | (picture == (b, inverse[r], a)).all(1)
                candidates[key] = np.flatnonzero(same)
        elif p.class_id is not None and labels is not None and all(a in levels for a in p.attributes):
            key = ("object", _class_id(p.class_id, dataset), *sorted(p.attributes.items()))
            if key not in candidates:
                ok = labels.numpy() == key[1]
                for name, level in p.attributes.items():
                    ok &= levels[name] == (-1 if level == "low" else 1)
                candidates[key] = np.flatnonzero(ok)
        else:
            continue
        if len(candidates[key]):
            picks.append(int(rng.choice(candidates[key])))
            kept.append(p)
    index = torch.tensor(picks, dtype=torch.long)
    return dataset.splits[split][index], kept


def _kind_scores(images: torch.Tensor, prompts: list[EvalPrompt], dataset: ImageDataset, scorer: ClipScorer,
                 pool: list[str], distractors: int, net: FeatureNet | None, regions: RegionClassifier | None) -> dict:
    canonical = [p.canonical for p in prompts]
    return {**prompt_obedience(images, prompts, dataset, net, regions),
            "clip_score": scorer.clip_score(images, canonical),
            "r_precision": scorer.r_precision(images, canonical, pool, distractors, seed=JUDGE_SEED)}


def prompt_report(generate: Callable[[list[str], int], torch.Tensor], dataset: ImageDataset,
                  images_per_prompt: int = 4, seed: int = 0, progress: bool = True,
                  scorer: ClipScorer | None = None, regions: RegionClassifier | None = None,
                  net: FeatureNet | None = None, reference: bool = True) -> dict:
    """Generate `images_per_prompt` images for each of `dataset.eval_prompts` and score them per kind of prompt.

    `generate(prompts, seed)` returns one uint8 image (C, H, W) per prompt; it is called once per kind and repeat
    r with seed `seed + r`. Per kind: counts ("prompts", "images"), the classifier scores of `prompt_obedience`
    that apply, and CLIPScore and R-precision (99 distractors from the test captions) of each image with its
    prompt's `canonical` text (the scorer knows only training words, so a synonym is scored by what it means).

    Beside them the judges' ceilings: "scorer" (its retrieval_accuracy: real test images with one of their own
    captions), "feature_net_accuracy" and, for scenes, "region_classifier_accuracy"; and with `reference`, per kind
    the same scores of real test images that match the prompts (`matching_images`): what a perfect generator gets.

    "samples" holds, per kind, the prompt texts and the images as uint8 (P, images_per_prompt, C, H, W), for
    `prompt_grid`; drop it before writing the report as JSON.
    """
    if images_per_prompt < 1:
        raise ConfigError(f"images_per_prompt must be at least 1, not {images_per_prompt}")
    prompts = list(getattr(dataset, "eval_prompts", None) or [])
    if not prompts:
        raise DataError(f"{dataset.source} has no evaluation prompts; use a built-in captioned set "
                        "such as mnist5k-captions or mnist5k-scenes")
    by_kind = {k: [p for p in prompts if p.kind == k] for k in KINDS}
    by_kind = {k: v for k, v in by_kind.items() if v}
    scorer = scorer or clip_scorer(dataset, progress=progress)
    if any(p.scene is not None for p in prompts):
        regions = regions or region_classifier(dataset, progress=progress)
    if any(p.class_id is not None for p in prompts):
        net = net or feature_net(dataset)
    split = _eval_split(dataset)
    pool = _flat_captions(dataset, split)
    distractors = min(99, len(set(pool)) - 1)
    report: dict = {"split": split, "images_per_prompt": images_per_prompt, "seed": seed}
    samples: dict = {}
    total = images_per_prompt * sum(len(v) for v in by_kind.values())
    with progress_bar(total=total, desc="generating for prompts", unit="image", leave=False,
                      disable=not progress) as bar:
        for kind, kind_prompts in by_kind.items():
            texts = [p.text for p in kind_prompts]
            rounds = []
            for r in range(images_per_prompt):
                out = generate(list(texts), seed + r)
                if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8 or out.dim() != 4 \
                        or len(out) != len(texts):
                    got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ConfigError(f"generate(prompts, seed) must return uint8 images (N, C, H, W), one per "
                                      f"prompt ({len(texts)}); it returned {got}")
                rounds.append(out.cpu())
                bar.update(len(texts))
            grid = torch.stack(rounds, 1)  # (P, images_per_prompt, C, H, W): prompt-major
            samples[kind] = {"prompts": texts, "images": grid}
            each = [p for p in kind_prompts for _ in range(images_per_prompt)]
            report[kind] = {"prompts": len(kind_prompts), "images": len(each),
                            **_kind_scores(grid.flatten(0, 1), each, dataset, scorer, pool, distractors, net, regions)}
            if reference:
                real, matched = matching_images(each, dataset, split, seed)
                if matched:
                    report[kind]["reference"] = {
                        "images": len(matched),
                        **_kind_scores(real, matched, dataset, scorer, pool, distractors, net, regions)}
    report["r_precision_chance"] = 1 / (distractors + 1)
    report["scorer"] = scorer.describe()
    if net is not None:
        report["feature_net_accuracy"] = net.accuracy
    if regions is not None:
        report["region_classifier_accuracy"] = regions.accuracy
    report["samples"] = samples
    return report


def prompt_grid(sample: dict) -> np.ndarray:
    """One kind's entry of a report's "samples" -> an (H', W', C) uint8 grid: a row of images per prompt, in the
    order of `sample["prompts"]`."""
    images = sample["images"]
    return image_grid(images.flatten(0, 1), nrow=images.shape[1])
