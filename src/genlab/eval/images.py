"""Sample-quality metrics for image generators, computed in the feature space of a small classifier.

Inception-based scores (FID, KID as usually reported) need ImageNet weights and 299-pixel inputs; neither
suits 28-pixel grayscale digits nor an offline machine. genlab instead trains a small CNN per data set
(`FeatureNet`, deterministic, cached) and computes, on its penultimate features:

    Fréchet distance   between Gaussians fitted to the two feature sets (Heusel et al. 2017, the "F" of FID)
    kernel distance    unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018, "KID")
    precision, recall  k-NN manifold estimates (Kynkäänniemi et al. 2019)
    label accuracy     for class-conditional samples: how often the net agrees with the requested label

The numbers are comparable only between runs on the same data set with the same feature net version; they
are not FID or KID values from the literature, and are never named so. Generated images are always compared
with a held-out split (test by default), never with the training images a model may have memorised.
"""

import hashlib
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from genlab.checkpoint import load_tensors, save_tensors
from genlab.data.images import ImageBatches, ImageDataset, fit_images, to_model_range
from genlab.errors import CheckpointError, ConfigError, DataError

FEATURE_NET_VERSION = "1"  # bump when the architecture or training recipe changes: old caches are then ignored
FEATURE_SEED = 0
MAX_INPUT = 32  # larger images are downscaled first: the net is small by design
BATCH = 64
PR_SAMPLES = 5000  # precision/recall subsample per set in image_metrics


# --- the feature network ---

