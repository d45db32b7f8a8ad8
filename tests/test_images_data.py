"""Image data: built-in sets, IDX folders, image folders, .npz files, bad input, batches and grids."""

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.config import from_dict
from genlab.data.images import (
    BUILTIN_IMAGES,
    DIGIT_NAMES,
    FASHION_DIR,
    FASHION_NAMES,
    ImageBatches,
    ImageDataConfig,
    from_model_range,
    load_images,
    read_idx,
    resize,
    save_image_grid,
    to_model_range,
)
from genlab.errors import ConfigError, DataError


def load(data: str | Path, **kw) -> "object":
    return load_images(ImageDataConfig(data=str(data), **kw))


# --- helpers that write small data sets ---

def write_idx(path: Path, arr: np.ndarray, compress: bool = False, dims: tuple[int, ...] | None = None) -> Path:
    dims = dims or arr.shape
    data = bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_idx_folder(folder: Path, n_train: int = 30, n_test: int = 10, compress: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    gz = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", rng.integers(0, 256, (n, 6, 6)), compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", rng.integers(0, 3, n), compress)
    return folder


def write_png(path: Path, size: tuple[int, int] = (5, 5), mode: str = "L", value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)
    return path


# --- built-in sets ---

def test_builtin_list_has_descriptions() -> None:
    assert {"mnist5k", "digits", "fashion-mnist"} <= set(BUILTIN_IMAGES)
    assert all(callable(f) and d for f, d in BUILTIN_IMAGES.values())


def test_mnist5k() -> None:
    ds = load("mnist5k")
    sizes = {s: len(x) for s, x in ds.splits.items()}
    assert sum(sizes.values()) == 5000 and sizes["test"] == 500 and sizes["valid"] == 450
    assert ds.splits["train"].dtype == torch.uint8 and ds.splits["train"].shape[1:] == (1, 28, 28)
    assert (ds.channels, ds.image_size, ds.num_classes) == (1, 28, 10)
    assert ds.class_names == DIGIT_NAMES
    for s in ("train", "valid", "test"):
        y = ds.labels[s]
        assert y.dtype == torch.int64 and len(y) == sizes[s] and set(y.tolist()) == set(range(10))
    assert ds.splits["train"].max() == 255
    facts = ds.describe()
    assert facts["sizes"] == sizes and facts["split"]["seed"] == 0 and facts["shape"] == [1, 28, 28]


def test_split_is_deterministic_and_test_ignores_valid_fraction() -> None:
    a, b = load("digits"), load("digits")
    assert torch.equal(a.splits["train"], b.splits["train"])
    c = load("digits", valid_fraction=0.3)
    assert torch.equal(a.splits["test"], c.splits["test"])  # metrics stay comparable across valid fractions
    assert len(c.splits["valid"]) > len(a.splits["valid"])
    # no image is in two splits (by index: digits has a few duplicate images, so compare counts)
    assert sum(len(x) for x in a.splits.values()) == 1797


def test_digits_scaled_and_resized() -> None:
    ds = load("digits")
    assert ds.splits["train"].shape[1:] == (1, 8, 8) and ds.splits["train"].max() == 255
    assert ds.class_names == DIGIT_NAMES
    big = load("digits", image_size=16, channels=3)
    assert big.splits["test"].shape[1:] == (3, 16, 16)
    assert torch.equal(big.splits["test"][:, 0], big.splits["test"][:, 2])
    assert big.describe()["native_shape"] == [1, 8, 8]


def test_pad_28_to_32() -> None:
    x = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    y = resize(x, 32)
    assert y.shape == (2, 1, 32, 32)
    assert y[:, :, :2].max() == 0 and y[:, :, -2:].max() == 0 and torch.equal(y[:, :, 2:30, 2:30], x)
    assert resize(x, 14).shape == (2, 1, 14, 14)


def test_fashion_mnist() -> None:
    if not FASHION_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not installed in {FASHION_DIR}")
    ds = load("fashion-mnist")
    assert len(ds.splits["test"]) == 10_000 and len(ds.splits["train"]) + len(ds.splits["valid"]) == 60_000
    assert ds.class_names == FASHION_NAMES and ds.class_names[0] == "T-shirt/top"
    assert ds.describe()["split"]["test"] == "official test split"
    again = load(f"fashion-mnist:{FASHION_DIR}")
    assert torch.equal(again.splits["valid"][:50], ds.splits["valid"][:50])


