"""GANs: losses, gradient penalty, spectral norm, shapes, config errors, the 8-Gaussian ring, training
visibility, collapse detection, resume, sampling through IMAGE_GEN and DDP gradient synchronisation."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import genlab
from genlab.checkpoint import CHECKPOINT, RunDir, load_tensors
from genlab.distributed import DistInfo
from genlab.errors import ConfigError, TrainingError
from genlab.models.gan.adversarial import (
    DCGAN,
    GAN,
    OBJECTIVES,
    GANConfig,
    gradient_penalty,
    pooled_frechet_distance,
)
from genlab.trainer import StepContext, TrainConfig, Trainer

# --- the 8-Gaussian ring (Metz et al. 2017; Srivastava et al. 2017's mode counting) ---

RADIUS, SIGMA = 0.8, 0.02
CENTERS = torch.tensor([[RADIUS * math.cos(2 * math.pi * k / 8), RADIUS * math.sin(2 * math.pi * k / 8)]
                        for k in range(8)])


def ring_batches(batch_size: int, seed: int):
    """step -> {"x": (B, 2, 1, 1) points of the ring mixture, "y": None}: 2-D points as 2-channel 1-pixel images."""
    def batch(step: int) -> dict:
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        k = torch.randint(0, 8, (batch_size,), generator=g)
        x = CENTERS[k] + SIGMA * torch.randn(batch_size, 2, generator=g)
        return {"x": x.view(batch_size, 2, 1, 1), "y": None}
    return batch


def count_modes(samples: torch.Tensor, min_fraction: float = 0.02) -> tuple[int, float]:
    """(modes covered, fraction of high-quality samples): a sample is high quality within 3σ of a center; a mode
    is covered when at least `min_fraction` of all samples are high-quality samples of it."""
    d = torch.cdist(samples.float(), CENTERS)  # (N, 8)
    nearest_d, nearest = d.min(1)
    good = nearest_d < 3 * SIGMA
    per_mode = torch.bincount(nearest[good], minlength=8)
    return int((per_mode >= min_fraction * len(samples)).sum()), float(good.float().mean())


def train_ring(loss: str, steps: int, seed: int = 0, lr: float = 1e-3, batch_size: int = 256, **options) -> GAN:
    torch.manual_seed(seed)
    cfg = GANConfig(channels=2, image_size=1, arch="mlp", loss=loss, latent_dim=2, g_width=64, d_width=64,
                    mlp_layers=3, sample_interval=0, **options)
    model = GAN(cfg)
    tc = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=0, min_lr_ratio=1.0, grad_clip=0.0,
                     eval_interval=10**9, log_interval=100, seed=seed)
    Trainer(model, ring_batches(batch_size, seed), None, tc, DistInfo(0, 1, torch.device("cpu"))).fit()
    return model


def ring_samples(model: GAN, n: int = 2000) -> torch.Tensor:
    return model.generate(n, generator=torch.Generator().manual_seed(0)).view(n, 2)


# --- losses and penalties ---

def test_losses_at_known_points() -> None:
    zero, big = torch.zeros(4), torch.full((4,), 20.0)
    # D(x) = 1/2 everywhere: the minimax value is 2·log 2 for D and log(1/2) for G.
    assert math.isclose(OBJECTIVES["nonsat"].d_loss(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(OBJECTIVES["minimax"].g_loss(zero).item(), -math.log(2), rel_tol=1e-6)
    assert math.isclose(OBJECTIVES["nonsat"].g_loss(zero).item(), math.log(2), rel_tol=1e-6)
    # A perfect, confident D: its loss is ~0 and the minimax G loss saturates (gradient ~0), the nonsat one not.
    assert OBJECTIVES["nonsat"].d_loss(big, -big).item() < 1e-6
    fake = (-big).requires_grad_(True)
    (g_sat,) = torch.autograd.grad(OBJECTIVES["minimax"].g_loss(fake), fake)
    fake2 = (-big).requires_grad_(True)
    (g_ns,) = torch.autograd.grad(OBJECTIVES["nonsat"].g_loss(fake2), fake2)
    assert g_sat.abs().max() < 1e-8 < 0.1 < g_ns.abs().min()
    assert OBJECTIVES["hinge"].d_loss(torch.ones(3), -torch.ones(3)).item() == 0.0
    assert OBJECTIVES["hinge"].d_loss(zero, zero).item() == 2.0
    assert OBJECTIVES["lsgan"].d_loss(torch.ones(3), torch.zeros(3)).item() == 0.0
    assert OBJECTIVES["lsgan"].g_loss(torch.ones(3)).item() == 0.0
    assert OBJECTIVES["wgan-gp"].d_loss(torch.full((3,), 2.0), torch.ones(3)).item() == -1.0
    assert OBJECTIVES["wgan-gp"].n_critic == 5 and OBJECTIVES["wgan-gp"].betas == (0.0, 0.9)


class LinearCritic(nn.Module):
    """D(x) = w·flatten(x), recording its inputs."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(x.detach())
        return x.flatten(1) @ self.w


