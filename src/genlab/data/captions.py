"""Captioned image data for text-to-image models: built-in captioned sets, measured attributes, two-item scenes
and held-out evaluation prompts.

Object sets (`fashion-mnist-captions`, `mnist5k-captions`) keep the images, labels and splits of their source and
give each image three captions that say more than its class: a noun for the class and 0-2 attribute words
measured from its pixels (measure_attributes). An attribute word marks an image in the lowest or the highest third
of its class (terciles over the training pool, train + valid, never test); the middle third is not mentioned, so
"a dark coat" and "a bright coat" differ visibly. Fashion uses size, width and brightness; digits use thickness,
width and slant (size is left out for digits: it mostly repeats thickness).

Scene sets (`fashion-mnist-scenes`, `mnist5k-scenes`) put two items, each large (24 px) or small (16 px), on a
black 48x48 canvas, one in each half (scene_regions), and caption their relation: "a sneaker to the left of a bag"
and "a bag to the right of a sneaker" describe the same picture. Train/valid scenes are made of the source's
training items, test scenes of its test items.

Generalisation is measured with vocabulary and pictures that no training caption uses (EvalPrompt):
- phrasing: a HELD_OUT_TEMPLATE with a train noun ("here is a sneaker"),
- synonym: a train template with the class's held-out noun ("a running shoe", "a dark 7"),
- combination: HELD_OUT_PICTURES, ten left/right and ten above/below arrangements of two classes (10% of the
  200) that train/valid scenes never show, in either wording; test scenes show every arrangement.
Each prompt carries `canonical`, the same content in training vocabulary, for scorers trained on the captions.
The held-out nouns were checked with all-MiniLM-L6-v2: each is nearer (cosine) to its own class's train nouns
than to any other class's. Plain synonyms that failed that check were not used: "sweater" and "tee" sit nearer
"shirt", "flip-flop" nearer "t-shirt"; so "sweater" is a train noun of Pullover (held out: "knitted jumper") and
Sandal's held-out noun keeps its head word ("open-toed sandal").

Every random choice uses fixed seeds (CAPTION_SEED, never the training seed): two builds give identical data.
"""

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from genlab.data.images import BUILTIN_IMAGES, DIGIT_NAMES, RawImages, pool_and_test_indices, resize, to_channels
from genlab.errors import ConfigError, DataError

CAPTION_SEED = 1729  # fixed: captions and scenes are part of the data set, not of a training run
CAPTIONS_PER_IMAGE = 3

# --- vocabulary: train words appear in captions, held-out words never do ---

TRAIN_TEMPLATES = ("a {}", "{}", "a photo of a {}", "a picture of a {}")
HELD_OUT_TEMPLATES = ("this image shows a {}", "here is a {}", "an example of a {}")

# per class (FASHION_NAMES order) its train nouns and its held-out noun
FASHION_TRAIN_NOUNS = (("t-shirt", "top"), ("pair of trousers",), ("pullover", "sweater"), ("dress",), ("coat",),
                       ("sandal",), ("shirt", "button-up shirt"), ("sneaker", "sports shoe"), ("bag",),
                       ("ankle boot",))
FASHION_HELD_OUT_NOUNS = ("tank top", "pair of pants", "knitted jumper", "gown", "jacket", "open-toed sandal",
                          "blouse", "running shoe", "handbag", "bootie")
DIGIT_TRAIN_NOUNS = tuple((name, f"handwritten {name}") for name in DIGIT_NAMES)
DIGIT_HELD_OUT_NOUNS = tuple(str(d) for d in range(10))  # the numeral: "a 7" for the train noun "seven"

ATTRIBUTE_WORDS = {  # attribute -> (word for the class's low third, word for its high third)
    "size": ("small", "large"),
    "brightness": ("dark", "bright"),
    "width": ("narrow", "wide"),
    "thickness": ("thin", "thick"),
    "slant": ("upright", "slanted"),
}
FASHION_ATTRIBUTES = ("size", "width", "brightness")  # also the words' order in a caption: "a small wide dark bag"
DIGIT_ATTRIBUTES = ("thickness", "width", "slant")
LEVELS = ("low", "high")

