"""VAE: the bounds (ELBO, IWAE-k), overfitting, conditioning, save/load, resume, bad shapes."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.checkpoint import CHECKPOINT, load_tensors
from genlab.errors import ConfigError
from genlab.models.vae.vae import VAE, VAEConfig

SHAPES = ["horizontal", "vertical", "square", "diagonal"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids spinning threads (up to 80x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_images(n_per_class: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, size, size) pictures of four easy classes (a bar across, a bar down, a square, a diagonal)
    at random places, and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(len(SHAPES)):
        for _ in range(n_per_class):
            img = np.zeros((size, size), np.uint8)
            a, b = rng.integers(1, size // 2, 2)
            bar, side = max(1, size // 6), size // 3 + 1
            if label == 0:
                img[a:a + bar, 1:size - 1] = 255
            elif label == 1:
                img[1:size - 1, b:b + bar] = 255
            elif label == 2:
                img[a:a + side, b:b + side] = 255
            else:
                for i in range(size - 2):
                    img[1 + i, 1 + i] = img[1 + i, min(size - 1, 2 + i)] = 255
            images.append(img)
            labels.append(label)
    return np.stack(images)[:, None], np.array(labels, np.int64)


def make_tiny_npz(path: Path, n_train_per_class: int = 48, n_test_per_class: int = 16, size: int = 16) -> Path:
    x, y = tiny_images(n_train_per_class, size, seed=0)
    tx, ty = tiny_images(n_test_per_class, size, seed=1)
    np.savez(path, images=x, labels=y, test_images=tx, test_labels=ty, class_names=np.array(SHAPES))
    return path


def tiny_vae(**kw: object) -> VAE:
    cfg = VAEConfig(in_channels=1, resolution=8, n_classes=4, latent_dim=4, hidden=32, **kw)  # type: ignore[arg-type]
    cfg.validate()
    return VAE(cfg).eval()


TINY = {"hidden": 64, "latent_dim": 8, "batch_size": 16, "warmup_steps": 5, "eval_interval": 50, "log_interval": 5,
        "lr": 3e-3}


# --- bounds ---

def test_iwae_tightens_with_k_and_equals_elbo_at_k1() -> None:
    torch.manual_seed(0)
    model = tiny_vae(binarize="threshold").train()
    x8, _ = tiny_images(8, size=8)
    images = torch.from_numpy(x8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):  # a posterior that depends on x, so that the bounds differ
        rec, kl = model(images.float() / 255)
        opt.zero_grad()
        (rec + kl).mean().backward()
        opt.step()
    model.eval()
    r1 = model.likelihood_report(images, None, num_importance_samples=1, seed=1)
    r64 = model.likelihood_report(images, None, num_importance_samples=64, seed=1)
    r1000 = model.likelihood_report(images, None, num_importance_samples=1000, seed=1)
    assert r1["iwae_nll_nats"] == pytest.approx(r1["neg_elbo_nats"])  # the same bound at k = 1
    assert r1["iwae_nll_nats"] > r64["iwae_nll_nats"] + 0.1
    assert r64["iwae_nll_nats"] > r1000["iwae_nll_nats"] - 0.05
    for r in (r64, r1000):
        assert r["iwae_nll_nats"] <= r["neg_elbo_nats"]  # Jensen, image by image
    # Units: bits per dimension = nats / (D ln 2).
    assert r64["iwae_bits_per_dim"] == pytest.approx(r64["iwae_nll_nats"] / (64 * math.log(2)))
    # The k-sample ELBO estimate is unbiased: it matches one-sample ELBOs with the analytic KL.
    x = images.float() / 255
    with torch.no_grad():
        rec, kl = zip(*(model(x, None) for _ in range(300)), strict=True)
    analytic = float((torch.stack(rec) + torch.stack(kl)).mean())
    assert r1000["neg_elbo_nats"] == pytest.approx(analytic, rel=0.01)


def test_gaussian_likelihood_units() -> None:
    model = tiny_vae(likelihood="gaussian", gaussian_std=0.1)
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    r = model.likelihood_report(images, None, num_importance_samples=4)
    assert not r["binarised"] and "Gaussian" in r["likelihood_model"]
    assert r["iwae_bits_per_dim"] == pytest.approx(r["iwae_nll_nats"] / (64 * math.log(2)) + 8)
    learned = tiny_vae(likelihood="gaussian")
    assert learned.log_sigma is not None and "learned" in learned.likelihood_model()


# --- shapes, conditioning, bad configs ---

@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("conditional", [False, True])
def test_shapes(arch: str, conditional: bool) -> None:
    model = tiny_vae(arch=arch, conditional=conditional, conv_channels=4)
    x = torch.rand(5, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 0]) if conditional else None
    assert model.encode(x, y).shape == (5, 4)
    out = model.generate(5, y, torch.Generator().manual_seed(0))
    assert out.shape == (5, 1, 8, 8) and 0 <= out.min() and out.max() <= 1
    rec, kl = model(x, y)
    assert rec.shape == kl.shape == (5,) and torch.isfinite(rec + kl).all()
    assert model.conditional is conditional


def test_bad_configs() -> None:
    with pytest.raises(ConfigError, match="multiple of 4"):
        VAE(VAEConfig(in_channels=1, resolution=10, arch="conv"))
    with pytest.raises(ConfigError, match="labelled"):
        VAE(VAEConfig(in_channels=1, resolution=8, conditional=True))
    with pytest.raises(ConfigError, match="arch"):
        VAEConfig(arch="resnet").validate()
    with pytest.raises(ConfigError, match="likelihood"):
        VAEConfig(likelihood="poisson").validate()


def test_kl_warmup_and_beta() -> None:
    model = tiny_vae(beta=4.0, kl_warmup_steps=10)
    assert model.kl_weight(0) == pytest.approx(0.4)
    assert model.kl_weight(4) == pytest.approx(2.0)
    assert model.kl_weight(100) == 4.0


# --- training: overfitting, save/load, resume ---

@pytest.fixture(scope="module")
def tiny64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 training images (16 per class), 32 test images."""
    return make_tiny_npz(tmp_path_factory.mktemp("data") / "tiny64.npz", 16, 8)