def test_gradient_penalty_on_interpolates_and_zero_for_1_lipschitz() -> None:
    real, fake = torch.randn(64, 2, 1, 1), torch.randn(64, 2, 1, 1) + 5
    w = torch.tensor([0.6, 0.8])  # ‖w‖ = 1: the gradient norm is 1 everywhere
    critic = LinearCritic(w)
    assert gradient_penalty(critic, real, fake, None).item() < 1e-10
    # the penalty is taken at x̂ = εx + (1 − ε)G(z), on the segment between each real and its fake
    x_hat = critic.seen[0].view(64, 2)
    eps = (x_hat - fake.view(64, 2))[:, 0] / (real - fake).view(64, 2)[:, 0]
    assert torch.allclose(x_hat, eps[:, None] * real.view(64, 2) + (1 - eps[:, None]) * fake.view(64, 2), atol=1e-5)
    assert ((eps >= 0) & (eps <= 1)).all() and eps.std() > 0.1
    # ‖w‖ = 2: (2 − 1)² = 1, and the penalty has a gradient for the critic's weights (create_graph)
    critic2 = LinearCritic(2 * w)
    gp = gradient_penalty(critic2, real, fake, None)
    assert math.isclose(gp.item(), 1.0, rel_tol=1e-5)
    (grad,) = torch.autograd.grad(gp, critic2.w)
    assert torch.allclose(grad, 2 * (2 - 1) * w, atol=1e-5)  # d/dw (‖w‖ − 1)² = 2(‖w‖ − 1)·w/‖w‖


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_spectral_norm_keeps_top_singular_value_at_one(arch: str) -> None:
    cfg = GANConfig(channels=1, image_size=16, arch=arch, spectral_norm=True, d_width=16, num_classes=3,
                    conditional=True)
    D = GAN(cfg).D.train()
    with torch.no_grad():
        for _ in range(30):  # power iterations run in training-mode forwards
            D(torch.randn(8, 1, 16, 16), torch.randint(0, 3, (8,)))
    layers = [m for m in D.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding))]
    assert len(layers) >= 3
    for m in layers:
        # Miyato et al. normalise the weight reshaped to (out, in·kh·kw)
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert abs(sigma - 1) < 0.02, (type(m).__name__, sigma)


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    a = torch.rand(200, 1, 16, 16) * 2 - 1
    assert abs(pooled_frechet_distance(a, a)) < 1e-6
    assert pooled_frechet_distance(a, a + 0.5) == pytest.approx(64 * 0.25, rel=1e-4)


# --- shapes and bad input ---

@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 1), (16, 3)])
@pytest.mark.parametrize("conditional", [False, True])
def test_dcgan_shapes(size: int, channels: int, conditional: bool) -> None:
    cfg = GANConfig(channels=channels, image_size=size, num_classes=10, conditional=conditional,
                    g_width=8, d_width=8, latent_dim=16)
    model = GAN(cfg)
    y = torch.arange(5) if conditional else None
    x = model.G(torch.randn(5, 16), y)
    assert x.shape == (5, channels, size, size) and x.abs().max() <= 1
    assert model.D(x, y).shape == (5,)
    out = model.generate(7, torch.arange(7) % 10 if conditional else None, torch.Generator().manual_seed(0))
    assert out.shape == (7, channels, size, size)
    assert torch.equal(out, model.generate(7, torch.arange(7) % 10 if conditional else None,
                                           torch.Generator().manual_seed(0)))


def test_dcgan_plan() -> None:
    assert DCGAN.plan(28) == (7, 2) and DCGAN.plan(32) == (4, 3) and DCGAN.plan(64) == (4, 4)


@pytest.mark.parametrize("options,message", [
    ({"loss": "wasserstein"}, "unknown --loss 'wasserstein'; choose one of minimax, nonsat, hinge, lsgan, wgan-gp"),
    ({"arch": "resnet"}, "unknown --arch 'resnet'; choose one of mlp, dcgan"),
    ({"betas": "0.5"}, "--betas takes two numbers"),
    ({"n_critic": 0}, "--n-critic must be at least 1"),
    ({"ema_decay": 1.0}, "--ema-decay must be in [0, 1)"),
])
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        genlab.api.resolve_configs("gan", options)


