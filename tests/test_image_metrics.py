"""Image metrics: the feature net (training, cache), Fréchet and kernel distances, precision/recall, reports."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import genlab.eval.images as metrics
from genlab.data.images import ImageDataConfig, ImageDataset, load_images
from genlab.errors import ConfigError, DataError
from genlab.eval.images import (
    FeatureNet,
    feature_net,
    frechet_distance,
    image_metrics,
    kernel_distance,
    precision_recall,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The nets are tiny: one thread is as fast, and far faster than two on a busy shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_images(ImageDataConfig(data="digits"))


@pytest.fixture(scope="module")
def net(digits: ImageDataset, cache: Path) -> FeatureNet:
    return feature_net(digits)  # trained once for the module (a few seconds), cached under `cache`


def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train feature nets for 20 steps only: for tests of caching and determinism, not of quality."""
    monkeypatch.setattr(metrics, "_train_steps", lambda n: 20)


# --- the feature net ---

def test_feature_net_learns_and_is_cached(net: FeatureNet, digits: ImageDataset, cache: Path) -> None:
    assert net.accuracy > 0.9 and not net.from_cache
    assert "digits" in net.name and "FID" not in net.name and "Inception" not in net.name
    test = digits.splits["test"]
    feats = net.features(test)
    assert feats.shape == (len(test), 128) and feats.dtype == np.float64 and np.isfinite(feats).all()
    pred = net.classify(test)
    assert pred.dtype == torch.int64 and float((pred == digits.labels["test"]).float().mean()) == pytest.approx(
        net.accuracy)
    assert len(list((cache / "feature-nets").glob("*.safetensors"))) == 1
    again = feature_net(digits)
    assert again.from_cache and again.accuracy == net.accuracy
    assert np.array_equal(again.features(test), feats)