def test_overfits_64_images(tiny64: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    genlab.train("vae", out, TINY | {"data": str(tiny64), "max_steps": 300, "valid_fraction": 0.0,
                                     "binarize": "threshold", "lr": 5e-3})
    records = [r for r in genlab.api.RunDir(out).read_metrics() if r["split"] == "train"]
    first, last = records[0]["nelbo"], records[-1]["nelbo"]
    # Starts near 256·ln 2 ≈ 177 nats (every pixel a coin flip); memorising 64 simple pictures leaves little.
    assert last < 0.25 * first, (first, last)


def test_save_load_identical_and_resume_exact(tiny64: Path, tmp_path: Path) -> None:
    opts = TINY | {"data": str(tiny64), "conditional": True, "arch": "conv", "conv_channels": 4,
                   "warmup_steps": 1, "min_lr_ratio": 1.0, "eval_interval": 10}
    genlab.train("vae", tmp_path / "straight", opts | {"max_steps": 20})
    genlab.train("vae", tmp_path / "resumed", opts | {"max_steps": 10})
    genlab.train("vae", tmp_path / "resumed", {"max_steps": 20}, resume=True)
    a, _ = load_tensors(tmp_path / "straight" / CHECKPOINT)
    b, _ = load_tensors(tmp_path / "resumed" / CHECKPOINT)
    for k, v in a.items():
        if k.startswith("model."):
            assert torch.allclose(v, b[k], atol=1e-6), k
    m1, m2 = genlab.load(tmp_path / "straight"), genlab.load(tmp_path / "straight")
    labels = torch.tensor([0, 1, 2, 3])
    s1 = m1.generate(4, labels, torch.Generator().manual_seed(3))
    s2 = m2.generate(4, labels, torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(m1.encode(x, labels), m2.encode(x, labels))


# --- slow: a conditional VAE on mnist5k draws the digits it is asked for ---

@pytest.mark.slow
def test_conditional_vae_samples_have_their_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genlab.eval.images import feature_net
    from genlab.tasks.images import IMAGE_GEN, balanced_labels, generate_uint8

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cvae"
    genlab.train("vae", out, {"data": "mnist5k", "conditional": True, "max_steps": 2000, "batch_size": 64,
                              "lr": 2e-3, "eval_interval": 1000})
    model = genlab.load(out)
    labels = balanced_labels(500, 10)
    samples = generate_uint8(model, 500, labels, seed=0)
    net = feature_net(IMAGE_GEN.dataset(model.run_config))
    accuracy = float((net.classify(samples) == labels).float().mean())
    assert accuracy > 0.5, accuracy  # chance is 0.1