# --- scenes ---

SCENE_CANVAS = 48
SCENE_SMALL, SCENE_LARGE = 16, 24  # item sides in pixels, resized from 28 (antialiased)
SCENE_SIZE_WORDS = ("small", "large")  # facts size_a / size_b: 0 small, 1 large
SCENE_RELATIONS = ("left", "right", "above", "below")
RELATION_PHRASES = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
INVERSE_RELATION = {"left": "right", "right": "left", "above": "below", "below": "above"}
# (A, relation, B) pictures that train/valid scenes never show: for every class A, "A left of A+3" and
# "A above A+6" (mod 10). Their mirror images ("A+3 left of A") are shown, so each class is seen in each position.
HELD_OUT_PICTURES: tuple[tuple[int, str, int], ...] = (
    tuple((a, "left", (a + 3) % 10) for a in range(10)) + tuple((a, "above", (a + 6) % 10) for a in range(10)))


def words(text: str) -> list[str]:
    """Lower-case words and numbers of `text` ("t-shirt" -> ["t", "shirt"])."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _vocabulary(phrases: Sequence[str]) -> set[str]:
    return {w for phrase in phrases for w in words(phrase)}


TRAIN_WORDS = frozenset(
    _vocabulary(TRAIN_TEMPLATES) | {"a", "an"}
    | _vocabulary([n for nouns in FASHION_TRAIN_NOUNS + DIGIT_TRAIN_NOUNS for n in nouns])
    | _vocabulary([w for pair in ATTRIBUTE_WORDS.values() for w in pair])
    | _vocabulary(list(RELATION_PHRASES.values()) + list(SCENE_SIZE_WORDS)))
# words that only held-out templates and nouns use ("here", "running", "7", ...): no caption holds one
HELD_OUT_WORDS = frozenset(_vocabulary(HELD_OUT_TEMPLATES + FASHION_HELD_OUT_NOUNS + DIGIT_HELD_OUT_NOUNS)
                           - TRAIN_WORDS)

_AN = re.compile(r"\ba (?=(?!one\b)[aeiou]|8)")  # "a ankle boot" -> "an ankle boot"; "a one", "a 7" stay


def sentence(template: str, description: str) -> str:
    """`template` filled with `description`, with "a" before a vowel sound made "an"."""
    return _AN.sub("an ", template.format(description))


@dataclass
class EvalPrompt:
    """A prompt outside the training captions, with what a generated image of it should show."""

    text: str
    kind: str  # "phrasing" (held-out template), "synonym" (held-out noun) or "combination" (held-out scene)
    canonical: str  # the same content with a train template and train nouns
    class_id: int | None = None  # the class an object prompt names (None for scenes)
    attributes: dict[str, str] = field(default_factory=dict)  # attribute -> "low" | "high" (object prompts)
    scene: tuple[int, str, int] | None = None  # (class A, relation, class B): A is <relation> of B


# --- attributes measured from pixels ---

INK_LEVEL = 32  # pixels above this (of 255) are ink: low enough to keep the faint parts of dark garments
MEASURED = ("size", "brightness", "width", "height", "slant", "thickness")


def measure_attributes(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Attributes of uint8 images (N, 1, H, W) (RGB is made gray), float64 (N,) each; no ink measures 0.

    size: fraction of pixels that are ink. brightness: mean intensity of the ink, in [0, 1].
    width, height: extent of the ink as a fraction of the side, sqrt(12 var + 1) of its intensity-weighted
      columns (rows), which is exact for a uniform bar and ignores stray pixels that a bounding box would not.
    slant: |shear| from second moments, |mu11 / mu02| (0 upright, 1 at 45 degrees either way).
    thickness: stroke width in pixels, 2 * ink area / ink perimeter (t for a long stroke t pixels wide)."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    gray = to_channels(images, 1)[:, 0]
    h, w = gray.shape[1:]
    rows, cols = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in MEASURED}
    for chunk in gray.split(8192):  # bounds the float copies
        ink = (chunk > INK_LEVEL).float()  # float: sums over bool tensors are several times slower
        weight = chunk.float().mul_(1 / 255).mul_(ink)
        # moments from marginals (N, H) / (N, W): a few small matmuls instead of passes over every pixel
        by_row, by_col = weight.sum(2).double(), weight.sum(1).double()
        row_col = torch.einsum("nhw,h->nw", weight, rows.float()).double() @ cols
        mass = by_col.sum(1)
        safe = mass.clamp(min=1e-12)
        cy, cx = by_row @ rows / safe, by_col @ cols / safe
        var_y = (by_row @ rows.square() / safe - cy.square()).clamp(min=0)
        var_x = (by_col @ cols.square() / safe - cx.square()).clamp(min=0)
        cov = row_col / safe - cx * cy
        padded = F.pad(ink, (1, 1, 1, 1))
        perimeter = ((padded[:, 1:] - padded[:, :-1]).abs().sum((1, 2))
                     + (padded[:, :, 1:] - padded[:, :, :-1]).abs().sum((1, 2))).double()
        area = ink.sum((1, 2)).double()
        has_ink, zero = area > 0, torch.zeros_like(area)
        out["size"].append(area / (h * w))
        out["brightness"].append(torch.where(has_ink, mass / area.clamp(min=1), zero))
        out["width"].append(torch.where(has_ink, (12 * var_x + 1).sqrt() / w, zero))
        out["height"].append(torch.where(has_ink, (12 * var_y + 1).sqrt() / h, zero))
        out["slant"].append(torch.where(var_y > 1e-9, (cov / var_y.clamp(min=1e-9)).abs(), zero))
        out["thickness"].append(torch.where(has_ink, 2 * area / perimeter.clamp(min=1), zero))
    return {name: torch.cat(parts).numpy() for name, parts in out.items()}


def attribute_terciles(values: dict[str, np.ndarray], labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """name -> (num_classes, 2): each class's 1/3 and 2/3 quantiles of the values (NaN for an absent class)."""
    out = {}
    for name, v in values.items():
        q = np.full((num_classes, 2), np.nan)
        for c in range(num_classes):
            if (labels == c).any():
                q[c] = np.quantile(v[labels == c], [1 / 3, 2 / 3])
        out[name] = q
    return out


