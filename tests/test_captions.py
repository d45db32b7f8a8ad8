"""Captioned image data: built-in captioned sets and scenes, measured attributes, held-out prompts, metadata.jsonl
folders, .npz captions and the alignment of captions and facts with images through the splits."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data.captions import (
    ATTRIBUTE_WORDS,
    BUILTIN_CAPTIONED,
    DIGIT_ATTRIBUTES,
    DIGIT_HELD_OUT_NOUNS,
    DIGIT_TRAIN_NOUNS,
    FASHION_ATTRIBUTES,
    FASHION_HELD_OUT_NOUNS,
    FASHION_TRAIN_NOUNS,
    HELD_OUT_PICTURES,
    HELD_OUT_TEMPLATES,
    HELD_OUT_WORDS,
    INVERSE_RELATION,
    RELATION_PHRASES,
    SCENE_CANVAS,
    SCENE_LARGE,
    SCENE_RELATIONS,
    SCENE_SMALL,
    TRAIN_TEMPLATES,
    TRAIN_WORDS,
    attribute_levels,
    compose_scenes,
    measure_attributes,
    object_captions,
    scene_eval_prompts,
    scene_grounding,
    scene_pictures,
    scene_regions,
    sentence,
    words,
)
from genlab.data.images import BUILTIN_IMAGES, FASHION_DIR, SPLITS, ImageDataConfig, load_images
from genlab.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def load(data: str | Path, **kw) -> "object":
    return load_images(ImageDataConfig(data=str(data), **kw))


@pytest.fixture(scope="module")
def digits() -> object:
    return load("mnist5k-captions")


@pytest.fixture(scope="module")
def scenes() -> object:
    return load("mnist5k-scenes")


def all_captions(ds: object, splits: tuple[str, ...] = SPLITS) -> list[str]:
    return [c for s in splits for caps in ds.captions[s] for c in caps]


# --- the table ---

def test_builtin_captioned_registered_with_descriptions() -> None:
    assert set(BUILTIN_CAPTIONED) == {"fashion-mnist-captions", "mnist5k-captions", "fashion-mnist-scenes",
                                      "mnist5k-scenes"}
    assert all(callable(f) and d for f, d in BUILTIN_CAPTIONED.values())
    assert all(BUILTIN_IMAGES[name] == entry for name, entry in BUILTIN_CAPTIONED.items())


def test_registered_whichever_module_is_imported_first() -> None:
    """images.py and captions.py import each other (captions.py registers itself in BUILTIN_IMAGES)."""
    code = """if True:
        import importlib, sys
        for first in ("genlab.data.captions", "genlab.data.images"):
            for name in [m for m in sys.modules if m.startswith("genlab")]:
                del sys.modules[name]
            importlib.import_module(first)
            from genlab.data.images import BUILTIN_IMAGES
            assert "mnist5k-scenes" in BUILTIN_IMAGES, (first, sorted(BUILTIN_IMAGES))
    """
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# --- object sets: mnist5k-captions ---

def test_same_images_labels_and_splits_as_the_source(digits: object) -> None:
    plain = load("mnist5k")
    for s in SPLITS:
        assert torch.equal(digits.splits[s], plain.splits[s]) and torch.equal(digits.labels[s], plain.labels[s])
        assert len(digits.captions[s]) == len(plain.splits[s])
        assert all(len(caps) == 3 and all(isinstance(c, str) and c for c in caps) for caps in digits.captions[s])
        assert set(digits.facts[s]) >= set(DIGIT_ATTRIBUTES) | {"size", "brightness"}
    assert digits.class_names == plain.class_names
    info = digits.describe()["captions"]
    assert info["count"] == {s: 3 * len(plain.splits[s]) for s in SPLITS}
    assert info["example"] == digits.captions["train"][0][0] and info["eval_prompts"] == len(digits.eval_prompts)
    assert info["info"]["attributes"] == list(DIGIT_ATTRIBUTES)
    json.dumps(digits.describe())  # printable by `genlab data show`


def test_captions_are_deterministic() -> None:
    build = BUILTIN_CAPTIONED["mnist5k-captions"][0]
    a, b = build(), build()
    assert a.captions == b.captions and a.caption_info == b.caption_info and a.eval_prompts == b.eval_prompts
    build = BUILTIN_CAPTIONED["mnist5k-scenes"][0]
    a, b = build(), build()
    assert torch.equal(a.images, b.images) and torch.equal(a.test_images, b.test_images)
    assert a.captions == b.captions and a.test_captions == b.test_captions


def test_caption_nouns_and_attribute_words(digits: object) -> None:
    nouns = {n for pair in DIGIT_TRAIN_NOUNS for n in pair}
    for caps, y in zip(digits.captions["train"][:500], digits.labels["train"][:500].tolist(), strict=True):
        for c in caps:
            assert DIGIT_TRAIN_NOUNS[y][0] in c.split()  # the class's noun: "seven" or "handwritten seven"
            said = [w for a in DIGIT_ATTRIBUTES for w in ATTRIBUTE_WORDS[a] if w in c.split()]
            assert len(said) <= 2 and any(c.endswith(n) for n in nouns)


def test_attribute_words_agree_with_measurements(digits: object) -> None:
    """Within a class, images captioned with an attribute's low word measure below those captioned with its high
    word, and below (above) the class's low (high) threshold from caption_info."""
    info = digits.caption_info
    for s in SPLITS:
        facts, y = digits.facts[s], digits.labels[s].numpy()
        for a in DIGIT_ATTRIBUTES:
            low_word, high_word = ATTRIBUTE_WORDS[a]
            low = np.array([any(low_word in c.split() for c in caps) for caps in digits.captions[s]])
            high = np.array([any(high_word in c.split() for c in caps) for caps in digits.captions[s]])
            q = np.asarray(info["thresholds"][a])[y]
            assert (facts[a][low] < q[low, 0]).all() and (facts[a][high] > q[high, 1]).all()
            for c in range(10):
                lo, hi = facts[a][low & (y == c)], facts[a][high & (y == c)]
                assert len(lo) and len(hi) and lo.max() < hi.min()
    levels = attribute_levels(digits.facts["train"], digits.labels["train"].numpy(),
                              {a: np.asarray(info["thresholds"][a]) for a in DIGIT_ATTRIBUTES})
    for a in DIGIT_ATTRIBUTES:  # terciles of the training pool: about a third of train is low, a third high
        assert 0.25 < (levels[a] == -1).mean() < 0.4 and 0.25 < (levels[a] == 1).mean() < 0.4