def test_bad_shapes_and_labels() -> None:
    with pytest.raises(ConfigError, match="--arch dcgan cannot produce 30-pixel images"):
        GAN(GANConfig(image_size=30))
    with pytest.raises(ConfigError, match="cannot produce 3-pixel"):
        GAN(GANConfig(image_size=3))
    with pytest.raises(ConfigError, match="--conditional needs labelled images"):
        GAN(GANConfig(num_classes=0, conditional=True))
    GAN(GANConfig(image_size=30, arch="mlp"))  # the MLP takes any size
    model = GAN(GANConfig(num_classes=10, g_width=8, d_width=8))
    with pytest.raises(ConfigError, match="trained without labels"):
        model.generate(4, labels=torch.arange(4))
    cond = GAN(GANConfig(num_classes=10, conditional=True, g_width=8, d_width=8))
    with pytest.raises(ConfigError, match="class ids in 0..9"):
        cond.generate(2, labels=torch.tensor([3, 10]))


# --- the ring: every loss finds all 8 modes ---

def test_nonsat_covers_all_modes_of_the_ring() -> None:
    torch.set_num_threads(1)  # tiny networks: threads only add overhead
    modes, quality = count_modes(ring_samples(train_ring("nonsat", 1500)))
    assert modes == 8 and quality > 0.3, (modes, quality)


# Per-loss settings for the toy (found by a small sweep): on data of scale 1, λ = 10 dominates WGAN-GP's critic,
# and the hinge D learns faster with a larger learning rate (TTUR).
RING_OPTIONS = {"minimax": {}, "nonsat": {}, "hinge": {"lr_d": 2e-3}, "lsgan": {},
                "wgan-gp": {"n_critic": 2, "gp_weight": 1.0}}


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(OBJECTIVES))
def test_every_loss_covers_all_modes_of_the_ring(loss: str) -> None:
    torch.set_num_threads(1)
    modes, quality = count_modes(ring_samples(train_ring(loss, 3000, **RING_OPTIONS[loss])))
    print(f"{loss}: {modes}/8 modes, {quality:.1%} high-quality samples")
    assert modes == 8 and quality > 0.3, (modes, quality)


# --- training through genlab.train on a tiny labelled image set ---