def test_feature_net_is_deterministic(digits: ImageDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick(monkeypatch)
    torch.manual_seed(123)  # the caller's random state must not matter
    a = feature_net(digits, cache_dir=tmp_path / "a")
    b = feature_net(digits, cache_dir=tmp_path / "b")
    assert not a.from_cache and not b.from_cache
    assert np.array_equal(a.features(digits.splits["valid"]), b.features(digits.splits["valid"]))


def test_corrupt_cache_retrains(digits: ImageDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick(monkeypatch)
    first = feature_net(digits, cache_dir=tmp_path)
    (path,) = (tmp_path / "feature-nets").glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unusable feature-net cache"):
        second = feature_net(digits, cache_dir=tmp_path)
    assert not second.from_cache and second.accuracy == first.accuracy
    assert feature_net(digits, cache_dir=tmp_path).from_cache  # the retrained net replaced the corrupt file


def test_cache_is_keyed_by_data(digits: ImageDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick(monkeypatch)
    feature_net(digits, cache_dir=tmp_path)
    other = ImageDataset("digits-less", {s: x[:-1] for s, x in digits.splits.items()},
                         {s: y[:-1] for s, y in digits.labels.items()}, digits.class_names)  # type: ignore[index]
    assert not feature_net(other, cache_dir=tmp_path).from_cache
    assert len(list((tmp_path / "feature-nets").glob("*.safetensors"))) == 2


def test_unlabelled_data_is_refused(digits: ImageDataset) -> None:
    unlabelled = ImageDataset("folder", digits.splits, {s: None for s in digits.splits}, None)
    with pytest.raises(DataError, match="labelled"):
        feature_net(unlabelled)


# --- distances on known features ---

def brute_force_fd(a: np.ndarray, b: np.ndarray) -> float:
    """tr((√Σa Σb √Σa)^½) through eigendecompositions: a computation independent of sqrtm(Σa Σb)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(w.clip(0))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(inner.clip(0)).sum())


def test_frechet_distance_matches_brute_force_and_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(0.5, 2.0, size=(300, 6))
    fd = frechet_distance(a, b)
    assert fd == pytest.approx(brute_force_fd(a, b), rel=1e-6)
    assert fd == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-6
    # Two Gaussians with known parameters: FD = |Δμ|² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = 4 + 2(1 − 2)² = 6 for d = 2
    x = rng.normal(size=(200_000, 2))
    assert frechet_distance(x, 2 * x + np.array([2.0, 0.0])) == pytest.approx(6.0, rel=1e-2)


def test_frechet_distance_with_singular_covariances() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(12, 32))  # fewer samples than dimensions
    a[:, 0] = 0.0  # a dead unit
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd == pytest.approx(brute_force_fd(a, b), rel=1e-3)


def test_kernel_distance_is_unbiased() -> None:
    rng = np.random.default_rng(2)
    d = 16
    same = [kernel_distance(rng.normal(size=(300, d)), rng.normal(size=(300, d)), 20, 100, seed=s)[0]
            for s in range(10)]
    shifted, se = kernel_distance(rng.normal(size=(300, d)), rng.normal(0.3, 1, size=(300, d)), 20, 100)
    # The biased estimator (keeping k(x, x)) sits at about 2(E k(x,x) − E k(x,y)) / m above zero.
    x = rng.normal(size=(100, d))
    bias = 2 * (((x * x).sum(1) / d + 1) ** 3).mean() / 100
    assert abs(np.mean(same)) < 0.1 * bias
    assert shifted > 20 * abs(np.mean(same)) and shifted > 10 * se
    assert kernel_distance(x, x[::-1], 5, 50, seed=3) == kernel_distance(x, x[::-1], 5, 50, seed=3)


def test_precision_recall_on_known_sets() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 4))
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    collapsed = real[:1] + rng.normal(scale=1e-3, size=(200, 4))  # mode collapse: realistic but not varied
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.1
    with pytest.raises(DataError):
        precision_recall(real[:3], real)


# --- metrics on real, blurred and noise images ---

def test_real_images_score_far_better_than_blur_and_noise(net: FeatureNet, digits: ImageDataset) -> None:
    test = digits.splits["test"]
    real = net.features(test)
    fake = {
        "train": net.features(digits.splits["train"][:len(test)]),  # a random sample: splits are shuffled
        "blur": net.features(F.avg_pool2d(test.float(), 3, 1, 1).round().to(torch.uint8)),
        "noise": net.features(torch.randint(0, 256, test.shape, dtype=torch.uint8)),
    }
    fd = {k: frechet_distance(v, real) for k, v in fake.items()}
    kid = {k: kernel_distance(v, real, num_subsets=20)[0] for k, v in fake.items()}
    assert fd["train"] < fd["blur"] / 5 and fd["train"] < fd["noise"] / 5
    assert abs(kid["train"]) < kid["blur"] / 10 and abs(kid["train"]) < kid["noise"] / 10
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, fake["train"])[1] > 0.6 > precision_recall(real, fake["blur"])[1]


def test_image_metrics_report(net: FeatureNet, digits: ImageDataset) -> None:
    test = digits.splits["test"]
    labels = digits.labels["test"]
    assert labels is not None
    report = image_metrics(test, digits, labels=labels, split="valid", net=net)
    json.dumps(report)
    assert report["feature_net"] == net.name and report["feature_net_test_accuracy"] == net.accuracy
    assert report["n_generated"] == len(test) and report["n_reference"] == len(digits.splits["valid"])
    assert report["label_accuracy"] == pytest.approx(net.accuracy)
    assert {"fd", "kid", "kid_se", "precision", "recall"} <= set(report["baseline_train_sample"])
    assert not [k for k in json.dumps(report).lower().split('"') if "fid" in k or "inception" in k]
    # Generated images of another size and channel count are brought to the data's shape first.
    rgb = F.interpolate(test.float(), size=16).round().to(torch.uint8).repeat(1, 3, 1, 1)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    other = image_metrics(rgb, digits, labels=shuffled, net=net, baseline=False)
    assert other["label_accuracy"] < 0.3 and "baseline_train_sample" not in other


def test_image_metrics_refuses_train_and_tiny_inputs(net: FeatureNet, digits: ImageDataset) -> None:
    with pytest.raises(ConfigError, match="held-out"):
        image_metrics(digits.splits["test"], digits, split="train", net=net)
    with pytest.raises(DataError, match="at least 4"):
        image_metrics(digits.splits["test"][:2], digits, net=net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="uint8"):
            image_metrics(digits.splits["test"].float(), digits, net=net)


@pytest.mark.slow
def test_feature_net_mnist5k(tmp_path: Path) -> None:
    ds = load_images(ImageDataConfig(data="mnist5k"))
    net = feature_net(ds, cache_dir=tmp_path)
    assert net.accuracy > 0.95
    report = image_metrics(ds.splits["valid"], ds, net=net)
    assert report["fd"] < report["baseline_train_sample"]["fd"] * 3