def test_facts_align_with_images_through_the_splits(digits: object) -> None:
    for s in SPLITS:
        measured = measure_attributes(digits.splits[s])
        for name, values in digits.facts[s].items():
            np.testing.assert_allclose(values, measured[name])


def test_measure_attributes_on_known_shapes() -> None:
    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    x[0, 0, 4:24, 10:13] = 255  # an upright bar 3 wide, 20 tall
    x[1, 0, 4:24, 10:16] = 128  # twice as thick, half as bright
    for r in range(20):  # a bar sheared by 1/2: one column right every second row up
        x[2, 0, 23 - r, 8 + r // 2:11 + r // 2] = 255
    m = measure_attributes(x)  # x[3] is empty
    assert m["size"][0] == pytest.approx(60 / 784) and m["brightness"][0] == pytest.approx(1.0)
    assert m["width"][0] == pytest.approx(3 / 28) and m["height"][0] == pytest.approx(20 / 28)
    assert m["thickness"][0] == pytest.approx(2 * 60 / 46) and m["thickness"][1] > 1.7 * m["thickness"][0]
    assert m["brightness"][1] == pytest.approx(128 / 255) and m["slant"][0] == pytest.approx(0)
    assert m["slant"][2] == pytest.approx(0.5, abs=0.05)
    assert all(m[k][3] == 0 for k in m)
    with pytest.raises(ValueError, match="uint8"):
        measure_attributes(x.float())


def test_articles() -> None:
    assert sentence("a {}", "ankle boot") == "an ankle boot" and sentence("a {}", "upright one") == "an upright one"
    assert sentence("a {}", "one") == "a one" and sentence("a {}", "8") == "an 8" and sentence("{}", "7") == "7"
    assert sentence("an example of a {}", "eight") == "an example of an eight"


# --- held-out vocabulary and eval prompts ---

def check_held_out(ds: object, held_out_nouns: tuple[str, ...], caption_splits: tuple[str, ...]) -> None:
    """No held-out word or phrase in any caption; no eval prompt among the captions of `caption_splits`."""
    captions = set(all_captions(ds))
    vocabulary = {w for c in captions for w in words(c)}
    assert not vocabulary & HELD_OUT_WORDS and vocabulary <= TRAIN_WORDS
    joined = "\n".join(captions)
    for phrase in held_out_nouns + tuple(t.format("").strip() for t in HELD_OUT_TEMPLATES):
        assert not re.search(rf"\b{re.escape(phrase)}\b", joined), phrase
    training = set(all_captions(ds, caption_splits))
    assert ds.eval_prompts and not {p.text for p in ds.eval_prompts} & training


def test_held_out_words_never_in_captions(digits: object, scenes: object) -> None:
    check_held_out(digits, DIGIT_HELD_OUT_NOUNS, SPLITS)
    check_held_out(scenes, DIGIT_HELD_OUT_NOUNS, ("train", "valid"))  # test scenes show the held-out pictures
    assert {"here", "example", "shows", "7", "handbag", "jumper", "running", "bootie"} <= HELD_OUT_WORDS


def test_fashion_vocabulary_keeps_held_out_words_out() -> None:
    """Every combination the fashion captions can take, without Fashion-MNIST: synthetic labels and levels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 200)
    levels = {a: rng.integers(-1, 2, len(labels)).astype(np.int8) for a in FASHION_ATTRIBUTES}
    captions = object_captions(labels, levels, FASHION_ATTRIBUTES, FASHION_TRAIN_NOUNS, rng)
    vocabulary = {w for caps in captions for c in caps for w in words(c)}
    assert not vocabulary & HELD_OUT_WORDS
    assert {"sneaker", "sports", "shoe", "dark", "bright", "wide", "narrow", "small", "large"} <= vocabulary
    for noun in FASHION_HELD_OUT_NOUNS:  # each held-out noun has a word no train noun has
        assert set(words(noun)) & HELD_OUT_WORDS, noun


def test_object_eval_prompts(digits: object) -> None:
    prompts = digits.eval_prompts
    assert {p.kind for p in prompts} == {"phrasing", "synonym"}
    for p in prompts:
        assert p.scene is None and 0 <= p.class_id < 10 and set(words(p.canonical)) <= TRAIN_WORDS
        assert DIGIT_TRAIN_NOUNS[p.class_id][0] in p.canonical.split()
        if p.kind == "synonym":
            assert DIGIT_HELD_OUT_NOUNS[p.class_id] in p.text.split()
        else:
            assert any(t.format("").strip() in p.text for t in HELD_OUT_TEMPLATES)
        for a, level in p.attributes.items():
            word = ATTRIBUTE_WORDS[a][("low", "high").index(level)]
            assert word in p.text.split() and word in p.canonical.split()
    for kind in ("phrasing", "synonym"):  # per class: bare, and each attribute's low and high word
        for c in range(10):
            mine = [p for p in prompts if p.kind == kind and p.class_id == c]
            assert any(not p.attributes for p in mine)
            assert {(a, lv) for p in mine for a, lv in p.attributes.items()} == {
                (a, lv) for a in DIGIT_ATTRIBUTES for lv in ("low", "high")}
    synonym = next(p for p in prompts if p.kind == "synonym" and p.class_id == 7 and p.attributes == {"slant": "high"})
    assert (synonym.text, synonym.canonical) == ("a slanted 7", "a slanted seven")


# --- scenes ---

def test_scene_regions() -> None:
    (ra, ca), (rb, cb) = scene_regions("left")
    assert (ra, ca, rb, cb) == (slice(0, 48), slice(0, 24), slice(0, 48), slice(24, 48))
    assert scene_regions("below") == scene_regions("above")[::-1] and scene_regions("above", 32)[0][0] == slice(0, 16)
    with pytest.raises(ConfigError, match="left, right, above, below"):
        scene_regions("behind")


def test_compose_scenes_geometry() -> None:
    """Items of class c are squares of value 50 * (c + 1): each value must lie wholly in its item's region."""
    items = torch.cat([torch.full((5, 1, 28, 28), 50 * (c + 1), dtype=torch.uint8) for c in range(4)])
    labels = np.repeat(np.arange(4), 5)
    pictures = [(a, rel, b) for a in range(4) for b in range(4) if a != b for rel in SCENE_RELATIONS]
    x, facts = compose_scenes(items, labels, 200, np.random.default_rng(0), pictures)
    assert x.shape == (200, 1, SCENE_CANVAS, SCENE_CANVAS) and x.dtype == torch.uint8
    assert set(facts) == {"class_a", "class_b", "relation", "size_a", "size_b"}
    assert set(facts["relation"].tolist()) == {0, 1, 2, 3} and set(facts["size_a"].tolist()) == {0, 1}
    for i in range(200):
        rel = SCENE_RELATIONS[facts["relation"][i]]
        for which, region in zip("ab", scene_regions(rel), strict=True):
            value, big = 50 * (facts[f"class_{which}"][i] + 1), facts[f"size_{which}"][i]
            inside = torch.zeros(SCENE_CANVAS, SCENE_CANVAS, dtype=torch.bool)
            inside[region] = True
            mine = x[i, 0] == value
            side = SCENE_LARGE if big else SCENE_SMALL
            assert mine.sum() == side * side and not (mine & ~inside).any()


def test_scenes_set(scenes: object) -> None:
    sizes = {s: len(scenes.splits[s]) for s in SPLITS}
    assert sizes == {"train": 8100, "valid": 900, "test": 1000}
    assert scenes.splits["train"].shape[1:] == (1, SCENE_CANVAS, SCENE_CANVAS)
    for s in SPLITS:  # labels: the left (or top) item, which the canonical facts name first
        f = scenes.facts[s]
        assert torch.equal(scenes.labels[s], torch.from_numpy(f["class_a"]))
        assert set(f["relation"].tolist()) <= {SCENE_RELATIONS.index("left"), SCENE_RELATIONS.index("above")}
    x, f = scenes.splits["train"][:300], scenes.facts["train"]
    for i in range(300):  # each item's ink is in its own half
        for region in scene_regions(SCENE_RELATIONS[f["relation"][i]]):
            assert x[i, 0][region].max() > 100
    rel = SCENE_RELATIONS[f["relation"][0]]
    a, b = (DIGIT_TRAIN_NOUNS[f[k][0]][0] for k in ("class_a", "class_b"))
    for c in scenes.captions["train"][0]:  # "A <rel> B" or "B <inverse> A", with the train nouns
        forward = re.search(rf"\b{a} {re.escape(rel if rel in ('above', 'below') else 'to the ' + rel + ' of')} a "
                            rf"((small|large) )?(handwritten )?{b}$", c)
        inverse = INVERSE_RELATION[rel]
        phrase = inverse if inverse in ("above", "below") else f"to the {inverse} of"
        backward = re.search(rf"\b{b} {re.escape(phrase)} a ((small|large) )?(handwritten )?{a}$", c)
        assert forward or backward, c


def test_held_out_pictures(scenes: object) -> None:
    assert len(HELD_OUT_PICTURES) == 20 and len(scene_pictures(10)) == 200  # 10% of the pictures
    assert len(set(HELD_OUT_PICTURES)) == 20 and all(a != b for a, _, b in HELD_OUT_PICTURES)
    held = {(a, SCENE_RELATIONS.index(rel), b) for a, rel, b in HELD_OUT_PICTURES}

    def shown(split: str) -> set[tuple[int, int, int]]:
        f = scenes.facts[split]
        return set(zip(f["class_a"].tolist(), f["relation"].tolist(), f["class_b"].tolist(), strict=True))

    assert not (shown("train") | shown("valid")) & held  # in either wording: facts are canonical
    assert held <= shown("test")
    combination = [p for p in scenes.eval_prompts if p.kind == "combination"]
    assert len(combination) == 40 and all(p.class_id is None and p.text == p.canonical for p in combination)
    for p in combination:
        a, rel, b = p.scene
        assert (a, rel, b) in HELD_OUT_PICTURES or (b, INVERSE_RELATION[rel], a) in HELD_OUT_PICTURES
        assert re.match(rf"an? {DIGIT_TRAIN_NOUNS[a][0]} ", p.text) and p.text.endswith(f" {DIGIT_TRAIN_NOUNS[b][0]}")
    # and no caption of train/valid states a held-out picture, in either wording
    digit = {nouns[0]: c for c, nouns in enumerate(DIGIT_TRAIN_NOUNS)}
    stated = set()
    for caption in set(all_captions(scenes, ("train", "valid"))):
        rel, phrase = next((r, f) for r, f in RELATION_PHRASES.items() if f" {f} " in caption)
        first, second = (digit[part.split()[-1]] for part in caption.split(f" {phrase} "))
        stated.add((first, rel, second) if rel in ("left", "above") else (second, INVERSE_RELATION[rel], first))
    assert len(stated) == 180 and not stated & set(HELD_OUT_PICTURES)


def test_scene_grounding_puts_each_item_phrase_over_its_item(scenes: object) -> None:
    f, images = scenes.facts["train"], scenes.splits["train"]
    digit = {nouns[0]: c for c, nouns in enumerate(DIGIT_TRAIN_NOUNS)}
    for i in range(0, len(images), 7):
        classes = (f["class_a"][i], f["class_b"][i])
        regions = scene_regions(SCENE_RELATIONS[f["relation"][i]])
        for caption in scenes.captions["train"][i]:
            phrases = scene_grounding(caption)
            assert len(phrases) == 2, caption
            for phrase in phrases:
                rows = slice(round(phrase.box[0] * SCENE_CANVAS), round(phrase.box[2] * SCENE_CANVAS))
                cols = slice(round(phrase.box[1] * SCENE_CANVAS), round(phrase.box[3] * SCENE_CANVAS))
                item = regions.index((rows, cols))  # the box is one of the item halves
                assert digit[caption[phrase.start:phrase.end].split()[-1]] == classes[item], caption
                assert images[i, 0][rows, cols].max() > 100  # and that item's ink is there


def test_scene_prompts_of_any_pictures_in_both_wordings() -> None:
    seven_two, two_seven = scene_eval_prompts(DIGIT_TRAIN_NOUNS, [(7, "above", 2)])
    assert (seven_two.text, seven_two.scene) == ("a seven above a two", (7, "above", 2))
    assert (two_seven.text, two_seven.scene) == ("a two below a seven", (2, "below", 7))


# --- image folders with metadata.jsonl ---

def write_png(path: Path, value: int, size: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), value).save(path)
    return path