class _Net(nn.Module):
    """Three conv stages (16, 32, 64 channels) pooled to 4x4, a 128-unit hidden layer, then the classes."""

    feature_dim = 128

    def __init__(self, channels: int, num_classes: int, image_size: int):
        super().__init__()
        size = min(image_size, MAX_INPUT)
        self.input_size = size
        layers: list[nn.Module] = []
        c_in = channels
        for c_out in (16, 32, 64):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            if size >= 8:  # 28 -> 14 -> 7; 8x8 digits pool once
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(64 * 16, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, num_classes)
        # Set after training so that features have mean square 1: the KID kernel (x·y/d + 1)³ expects unit scale.
        self.register_buffer("feature_scale", torch.ones(()))

    def hidden_units(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        return self.hidden(self.body(x))  # (N, 128)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden_units(x) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_units(x))


class FeatureNet:
    """A trained `_Net` with what it was trained on: features for the distances, predictions for labels."""

    def __init__(self, net: _Net, dataset: ImageDataset, accuracy: float, fingerprint: str, train_seconds: float,
                 from_cache: bool):
        self.net = net.eval()
        self.channels, self.image_size = dataset.channels, dataset.image_size
        self.accuracy = accuracy  # on the held-out test split
        self.name = f"genlab feature net v{FEATURE_NET_VERSION}, {dataset.source}"
        self.fingerprint = fingerprint
        self.train_seconds = train_seconds
        self.from_cache = from_cache

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def _apply(self, images: torch.Tensor, fn_name: str) -> torch.Tensor:
        images = fit_images(images.cpu(), self.channels, self.image_size)
        fn = getattr(self.net, fn_name)
        out = [fn(to_model_range(chunk.to(self.device), "symmetric")).cpu() for chunk in images.split(512)]
        return torch.cat(out) if out else torch.empty(0)

    def features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 (N, C, H, W) -> penultimate features (N, 128), float64."""
        return self._apply(images, "features").double().numpy()

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> predicted class indices (N,), int64."""
        return self._apply(images, "forward").argmax(-1)


def _eval_split(dataset: ImageDataset) -> str:
    return "test" if len(dataset.splits["test"]) else "valid"


def _fingerprint(dataset: ImageDataset) -> str:
    """sha256 of the net's version and the train and test data (images and labels) it is trained and scored on."""
    h = hashlib.sha256(f"genlab-feature-net-{FEATURE_NET_VERSION}".encode())
    for split in ("train", _eval_split(dataset)):
        for t in (dataset.splits[split], dataset.labels[split]):
            h.update(str(tuple(t.shape)).encode())  # type: ignore[union-attr]
            h.update(t.contiguous().numpy().tobytes())  # type: ignore[union-attr]
    return h.hexdigest()


def cache_dir_default() -> Path:
    """$GENLAB_CACHE, else $XDG_CACHE_HOME/genlab, else ~/.cache/genlab."""
    if os.environ.get("GENLAB_CACHE"):
        return Path(os.environ["GENLAB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "genlab"


def _train_steps(n_train: int) -> int:
    # Four epochs of mnist5k (~15 s of one CPU core); capped at 2.4 epochs of Fashion-MNIST (~2 min of one core).
    return max(150, min(2000, math.ceil(4 * n_train / BATCH)))


def fit_classifier(net: nn.Module, batches: ImageBatches, steps: int, lr: float = 3e-3,
                   desc: str | None = None) -> None:
    """Train `net` (images → logits) by cross-entropy on `batches` for `steps` steps: AdamW, cosine decay from
    `lr`; left in eval mode. `desc`: a progress bar with this title (none without it)."""
    from genlab.progress import progress_bar

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    for step in progress_bar(range(steps), desc=desc, unit="step", leave=False, disable=desc is None):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        batch = batches(step)
        loss = F.cross_entropy(net(batch["x"]), batch["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()


# The judges (this feature net, genlab.eval.text_image's scorer and region classifier) train on the CPU wherever
# they are used: CUDA's kernels are not deterministic (two trainings on an H200 gave features differing in the
# third digit), and a measuring instrument must not depend on the card that made it. They run on any device.
JUDGE_DEVICE = torch.device("cpu")


def _train(dataset: ImageDataset, device: torch.device) -> tuple[_Net, float, float]:
    """Train a `_Net` on the train split (fixed seed); returns it, its held-out accuracy and the seconds taken."""
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
        torch.manual_seed(FEATURE_SEED)
        net = _Net(dataset.channels, dataset.num_classes, dataset.image_size).to(device)
    images, labels = dataset.splits["train"], dataset.labels["train"]
    batches = ImageBatches(images, labels, min(BATCH, len(images)), FEATURE_SEED, "symmetric", device=device)
    fit_classifier(net, batches, _train_steps(len(images)), desc="training the feature net (cached afterwards)")
    fn = FeatureNet(net, dataset, math.nan, "", 0.0, False)
    sample = fn.features(images[:2000])
    net.feature_scale.fill_(float(np.sqrt((sample**2).mean())) or 1.0)
    split = _eval_split(dataset)
    truth = dataset.labels[split]
    accuracy = float((fn.classify(dataset.splits[split]) == truth).float().mean())  # type: ignore[operator]
    return net, accuracy, time.perf_counter() - t0


def _load_cached(path: Path, dataset: ImageDataset, fingerprint: str, device: torch.device) -> FeatureNet | None:
    """The cached net at `path`, or None (with a warning when the file is there but unusable)."""
    if not path.is_file():
        return None
    try:
        tensors, meta = load_tensors(path)
        if meta.get("fingerprint") != fingerprint:
            raise CheckpointError(f"{path} was trained on other data")
        net = _Net(dataset.channels, dataset.num_classes, dataset.image_size)
        net.load_state_dict(tensors, strict=True)
        accuracy, seconds = float(meta["accuracy"]), float(meta["train_seconds"])
    except (CheckpointError, RuntimeError, KeyError, ValueError) as e:
        warnings.warn(f"ignoring unusable feature-net cache {path} ({e}); retraining", stacklevel=3)
        return None
    return FeatureNet(net.to(device), dataset, accuracy, fingerprint, seconds, from_cache=True)


def feature_net(dataset: ImageDataset, cache_dir: Path | None = None,
                device: torch.device | str | None = None) -> FeatureNet:
    """The feature net of `dataset`: loaded from the cache when trained before on the same data, else trained
    (deterministically, in seconds on a CPU for the small sets) and cached as safetensors."""
    if not dataset.num_classes or dataset.labels["train"] is None:
        raise DataError(f"metrics need a labelled data set; {dataset.source} has no class labels "
                        "(use a folder with one sub-folder per class, or an .npz with labels)")
    if not len(dataset.splits[_eval_split(dataset)]):
        raise DataError(f"{dataset.source}: metrics need a held-out test or validation split; both are empty")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fingerprint = _fingerprint(dataset)
    path = Path(cache_dir or cache_dir_default()) / "feature-nets" / f"{fingerprint[:24]}.safetensors"
    cached = _load_cached(path, dataset, fingerprint, device)
    if cached is not None:
        return cached
    net, accuracy, seconds = _train(dataset, JUDGE_DEVICE)
    meta = {"format": "genlab-feature-net", "version": FEATURE_NET_VERSION, "fingerprint": fingerprint,
            "source": dataset.source, "accuracy": repr(accuracy), "train_seconds": repr(seconds)}
    try:
        save_tensors(path, net.state_dict(), meta)
    except OSError as e:
        warnings.warn(f"could not cache the feature net in {path} ({e}); it will be retrained next time", stacklevel=2)
    return FeatureNet(net.to(device), dataset, accuracy, fingerprint, seconds, from_cache=False)


# --- distances between feature sets ---

def _check_pair(a: np.ndarray, b: np.ndarray, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.ascontiguousarray(a, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two feature matrices (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < minimum or len(b) < minimum:
        raise DataError(f"need at least {minimum} feature vectors in each set, got {len(a)} and {len(b)}")
    return a, b


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½): the Fréchet distance between Gaussians fitted to `a` and `b`."""
    a, b = _check_pair(a, b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular inputs are handled below
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            # Singular covariances (fewer samples than dimensions, dead units): nudge the diagonals, as pytorch-fid.
            eps = 1e-6 * np.eye(len(cov_a))
            covmean = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    if np.iscomplexobj(covmean):
        # The product of two PSD matrices has a real non-negative spectrum; imaginary parts are round-off.
        # When they are not small, use the exactly symmetric form tr((√Σa Σb √Σa)^½) instead.
        if np.abs(covmean.diagonal().imag).max() > 1e-3 * max(1.0, np.abs(covmean.diagonal().real).max()):
            return _frechet_eig(mu_a, mu_b, cov_a, cov_b)
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def _frechet_eig(mu_a: np.ndarray, mu_b: np.ndarray, cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def kernel_distance(a: np.ndarray, b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD² with the kernel k(x, y) = (x·y/d + 1)³, averaged over random subsets (Bińkowski et al.).

    Returns the mean over `num_subsets` subsets of min(subset_size, len(a), len(b)) vectors from each set, and
    its standard error (std / √num_subsets; subsets overlap, so this is only a guide). Near 0 (and possibly
    negative) for two samples of one distribution.
    """
    a, b = _check_pair(a, b)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    g = torch.Generator().manual_seed(seed)
    values = torch.empty(num_subsets, dtype=torch.float64)
    for i in range(num_subsets):
        x = ta[torch.randperm(len(a), generator=g)[:m]]
        y = tb[torch.randperm(len(b), generator=g)[:m]]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        # Dropping the diagonals (k(x, x)) is what makes the estimate unbiased.
        same = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
        values[i] = same - 2 * k_xy.mean()
    se = float(values.std()) / math.sqrt(num_subsets) if num_subsets > 1 else math.nan
    return float(values.mean()), se


def _pairwise(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, y, compute_mode="use_mm_for_euclid_dist")  # the fast ‖x‖²+‖y‖²−2x·y form


def _knn_radii(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row of `x` to its k-th nearest other row."""
    return torch.cat([_pairwise(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values  # +1: the point itself
                      for i in range(0, len(x), chunk)])


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    """Fraction of `points` inside at least one ball (centre, radius)."""
    # The fast distance form is off by round-off (~1e-7 of the norms): allow that much, so that a point
    # always lies in its own ball even when duplicates give it radius 0.
    slack = 1e-6 * float(centres.norm(dim=1).max())
    inside = [(_pairwise(points[i:i + chunk], centres) <= radii[None] + slack).any(1)
              for i in range(0, len(points), chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points reaching their k-th nearest neighbour.
    Precision: the fraction of fake points inside the real manifold (are samples realistic?); recall: the
    fraction of real points inside the fake manifold (is the data's variety covered?).
    """
    real_np, fake_np = _check_pair(real, fake, minimum=k + 1)
    real, fake = torch.from_numpy(real_np).float(), torch.from_numpy(fake_np).float()  # float32: 2x faster
    precision = _coverage(fake, real, _knn_radii(real, k))
    recall = _coverage(real, fake, _knn_radii(fake, k))
    return precision, recall


# --- the report ---

def image_metrics(generated: torch.Tensor, dataset: ImageDataset, labels: torch.Tensor | None = None,
                  split: str = "test", net: FeatureNet | None = None, baseline: bool = True) -> dict:
    """Compare generated uint8 images (N, C, H, W) with a held-out split of `dataset` in feature space.

    `labels`: the classes the images were generated for (conditional models); adds `label_accuracy`.
    `baseline`: also score N real training images the same way, the value a perfect sampler would get with
    this many samples (FD and KID shrink with N, so compare runs at equal N).
    """
    if split not in ("valid", "test"):
        raise ConfigError(f"image metrics compare with a held-out split (valid or test), not {split!r}")
    if generated.dtype != torch.uint8 or generated.dim() != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {generated.dtype} {tuple(generated.shape)}")
    reference = dataset.splits[split]
    if len(generated) < 4 or len(reference) < 4:
        raise DataError(f"image metrics need at least 4 generated and 4 {split} images, "
                        f"got {len(generated)} and {len(reference)}")
    net = net or feature_net(dataset)
    generated = fit_images(generated.cpu(), dataset.channels, dataset.image_size)
    real = net.features(reference)
    report: dict = {
        "feature_net": net.name,
        "feature_net_test_accuracy": net.accuracy,
        "split": split,
        "n_generated": len(generated),
        "n_reference": len(reference),
        **_scores(net.features(generated), real),
    }
    if labels is not None:
        if len(labels) != len(generated):
            raise ValueError(f"{len(labels)} labels for {len(generated)} generated images")
        report["label_accuracy"] = float((net.classify(generated) == labels.cpu().long()).double().mean())
    if baseline:
        g = torch.Generator().manual_seed(FEATURE_SEED)
        train = dataset.splits["train"]
        pick = torch.randperm(len(train), generator=g)[:len(generated)]
        base = _scores(net.features(train[pick]), real)
        report["baseline_train_sample"] = {"n": len(pick), **base}
    return report


def _scores(fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
    kid, kid_se = kernel_distance(fake, real, subset_size=min(1000, len(fake), len(real)))
    # k-NN balls cost O(n²): precision and recall use at most PR_SAMPLES of each set (a fixed random subset).
    rng = np.random.default_rng(FEATURE_SEED)
    pr_real = real[rng.permutation(len(real))[:PR_SAMPLES]]
    pr_fake = fake[rng.permutation(len(fake))[:PR_SAMPLES]]
    precision, recall = precision_recall(pr_real, pr_fake)
    return {"fd": frechet_distance(fake, real), "kid": kid, "kid_se": kid_se, "precision": precision,
            "recall": recall}