def test_fashion_mnist_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        load(f"fashion-mnist:{tmp_path / 'nope'}")


# --- IDX folders ---

@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder(tmp_path: Path, compress: bool) -> None:
    folder = write_idx_folder(tmp_path / "idx", compress=compress)
    ds = load(folder, valid_fraction=0.2)
    assert len(ds.splits["test"]) == 10 and len(ds.splits["train"]) == 24 and len(ds.splits["valid"]) == 6
    assert ds.splits["test"].shape[1:] == (1, 6, 6) and ds.num_classes == 3 and ds.class_names == ["0", "1", "2"]
    raw = read_idx(folder / f"t10k-images-idx3-ubyte{'.gz' if compress else ''}")
    assert np.array_equal(ds.splits["test"][:, 0].numpy(), raw)


def test_idx_header_disagrees_with_length(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "idx")
    bad = folder / "train-images-idx3-ubyte.gz"
    write_idx(bad, np.zeros((29, 6, 6)), compress=True, dims=(30, 6, 6))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*truncated or corrupt"):
        load(folder)


def test_idx_bad_magic_and_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)
    gz = write_idx(tmp_path / "y-images-idx3-ubyte.gz", np.zeros((10, 6, 6)), compress=True)
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(DataError, match="y-images-idx3-ubyte.gz"):
        read_idx(gz)


def test_idx_labels_length_mismatch(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "idx")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(9), compress=True)
    with pytest.raises(DataError, match="t10k-labels.*9 labels.*10 images"):
        load(folder)


# --- image folders ---

def test_image_folder_with_classes(tmp_path: Path) -> None:
    for i in range(6):
        write_png(tmp_path / "imgs" / "cat" / f"{i}.png", value=10 * i)
        write_png(tmp_path / "imgs" / "dog" / f"{i}.jpg", value=200)
    ds = load(tmp_path / "imgs", valid_fraction=0)
    assert ds.class_names == ["cat", "dog"] and ds.channels == 1 and ds.image_size == 5
    total = sum(len(x) for x in ds.splits.values())
    assert total == 12
    all_labels = torch.cat([ds.labels["train"], ds.labels["test"]])
    assert sorted(all_labels.tolist()) == [0] * 6 + [1] * 6


def test_image_folder_unlabelled_rgb_non_square(tmp_path: Path) -> None:
    for i in range(10):
        write_png(tmp_path / f"{i:02d}.png", size=(6, 4), mode="RGB", value=20 * i)
    ds = load(tmp_path)
    assert ds.class_names is None and ds.num_classes == 0 and ds.labels["train"] is None
    assert ds.splits["train"].shape[1:] == (3, 6, 6)  # non-square is resized to its longer side
    assert load(tmp_path, channels=1, image_size=12).splits["test"].shape[1:] == (1, 12, 12)


def test_image_folder_mixed_sizes(tmp_path: Path) -> None:
    for i in range(4):
        write_png(tmp_path / f"a{i}.png", size=(8, 8))
    write_png(tmp_path / "odd.png", size=(5, 5))
    with pytest.warns(UserWarning, match="2 sizes"):
        ds = load(tmp_path)
    assert ds.image_size == 8 and sum(len(x) for x in ds.splits.values()) == 5
    with pytest.raises(DataError, match="odd.png"):
        load(tmp_path, mixed_sizes="error")