def attribute_levels(values: dict[str, np.ndarray], labels: np.ndarray,
                     thresholds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """name -> int8 (N,): -1 below the class's low threshold ("low"), +1 above its high one ("high"), else 0.

    `thresholds` as attribute_terciles returns them, or np.asarray of caption_info["thresholds"][name]."""
    out = {}
    for name, q in thresholds.items():
        q = np.asarray(q, dtype=np.float64)[labels]
        v = values[name]
        out[name] = np.where(v < q[:, 0], -1, np.where(v > q[:, 1], 1, 0)).astype(np.int8)
    return out


# --- rendering many captions fast ---

def _render(columns: Sequence[np.ndarray], radices: Sequence[int], render: Callable[..., str]) -> list[list[str]]:
    """Captions for integer columns of shape (N, K), `render(*values)` called once per distinct combination."""
    code = np.zeros(columns[0].shape, dtype=np.int64)
    for col, radix in zip(columns, radices, strict=True):
        code = code * radix + col
    uniq, inverse = np.unique(code.ravel(), return_inverse=True)
    texts = []
    for c in uniq.tolist():
        values = []
        for radix in reversed(radices):
            c, v = divmod(c, radix)
            values.append(v)
        texts.append(render(*reversed(values)))
    return np.array(texts, dtype=object)[inverse.reshape(code.shape)].tolist()


def object_captions(labels: np.ndarray, levels: dict[str, np.ndarray], attributes: Sequence[str],
                    nouns: Sequence[Sequence[str]], rng: np.random.Generator,
                    per_image: int = CAPTIONS_PER_IMAGE) -> list[list[str]]:
    """Per image `per_image` captions: a train template, one of its class's train nouns, and 0-2 of its extreme
    attributes (levels -1/+1), each drawn uniformly; words in the order of `attributes`."""
    n, k, na = len(labels), per_image, len(attributes)
    level = np.stack([levels[a] for a in attributes], -1)[:, None, :]  # (N, 1, A)
    extreme = level != 0
    template = rng.integers(len(TRAIN_TEMPLATES), size=(n, k))
    counts = np.array([len(v) for v in nouns])
    noun = (rng.random((n, k)) * counts[labels][:, None]).astype(np.int64)
    n_words = rng.integers(0, 3, size=(n, k))
    priority = np.where(extreme, rng.random((n, k, na)), np.inf)  # a random subset: the n_words first extremes
    mention = (priority.argsort(-1).argsort(-1) < n_words[..., None]) & extreme
    state = np.where(mention, 1 + (level > 0), 0)  # 0 not mentioned, 1 the low word, 2 the high word

    def render(t: int, c: int, j: int, *states: int) -> str:
        adjectives = [ATTRIBUTE_WORDS[a][s - 1] for a, s in zip(attributes, states, strict=True) if s]
        return sentence(TRAIN_TEMPLATES[t], " ".join([*adjectives, nouns[c][j]]))

    columns = [template, np.broadcast_to(labels[:, None], (n, k)), noun] + [state[..., i] for i in range(na)]
    return _render(columns, [len(TRAIN_TEMPLATES), len(nouns), int(counts.max())] + [3] * na, render)


def object_eval_prompts(nouns: Sequence[Sequence[str]], held_out_nouns: Sequence[str],
                        attributes: Sequence[str]) -> list[EvalPrompt]:
    """For every class the bare noun and, per attribute, its low and its high word: as "phrasing" prompts
    (held-out templates, the first train noun; all of them for the bare noun, one in turn otherwise) and as
    "synonym" prompts ("a {}" with the held-out noun)."""
    prompts = []
    for c, (train, synonym) in enumerate(zip(nouns, held_out_nouns, strict=True)):
        variants = [({}, "")] + [({a: level}, word + " ") for a in attributes
                                 for level, word in zip(LEVELS, ATTRIBUTE_WORDS[a], strict=True)]
        for i, (attrs, adjective) in enumerate(variants):
            canonical = sentence(TRAIN_TEMPLATES[0], adjective + train[0])
            templates = HELD_OUT_TEMPLATES if not attrs else [HELD_OUT_TEMPLATES[i % len(HELD_OUT_TEMPLATES)]]
            prompts += [EvalPrompt(sentence(t, adjective + train[0]), "phrasing", canonical, c, dict(attrs))
                        for t in templates]
            prompts.append(EvalPrompt(sentence(TRAIN_TEMPLATES[0], adjective + synonym), "synonym", canonical, c,
                                      dict(attrs)))
    return prompts


# --- scenes ---

def scene_regions(relation: str, size: int = SCENE_CANVAS) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """((rows, cols) where item A lies, (rows, cols) where item B lies) on a size x size canvas, for "A is
    <relation> of B": the two halves of the canvas, left/right or top/bottom."""
    half, whole = size // 2, slice(0, size)
    first, second = slice(0, half), slice(half, size)
    regions = {"left": ((whole, first), (whole, second)), "right": ((whole, second), (whole, first)),
               "above": ((first, whole), (second, whole)), "below": ((second, whole), (first, whole))}
    if relation not in regions:
        raise ConfigError(f"relation must be one of {', '.join(SCENE_RELATIONS)}, not {relation!r}")
    return regions[relation]


def scene_pictures(num_classes: int, exclude: Sequence[tuple[int, str, int]] = ()) -> list[tuple[int, str, int]]:
    """Every picture of two classes, written canonically as (left item, "left", right item) or (top item,
    "above", bottom item), less `exclude` (canonical triples too)."""
    skip = set(exclude)
    return [(a, rel, b) for rel in ("left", "above") for a in range(num_classes) for b in range(num_classes)
            if (a, rel, b) not in skip]


def compose_scenes(items: torch.Tensor, item_labels: np.ndarray, n: int, rng: np.random.Generator,
                   pictures: Sequence[tuple[int, str, int]] | None = None, canvas: int = SCENE_CANVAS,
                   sizes: tuple[int, int] = (SCENE_SMALL, SCENE_LARGE)) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """n scenes uint8 (n, C, canvas, canvas) of two items each, and their facts.

    Scene i shows picture (A, relation, B) from `pictures` (every picture equally often, in shuffled order;
    default: scene_pictures of all classes): a random item of class A inside A's scene_regions, one of class B
    inside B's, each small or large (sizes[0], sizes[1]) at a random place in its region. Facts, int64 (n,):
    class_a, class_b, relation (index into SCENE_RELATIONS), size_a, size_b (0 small, 1 large)."""
    item_labels = np.asarray(item_labels)
    num_classes = int(item_labels.max()) + 1
    pictures = list(pictures) if pictures is not None else scene_pictures(num_classes)
    if max(sizes) > canvas // 2:
        raise ConfigError(f"items of {max(sizes)} px do not fit in half of a {canvas} px canvas")
    chosen = rng.permutation(np.arange(n) % len(pictures))
    table = np.array([(a, SCENE_RELATIONS.index(rel), b) for a, rel, b in pictures], dtype=np.int64)
    class_a, relation, class_b = table[chosen].T
    size_a, size_b = rng.integers(0, 2, size=(2, n))
    # a random item of each class: positions in the items sorted by class
    order = np.argsort(item_labels, kind="stable")
    counts = np.bincount(item_labels, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    missing = sorted(set(table[:, [0, 2]].ravel().tolist()) - set(np.flatnonzero(counts).tolist()))
    if missing:
        raise DataError(f"cannot compose scenes of classes {missing}: there are no items of them")
    regions = np.array([[(r.start, r.stop, c.start, c.stop) for r, c in scene_regions(rel, canvas)]
                        for rel in SCENE_RELATIONS])  # (relation, item A/B, 4)
    out = np.zeros((n, canvas, canvas, items.shape[1]), dtype=np.uint8)
    for which, (cls, big) in enumerate(((class_a, size_a), (class_b, size_b))):
        pick = order[starts[cls] + (rng.random(n) * counts[cls]).astype(np.int64)]
        side = np.asarray(sizes)[big]
        box = regions[relation, which]  # (n, 4): row start, row stop, col start, col stop
        top = box[:, 0] + (rng.random(n) * (box[:, 1] - box[:, 0] - side + 1)).astype(np.int64)
        left = box[:, 2] + (rng.random(n) * (box[:, 3] - box[:, 2] - side + 1)).astype(np.int64)
        for s in sizes:
            sel = np.flatnonzero(side == s)
            if len(sel) == 0:
                continue
            pixels = resize(items[torch.from_numpy(pick[sel])], s).permute(0, 2, 3, 1).numpy()
            ar = np.arange(s)
            out[sel[:, None, None], (top[sel, None] + ar)[:, :, None], (left[sel, None] + ar)[:, None, :]] = pixels
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    facts = {"class_a": class_a, "class_b": class_b, "relation": relation, "size_a": size_a, "size_b": size_b}
    return images, {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in facts.items()}


def scene_captions(facts: dict[str, np.ndarray], nouns: Sequence[Sequence[str]], rng: np.random.Generator,
                   per_image: int = CAPTIONS_PER_IMAGE) -> list[list[str]]:
    """Per scene `per_image` captions, each drawn independently: "A <relation> B" or the same picture the other
    way round, "B <inverse> A" (each with probability 1/2), a train template, train nouns, and for each item its
    size word with probability 1/2 ("a small seven above a large two")."""
    n, k = len(facts["class_a"]), per_image
    col = {name: np.broadcast_to(v[:, None], (n, k)) for name, v in facts.items()}
    inverse = np.array([SCENE_RELATIONS.index(INVERSE_RELATION[r]) for r in SCENE_RELATIONS])
    swap = rng.random((n, k)) < 0.5
    first, second = np.where(swap, col["class_b"], col["class_a"]), np.where(swap, col["class_a"], col["class_b"])
    relation = np.where(swap, inverse[col["relation"]], col["relation"])
    first_size = np.where(swap, col["size_b"], col["size_a"])
    second_size = np.where(swap, col["size_a"], col["size_b"])
    template = rng.integers(len(TRAIN_TEMPLATES), size=(n, k))
    counts = np.array([len(v) for v in nouns])
    first_noun = (rng.random((n, k)) * counts[first]).astype(np.int64)
    second_noun = (rng.random((n, k)) * counts[second]).astype(np.int64)
    first_said = np.where(rng.random((n, k)) < 0.5, 1 + first_size, 0)  # 0 no size word, 1 small, 2 large
    second_said = np.where(rng.random((n, k)) < 0.5, 1 + second_size, 0)

    def item(c: int, j: int, said: int) -> str:
        return (SCENE_SIZE_WORDS[said - 1] + " " if said else "") + nouns[c][j]

    def render(t: int, a: int, ja: int, sa: int, r: int, b: int, jb: int, sb: int) -> str:
        phrase = RELATION_PHRASES[SCENE_RELATIONS[r]]
        return sentence(TRAIN_TEMPLATES[t], f"{item(a, ja, sa)} {phrase} a {item(b, jb, sb)}")

    m, c = int(counts.max()), len(nouns)
    return _render([template, first, first_noun, first_said, relation, second, second_noun, second_said],
                   [len(TRAIN_TEMPLATES), c, m, 3, len(SCENE_RELATIONS), c, m, 3], render)


def scene_prompt(nouns: Sequence[Sequence[str]], a: int, relation: str, b: int) -> str:
    """"a A <relation> a B" with each class's first train noun: the wording of every scene prompt genlab asks."""
    return sentence(TRAIN_TEMPLATES[0], f"{nouns[a][0]} {RELATION_PHRASES[relation]} a {nouns[b][0]}")


@dataclass(frozen=True)
class GroundedPhrase:
    """A phrase of a caption and where in the image the thing it names lies: characters [start, end) of the
    caption, and a box (top, left, bottom, right) in fractions of the image's height and width."""

    start: int
    end: int
    box: tuple[float, float, float, float]


_TEMPLATE_PREFIXES = sorted((t.split("{}")[0].replace("a ", "an? ") for t in TRAIN_TEMPLATES), key=len, reverse=True)
_SCENE_CAPTION = re.compile(
    f"^(?:{'|'.join(_TEMPLATE_PREFIXES)})(.+?) ({'|'.join(RELATION_PHRASES.values())}) an? (.+)$")


def scene_grounding(caption: str) -> list[GroundedPhrase]:
    """The two item phrases of a caption in the scenes' training wording ("small seven" and "two" in "a small
    seven above a two"), each with the half of the canvas that the relation puts it in; [] for text without a
    relation between two items (the empty prompt)."""
    m = _SCENE_CAPTION.match(caption)
    if m is None:
        return []
    relation = next(r for r, phrase in RELATION_PHRASES.items() if phrase == m.group(2))
    halves = [(rows.start / 2, cols.start / 2, rows.stop / 2, cols.stop / 2)
              for rows, cols in scene_regions(relation, 2)]
    return [GroundedPhrase(m.start(g), m.end(g), halves[i]) for i, g in enumerate((1, 3))]


# caption_info["kind"] -> what grounds its captions (`genlab train diffusion --grounding-weight`)
CAPTION_GROUNDING: dict[str, Callable[[str], list[GroundedPhrase]]] = {"scenes": scene_grounding}


def scene_eval_prompts(nouns: Sequence[Sequence[str]],
                       pictures: Sequence[tuple[int, str, int]] = HELD_OUT_PICTURES) -> list[EvalPrompt]:
    """Two "combination" prompts per picture (default: the held-out ones), "a A <relation> a B" and
    "a B <inverse> a A"."""
    prompts = []
    for a, rel, b in pictures:
        for x, r, y in ((a, rel, b), (b, INVERSE_RELATION[rel], a)):
            text = scene_prompt(nouns, x, r, y)
            prompts.append(EvalPrompt(text, "combination", text, None, {}, (x, r, y)))
    return prompts


# --- built-in captioned sets ---

def _rng(name: str, part: int) -> np.random.Generator:
    return np.random.default_rng([CAPTION_SEED, zlib.crc32(name.encode()), part])


def _vocabulary_info(class_names: list[str], nouns: Sequence[Sequence[str]]) -> dict:
    return {"templates": list(TRAIN_TEMPLATES), "nouns": {c: list(v) for c, v in zip(class_names, nouns, strict=True)},
            "captions_per_image": CAPTIONS_PER_IMAGE, "seed": CAPTION_SEED}


def captioned_objects(name: str, raw: RawImages, attributes: Sequence[str], nouns: Sequence[Sequence[str]],
                      held_out_nouns: Sequence[str]) -> RawImages:
    """`raw` (labelled) with captions, measured attributes as facts, eval prompts and caption_info."""
    if raw.labels is None or raw.class_names is None:
        raise DataError(f"{name}: captioned object sets need labelled images")
    labels = raw.labels.numpy()
    values = measure_attributes(raw.images)
    pool = np.arange(len(labels)) if raw.test_images is not None else pool_and_test_indices(len(labels))[0]
    thresholds = attribute_terciles({a: values[a][pool] for a in attributes}, labels[pool], len(raw.class_names))
    captions = object_captions(labels, attribute_levels(values, labels, thresholds), attributes, nouns, _rng(name, 0))
    test_captions = test_values = None
    if raw.test_images is not None:
        test_labels = raw.test_labels.numpy()
        test_values = measure_attributes(raw.test_images)
        test_captions = object_captions(test_labels, attribute_levels(test_values, test_labels, thresholds),
                                        attributes, nouns, _rng(name, 1))
    info = {
        "kind": "objects",
        "attributes": list(attributes),
        "words": {a: dict(zip(LEVELS, ATTRIBUTE_WORDS[a], strict=True)) for a in attributes},
        "thresholds": {a: thresholds[a].tolist() for a in attributes},  # per class id: [low below, high above]
        "thresholds_from": "class terciles of the training pool (train + valid)",
        "ink_level": INK_LEVEL,
        **_vocabulary_info(raw.class_names, nouns),
        "held_out_templates": list(HELD_OUT_TEMPLATES),
        "held_out_nouns": dict(zip(raw.class_names, held_out_nouns, strict=True)),
    }
    return RawImages(raw.images, raw.labels, raw.class_names, raw.test_images, raw.test_labels, captions,
                     test_captions, values, test_values, object_eval_prompts(nouns, held_out_nouns, attributes), info)


def captioned_scenes(name: str, raw: RawImages, nouns: Sequence[Sequence[str]], n_pool: int, n_test: int) -> RawImages:
    """Scenes of two items of `raw`: n_pool train/valid scenes of its training items (never a held-out picture)
    and n_test test scenes of its test items (every picture). Labels: the class of the left (or top) item."""
    if raw.labels is None or raw.class_names is None:
        raise DataError(f"{name}: scenes need labelled items")
    if raw.test_images is not None:
        items, labels = raw.images, raw.labels.numpy()
        test_items, test_labels = raw.test_images, raw.test_labels.numpy()
    else:
        pool, test = pool_and_test_indices(len(raw.images))
        items, labels = raw.images[torch.from_numpy(pool)], raw.labels.numpy()[pool]
        test_items, test_labels = raw.images[torch.from_numpy(test)], raw.labels.numpy()[test]
    c = len(raw.class_names)
    images, facts = compose_scenes(items, labels, n_pool, _rng(name, 0), scene_pictures(c, HELD_OUT_PICTURES))
    test_images, test_facts = compose_scenes(test_items, test_labels, n_test, _rng(name, 1), scene_pictures(c))
    info = {
        "kind": "scenes",
        "canvas": SCENE_CANVAS,
        "item_sizes": dict(zip(SCENE_SIZE_WORDS, (SCENE_SMALL, SCENE_LARGE), strict=True)),
        "relations": list(SCENE_RELATIONS),
        "facts": "A is <relation> of B, written canonically: relation is left or above",
        "labels": "class of the left (or top) item",
        "items": "train/valid scenes of the source's training items, test scenes of its test items",
        "held_out_pictures": [[raw.class_names[a], rel, raw.class_names[b]] for a, rel, b in HELD_OUT_PICTURES],
        **_vocabulary_info(raw.class_names, nouns),
    }
    return RawImages(images, torch.from_numpy(facts["class_a"]), list(raw.class_names), test_images,
                     torch.from_numpy(test_facts["class_a"]), scene_captions(facts, nouns, _rng(name, 2)),
                     scene_captions(test_facts, nouns, _rng(name, 3)), facts, test_facts, scene_eval_prompts(nouns),
                     info)


def _source(name: str) -> RawImages:
    return BUILTIN_IMAGES[name][0]()


def fashion_mnist_captions() -> RawImages:
    return captioned_objects("fashion-mnist-captions", _source("fashion-mnist"), FASHION_ATTRIBUTES,
                             FASHION_TRAIN_NOUNS, FASHION_HELD_OUT_NOUNS)


def mnist5k_captions() -> RawImages:
    return captioned_objects("mnist5k-captions", _source("mnist5k"), DIGIT_ATTRIBUTES, DIGIT_TRAIN_NOUNS,
                             DIGIT_HELD_OUT_NOUNS)


def fashion_mnist_scenes() -> RawImages:
    return captioned_scenes("fashion-mnist-scenes", _source("fashion-mnist"), FASHION_TRAIN_NOUNS, 30_000, 5_000)


def mnist5k_scenes() -> RawImages:
    return captioned_scenes("mnist5k-scenes", _source("mnist5k"), DIGIT_TRAIN_NOUNS, 9_000, 1_000)


BUILTIN_CAPTIONED: dict[str, tuple[Callable[[], RawImages], str]] = {
    "fashion-mnist-captions": (fashion_mnist_captions, "fashion-mnist with 3 captions per image: class nouns and "
                                                       "measured size/width/brightness words; held-out eval prompts"),
    "mnist5k-captions": (mnist5k_captions, "mnist5k with 3 captions per image: digit words and measured "
                                           "thickness/width/slant words; held-out eval prompts"),
    "fashion-mnist-scenes": (fashion_mnist_scenes, "two Fashion-MNIST items on 48x48, captioned by relation "
                                                   "(left/right/above/below); 30k train/valid + 5k test scenes"),
    "mnist5k-scenes": (mnist5k_scenes, "two mnist5k digits on 48x48, captioned by relation (left/right/above/"
                                       "below); 9k train/valid + 1k test scenes"),
}

BUILTIN_IMAGES.update(BUILTIN_CAPTIONED)  # so load_images, `genlab data list` and the CLI know them