def tiny_images(path: Path, n: int = 96, size: int = 16) -> Path:
    """An .npz of n grayscale size × size images in 3 classes (a bright square at a class-specific corner)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = rng.integers(0, 40, (n, 1, size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = [(0, 0), (0, size // 2), (size // 2, 0)][k]
        images[i, 0, r:r + size // 2, c:c + size // 2] = 220
    np.savez(path, images=images, labels=labels, class_names=np.array(["top-left", "top-right", "bottom-left"]))
    return path


def tiny_options(data: Path, **extra: object) -> dict[str, object]:
    return {"data": str(data), "arch": "dcgan", "g_width": 8, "d_width": 8, "latent_dim": 16, "batch_size": 16,
            "lr": 2e-4, "warmup_steps": 0, "min_lr_ratio": 1.0, "grad_clip": 0.0, "log_interval": 1,
            "eval_interval": 6, "sample_interval": 4, "device": "cpu"} | extra


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_images(tmp_path_factory.mktemp("gan_data") / "tiny.npz")


def test_train_logs_progress_and_samples_by_label(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "run"
    summary = genlab.train("gan", out, tiny_options(data, max_steps=12, conditional=True))
    assert summary["steps"] == 12 and math.isfinite(summary["best_val"])
    records = RunDir(out).read_metrics()
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 12
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_generator", "grad_norm_discriminator",
                "images_per_s"):
        assert all(math.isfinite(r[key]) for r in train), key
    assert all(0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1 for r in train)
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [6, 12] and all(r["loss"] == r["fd_pool8"] >= 0 for r in val)
    grids = sorted(p.name for p in (out / "progress").glob("step_*.png"))
    assert grids == ["step_000000.png", "step_000004.png", "step_000008.png", "step_000012.png"]
    from PIL import Image

    assert Image.open(out / "progress" / "strip.png").size == (8 * 16, 4 * 16)  # 8 samples a row, a row per grid
    # the EMA generator is part of the saved weights
    tensors, _ = load_tensors(out / "model.safetensors")
    assert any(k.startswith("G_ema.") for k in tensors)
    # sampling by class name through IMAGE_GEN
    written = genlab.sample(out, label="top-right", num_samples=6, out_path=tmp_path / "s.png", seed=0, log=None)
    assert Path(written["grid"]).is_file()
    model = genlab.load(out)
    assert model.conditional and model.generate(3, torch.tensor([0, 1, 2])).shape == (3, 1, 16, 16)


def test_interpolate_walks_between_noise_vectors(tmp_path: Path, data: Path) -> None:
    from genlab.tasks.images import slerp

    out = tmp_path / "run"
    genlab.train("gan", out, tiny_options(data, max_steps=2, sample_interval=0, conditional=True))
    res = genlab.interpolate(out, pairs=3, steps=5, seed=1, log=None)
    assert Image.open(res["grid"]).size == (5 * 18 + 2, 3 * 18 + 2)  # 16-px images, 2-px padding
    model = genlab.load(out)
    # every row is G's image of a great-circle walk between two seeded noise draws, holding the row's class
    ends = model.noise(6, torch.device("cpu"), torch.Generator().manual_seed(1))
    t = torch.linspace(0, 1, 5)
    walk = slerp(ends[0], ends[3], t)
    assert torch.allclose(walk[0], ends[0], atol=1e-6) and torch.allclose(walk[-1], ends[3], atol=1e-5)
    ends_of_row = model.decode(torch.stack([ends[0], ends[3]]), 0)
    assert torch.allclose(model.decode(walk, 0)[[0, -1]], ends_of_row, atol=1e-5)


def test_slerp_keeps_gaussian_norms_where_the_straight_line_shrinks() -> None:
    from genlab.tasks.images import slerp

    a, b = torch.randn(2, 256, generator=torch.Generator().manual_seed(0))
    mid = slerp(a, b, torch.tensor([0.5]))[0]
    assert abs(mid.norm() - (a.norm() + b.norm()) / 2) < 0.05 * a.norm()  # on the shell, √256 = 16
    assert ((a + b) / 2).norm() < 0.8 * a.norm()  # the linear midpoint falls inside it (≈ 16/√2)
    same = slerp(a, a, torch.linspace(0, 1, 3))
    assert torch.allclose(same, a.expand(3, -1))


def test_label_for_unconditional_gan_is_an_error(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "run"
    genlab.train("gan", out, tiny_options(data, max_steps=2, sample_interval=0))
    with pytest.raises(ConfigError, match="without labels"):
        genlab.sample(out, label="top-left", num_samples=4, out_path=tmp_path / "s.png", log=None)


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path: Path, data: Path) -> None:
    # wgan-gp with n_critic 2: the D/G phase, the EMA and the penalty's noise must all survive the resume.
    opts = tiny_options(data, loss="wgan-gp", n_critic=2, conditional=True, ema_decay=0.9, sample_interval=0)
    genlab.train("gan", tmp_path / "a", opts | {"max_steps": 12})
    genlab.train("gan", tmp_path / "b", opts | {"max_steps": 12})
    genlab.train("gan", tmp_path / "c", opts | {"max_steps": 6})
    genlab.train("gan", tmp_path / "c", {"max_steps": 12}, resume=True)
    a, b, c = (load_tensors(tmp_path / r / CHECKPOINT)[0] for r in "abc")
    assert any(k.startswith("model.G_ema.") for k in a)
    for other in (b, c):
        assert a.keys() == other.keys()
        for k in a:
            if k.startswith(("model.", "optim.")):
                assert torch.equal(a[k], other[k]), k


def test_collapse_detection_keeps_last_checkpoint(tmp_path: Path, data: Path, monkeypatch) -> None:
    # A D that rejects every fake with certainty (logit −10, D(G(z)) ≈ 5e-5) from step 7 on.
    forward = GAN.train_step

    def rigged(self, batch, ctx):
        if ctx.step >= 6:
            with torch.no_grad():
                self.D.head.bias.fill_(-10.0)
                self.D.head.weight.zero_()
        return forward(self, batch, ctx)

    monkeypatch.setattr(GAN, "train_step", rigged)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="discriminator has won for 5 steps in a row"):
        genlab.train("gan", out, tiny_options(data, max_steps=30, collapse_steps=5, sample_interval=0))
    _, meta = load_tensors(out / CHECKPOINT)
    assert meta["step"] == "6"  # the last checkpoint before the collapse is kept


# --- DDP: both networks wrapped, the gradient penalty's double backward included ---

class RecordingContext(StepContext):
    """Does the backward pass of each update and keeps the gradients, without stepping."""

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.grads = getattr(self, "grads", {})
        self.grads[name] = [p.grad.clone() for g in opt.param_groups for p in g["params"]]


def _ddp_worker(rank: int, world: int, port: int, loss: str) -> None:
    import torch.distributed as dist

    from genlab.distributed import teardown

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    finished = False
    try:
        _check_ddp_gradients(rank, world, loss)  # its DDP wrappers are gone when it returns, as teardown needs
        finished = True
    finally:
        teardown(finished)


def _check_ddp_gradients(rank: int, world: int, loss: str) -> None:
    import copy

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)  # the same initial weights on every rank (DDP would broadcast them anyway)
    model = GAN(GANConfig(channels=1, image_size=8, loss=loss, g_width=4, d_width=4, latent_dim=8, num_classes=3,
                          conditional=True, spectral_norm=True, n_critic=2, sample_interval=0, collapse_steps=0))
    tc = TrainConfig(grad_clip=0.0)
    optimizers = model.configure_optimizers(tc)
    g = torch.Generator().manual_seed(rank)  # each rank its own shard of data
    batch = {"x": torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, "y": torch.randint(0, 3, (4,), generator=g)}
    state = copy.deepcopy(model.state_dict())  # spectral norm's power iteration and BN statistics move

    local = RecordingContext(model.networks(), optimizers, tc)
    local.step = 1  # a step with both a D and a G update
    torch.manual_seed(10 + rank)
    model.train_step(batch, local)

    model.load_state_dict(state)
    synced = RecordingContext({k: DistributedDataParallel(v) for k, v in model.networks().items()}, optimizers, tc)
    synced.step = 1
    torch.manual_seed(10 + rank)
    model.train_step(batch, synced)

    for name in ("discriminator", "generator"):
        for mine, reduced in zip(local.grads[name], synced.grads[name], strict=True):
            everyone = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(everyone, mine)
            # DDP's gradient is the mean of every rank's own gradient, the penalty's part included
            assert torch.allclose(reduced, torch.stack(everyone).mean(0), atol=1e-6), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loss", ["wgan-gp", "hinge"])
def test_ddp_synchronises_gradients_of_both_networks(loss: str) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), loss), nprocs=2, join=True)


def test_torchrun_two_processes(tmp_path: Path, data: Path) -> None:
    args = ["train", "gan", "--out", str(tmp_path / "run"), "--device", "cpu"]
    for k, v in tiny_options(data, max_steps=6, loss="wgan-gp", n_critic=2, conditional=True).items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "genlab", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    train = [r for r in RunDir(tmp_path / "run").read_metrics() if r["split"] == "train"]
    assert len(train) == 6 and all(math.isfinite(r["loss_d"]) for r in train)
    assert (tmp_path / "run" / "progress" / "step_000004.png").is_file()


# --- a real data set (slow) ---

@pytest.mark.slow
def test_conditional_samples_match_their_labels_on_mnist5k(tmp_path: Path) -> None:
    from genlab.eval.images import feature_net, image_metrics
    from genlab.tasks.images import IMAGE_GEN, balanced_labels, generate_uint8

    torch.set_num_threads(1)
    out = tmp_path / "run"
    genlab.train("gan", out, {"data": "mnist5k", "conditional": True, "loss": "hinge", "spectral_norm": True,
                              "g_width": 32, "d_width": 32, "batch_size": 64, "lr": 2e-4, "warmup_steps": 0,
                              "min_lr_ratio": 1.0, "grad_clip": 0.0, "max_steps": 600, "eval_interval": 600,
                              "sample_interval": 0, "device": "cpu"})
    model = genlab.load(out)
    ds = IMAGE_GEN.dataset(model.run_config)
    labels = balanced_labels(500, 10)
    report = image_metrics(generate_uint8(model, 500, labels, seed=0), ds, labels=labels, net=feature_net(ds))
    print(f"label accuracy {report['label_accuracy']:.3f}, FD {report['fd']:.2f}")
    assert report["label_accuracy"] > 0.3  # chance is 0.1


def test_image_size_option_reaches_the_data_not_a_derived_field() -> None:
    from genlab.api import resolve_configs
    from genlab.errors import ConfigError as Err

    cfg = resolve_configs("gan", {"image_size": "32"})
    assert cfg["data"].image_size == 32
    with pytest.raises(Err, match="decided by the data"):
        resolve_configs("lstm", {"vocab_size": "10"})