def write_metadata(folder: Path, rows: list[object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_metadata_folder_with_class_subfolders(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        cls = ("cat", "dog")[i % 2]
        write_png(tmp_path / cls / f"{i}.png", value=10 * i)
        rows.append({"file_name": f"{cls}/{i}.png", "text": [f"pixel {10 * i}", f"a {cls}"]})
    write_metadata(tmp_path, rows)
    ds = load(tmp_path, valid_fraction=0.2)
    assert ds.class_names == ["cat", "dog"] and sum(len(ds.splits[s]) for s in SPLITS) == 12
    for s in SPLITS:
        for x, y, caps in zip(ds.splits[s], ds.labels[s].tolist(), ds.captions[s], strict=True):
            assert caps == [f"pixel {int(x.max())}", f"a {ds.class_names[y]}"]


def test_metadata_folder_unlabelled_and_skips_unreadable(tmp_path: Path) -> None:
    rows = [{"file_name": f"{i}.png", "text": f"  pixel {20 * i} "} for i in range(10)]
    for i in range(10):
        write_png(tmp_path / f"{i}.png", value=20 * i)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    write_metadata(tmp_path, rows[:5] + [""] + rows[5:] + [{"file_name": "bad.png", "text": "broken"}])
    with pytest.warns(UserWarning, match="skipped 1 of 11"):
        ds = load(tmp_path)
    assert ds.labels["train"] is None and ds.class_names is None
    assert sum(len(ds.splits[s]) for s in SPLITS) == 10
    for s in SPLITS:
        for x, caps in zip(ds.splits[s], ds.captions[s], strict=True):
            assert caps == [f"pixel {int(x.max())}"]  # stripped, and aligned past the skipped file


def test_metadata_folder_mixed_nesting_is_unlabelled(tmp_path: Path) -> None:
    write_png(tmp_path / "cat" / "0.png", 0)
    for i in range(1, 10):
        write_png(tmp_path / f"{i}.png", i)
    write_metadata(tmp_path, [{"file_name": "cat/0.png", "text": "pixel 0"}]
                   + [{"file_name": f"{i}.png", "text": f"pixel {i}"} for i in range(1, 10)])
    with pytest.warns(UserWarning, match="both in sub-folders and beside them"):
        ds = load(tmp_path)
    assert ds.class_names is None and sum(len(c) for c in ds.captions.values()) == 10


ZERO = '{"file_name": "0.png", "text": "zero"}'
ONE = '{"file_name": "1.png", "text": "one"}'


@pytest.mark.parametrize(("lines", "message"), [
    ([ZERO, '{"file_name": "1.png", "text": "b"', ONE], r"line 2: not valid JSON"),
    (['["0.png", "a"]', ONE], r"line 1: expected a JSON object"),
    ([ONE, '{"text": "a"}'], r'line 2: no "file_name"'),
    (['{"file_name": "0.png"}', ONE], r'line 1: no "text"'),
    (['{"file_name": "0.png", "text": "  "}', ONE], r'line 1: "text" holds an empty caption'),
    (['{"file_name": "0.png", "text": []}', ONE], r'line 1: "text" must be a caption string or a non-empty list'),
    (['{"file_name": "0.png", "text": ["a", 3]}', ONE], r'line 1: "text" must be'),
    ([ZERO, ONE, '{"file_name": "9.png", "text": "b"}'], r"line 3: '9.png' does not exist"),
    ([ZERO, ONE, '{"file_name": "../x.png", "text": "b"}'], r"line 3: file_name '../x.png' must be a path inside"),
    ([ZERO, ONE, '{"file_name": "./0.png", "text": "b"}'],
     r"line 3: a second row for './0.png' \(the first is on line 1\)"),
    ([ZERO], r"1\.png has no caption in metadata\.jsonl"),
    ([""], r"metadata\.jsonl names no images"),
])
def test_metadata_errors(tmp_path: Path, lines: list[str], message: str) -> None:
    write_png(tmp_path / "0.png", 0)
    write_png(tmp_path / "1.png", 1)
    write_metadata(tmp_path, lines)
    with pytest.raises(DataError, match=message) as e:
        load(tmp_path)
    assert "\n" not in str(e.value) and "metadata.jsonl" in str(e.value)


# --- .npz captions ---

def counting_npz(path: Path, n: int = 40, k: int | None = None, test: int = 0) -> Path:
    """Image i is all pixel value i; its captions name i (K of them, or one as an (N,) array)."""
    images = np.arange(n, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    caps = np.array([f"pixel {i}" if k is None else [f"pixel {i} #{j}" for j in range(k)] for i in range(n)])
    arrays = {"images": images, "labels": np.arange(n) % 3, "captions": caps}
    if test:
        arrays |= {"test_images": images[:test] + 100, "test_labels": np.arange(test) % 3,
                   "test_captions": np.array([f"pixel {i + 100}" for i in range(test)])}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("k", [None, 3])
def test_npz_captions_align_through_splits(tmp_path: Path, k: int | None) -> None:
    path = counting_npz(tmp_path / "d.npz", k=k)
    for valid_fraction in (0.0, 0.25):
        ds = load(path, valid_fraction=valid_fraction)
        for s in SPLITS:
            for x, y, caps in zip(ds.splits[s], ds.labels[s].tolist(), ds.captions[s], strict=True):
                i = int(x.max())
                assert y == i % 3 and caps == ([f"pixel {i}"] if k is None else [f"pixel {i} #{j}" for j in range(k)])
    assert ds.facts is None and ds.eval_prompts == [] and ds.describe()["captions"]["count"]["test"] == 4 * (k or 1)


def test_npz_test_captions(tmp_path: Path) -> None:
    ds = load(counting_npz(tmp_path / "d.npz", test=6))
    assert [caps[0] for caps in ds.captions["test"]] == [f"pixel {i + 100}" for i in range(6)]
    assert [int(x.max()) for x in ds.splits["test"]] == [i + 100 for i in range(6)]


def test_npz_caption_errors(tmp_path: Path) -> None:
    images = np.zeros((4, 3, 3), np.uint8)
    cases = [
        ({"captions": np.array(["a", "b", "c"])}, r"'captions' holds captions for 3 images, 'images' holds 4"),
        ({"captions": np.array(["a", "b", " ", "d"])}, r"1 empty caption\(s\), e\.g\. for image 2"),
        ({"captions": np.arange(4)}, r"must hold caption strings as a numpy unicode array"),
        ({"captions": np.zeros((4, 0), dtype="U1")}, r"expected \(N,\) .* or \(N, K\)"),
        ({"test_captions": np.array(["a"])}, r"'test_captions' without 'test_images'"),
        ({"captions": np.array(list("abcd")), "test_images": images[:2]}, r"only one of images and test_images"),
        ({"captions": np.array(list("abcd")), "test_images": images[:2], "test_captions": np.array(["a"])},
         r"'test_captions' holds captions for 1 images, 'test_images' holds 2"),
    ]
    for i, (extra, message) in enumerate(cases):
        np.savez(tmp_path / f"{i}.npz", images=images, **extra)
        with pytest.raises(DataError, match=message):
            load(tmp_path / f"{i}.npz")
    np.savez(tmp_path / "objects.npz", images=images, captions=np.array(["a", "b", "c", None], dtype=object))
    with pytest.raises(DataError, match=r"'captions' is an array of Python objects.*np.array\(captions, dtype=str\)"):
        load(tmp_path / "objects.npz")


def test_plain_sources_have_no_captions(tmp_path: Path) -> None:
    np.savez(tmp_path / "plain.npz", images=np.zeros((10, 3, 3), np.uint8))
    ds = load(tmp_path / "plain.npz")
    assert ds.captions is None and ds.facts is None and ds.eval_prompts == [] and "captions" not in ds.describe()


# --- Fashion-MNIST (skipped where it is not installed) ---

needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"Fashion-MNIST not installed in {FASHION_DIR}")


@needs_fashion
def test_fashion_mnist_captions() -> None:
    ds, plain = load("fashion-mnist-captions"), load("fashion-mnist")
    for s in SPLITS:
        assert torch.equal(ds.labels[s], plain.labels[s]) and torch.equal(ds.splits[s], plain.splits[s])
    check_held_out(ds, FASHION_HELD_OUT_NOUNS, SPLITS)
    info = ds.caption_info
    for a in FASHION_ATTRIBUTES:
        low = np.array([any(ATTRIBUTE_WORDS[a][0] in c.split() for c in caps) for caps in ds.captions["test"]])
        q = np.asarray(info["thresholds"][a])[ds.labels["test"].numpy()]
        assert low.any() and (ds.facts["test"][a][low] < q[low, 0]).all()
    synonyms = {p.text for p in ds.eval_prompts if p.kind == "synonym" and not p.attributes}
    assert {"a handbag", "a running shoe", "a bootie", "a knitted jumper", "an open-toed sandal"} <= synonyms


@needs_fashion
def test_fashion_mnist_scenes() -> None:
    ds = load("fashion-mnist-scenes")
    assert {s: len(ds.splits[s]) for s in SPLITS} == {"train": 27000, "valid": 3000, "test": 5000}
    check_held_out(ds, FASHION_HELD_OUT_NOUNS, ("train", "valid"))
    held = {(a, SCENE_RELATIONS.index(rel), b) for a, rel, b in HELD_OUT_PICTURES}
    pool = {(a, r, b) for s in ("train", "valid")
            for a, r, b in zip(*(ds.facts[s][k].tolist() for k in ("class_a", "relation", "class_b")), strict=True)}
    assert not pool & held
    assert TRAIN_TEMPLATES[2].format("").strip() in "\n".join(all_captions(ds, ("train",)))