def test_image_folder_skips_unreadable_files(tmp_path: Path) -> None:
    for i in range(5):
        write_png(tmp_path / f"{i}.png", size=(16, 16))
    good = (tmp_path / "0.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="skipped 2 of 7"):
        ds = load(tmp_path)
    assert sum(len(x) for x in ds.splits.values()) == 5


def test_image_folder_all_unreadable_or_empty(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of the 1 image file.*a.png"):
            load(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="empty holds no image files"):
        load(tmp_path / "empty")


# --- .npz files ---

@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    shape = {"NHW": (20, 7, 7), "NHWC": (20, 7, 7, 3), "NCHW": (20, 3, 7, 7)}[layout]
    images = rng.integers(0, 256, shape).astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=rng.integers(0, 4, 20))
    ds = load(tmp_path / "d.npz")
    assert ds.splits["train"].shape[1:] == ((1,) if layout == "NHW" else (3,)) + (7, 7)
    assert ds.num_classes == 4 and len(ds.splits["test"]) == 2


def test_npz_float_pixels_and_test_split(tmp_path: Path) -> None:
    images = np.linspace(-1, 1, 10 * 4 * 4).reshape(10, 4, 4).astype(np.float32)
    np.savez(tmp_path / "f.npz", images=images, test_images=images[-3:])
    ds = load(tmp_path / "f.npz", valid_fraction=0)
    assert len(ds.splits["test"]) == 3 and ds.splits["test"].max() == 255 and ds.splits["train"].min() == 0
    assert ds.describe()["split"]["test"] == "official test split"


def test_npz_bad_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "no_images.npz", pixels=np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match="no_images.npz has no 'images'"):
        load(tmp_path / "no_images.npz")
    np.savez(tmp_path / "mismatch.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="mismatch.npz.*4 labels for 3 images"):
        load(tmp_path / "mismatch.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="broken.npz"):
        load(tmp_path / "broken.npz")


def test_missing_path_and_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mnist6k"):
        load("mnist6k")
    with pytest.raises(DataError, match="nowhere"):
        load(tmp_path / "nowhere")


def test_config_validation() -> None:
    for bad in ({"channels": 2}, {"image_size": 0}, {"valid_fraction": 1.0}, {"mixed_sizes": "crop"}):
        with pytest.raises(ConfigError):
            from_dict(ImageDataConfig, bad)
    assert from_dict(ImageDataConfig, {"image_size": "32", "channels": "none"}).image_size == 32


# --- pixel ranges, batches, grids ---

def test_pixel_range_round_trip() -> None:
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    for r, (lo, hi) in (("unit", (0, 1)), ("symmetric", (-1, 1))):
        f = to_model_range(x, r)
        assert f.dtype == torch.float32 and f.min() == lo and f.max() == hi
        assert torch.equal(from_model_range(f, r), x)
    assert from_model_range(torch.tensor([-3.0, 0.5, 7.0]), "unit").tolist() == [0, 128, 255]
    with pytest.raises(ConfigError):
        to_model_range(x, "zero-one")


def test_batches_deterministic_and_sharded() -> None:
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    labels = torch.arange(50)
    one = ImageBatches(images, labels, batch_size=8, seed=3, pixel_range="unit")
    again = ImageBatches(images, labels, batch_size=8, seed=3, pixel_range="unit")
    for step in (0, 5, 6, 13, 5):  # across an epoch boundary (6 batches per epoch) and back
        b = one(step)
        assert b["x"].shape == (8, 1, 2, 2) and b["x"].dtype == torch.float32 and b["y"].dtype == torch.int64
        assert torch.equal(b["x"], again(step)["x"])
        assert torch.equal((b["x"][:, 0, 0, 0] * 255).round().long(), b["y"])  # labels travel with images
        ranks = [ImageBatches(images, labels, 8, 3, "unit", rank=r, world_size=2)(step) for r in (0, 1)]
        merged = torch.empty_like(b["y"])
        merged[0::2], merged[1::2] = ranks[0]["y"], ranks[1]["y"]
        assert torch.equal(merged, b["y"]) and ranks[0]["x"].shape == (4, 1, 2, 2)
    epoch0 = torch.cat([one(s)["y"] for s in range(6)])
    assert len(set(epoch0.tolist())) == 48  # an epoch visits distinct images
    assert not torch.equal(one(0)["y"], ImageBatches(images, labels, 8, 4, "unit")(0)["y"])
    assert ImageBatches(images, None, 8, 0, "symmetric")(0)["y"] is None


def test_batches_bad_sizes() -> None:
    images = torch.zeros(10, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="divisible"):
        ImageBatches(images, None, batch_size=9, seed=0, pixel_range="unit", world_size=2)
    with pytest.raises(DataError, match="fewer than one batch"):
        ImageBatches(images, None, batch_size=16, seed=0, pixel_range="unit")


def test_save_image_grid(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (10, 3, 6, 6), dtype=torch.uint8)
    save_image_grid(images, tmp_path / "g" / "grid.png", nrow=5)
    with Image.open(tmp_path / "g" / "grid.png") as img:
        assert img.size == (5 * 8 + 2, 2 * 8 + 2) and img.mode == "RGB"
        arr = np.asarray(img)
    assert np.array_equal(arr[2:8, 2:8], images[0].permute(1, 2, 0).numpy())
    save_image_grid(images[:3, :1], tmp_path / "gray.png")
    with Image.open(tmp_path / "gray.png") as img:
        assert img.mode == "L" and img.size == (2 * 8 + 2, 2 * 8 + 2)
    assert not list(tmp_path.glob("**/*.tmp"))
