"""What the image benchmarks (vae.py, gan.py) share: sample a trained run, time the sampling, save a grid and
score the samples in genlab's feature-net space (genlab.eval.images; not Inception FID); the machine record."""

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from genlab.data.images import save_image_grid
from genlab.eval.images import feature_net, image_metrics
from genlab.tasks.images import IMAGE_GEN, generate_uint8

METRIC_SAMPLES = 1000
METRIC_KEYS = ("fd", "kid", "kid_se", "precision", "recall", "n_generated", "n_reference", "feature_net",
               "feature_net_test_accuracy", "baseline_train_sample")


def sample_and_score(model: Any, grid: Path) -> dict[str, Any]:
    """METRIC_SAMPLES samples (seed 0) of `model` against its data set's whole test split; the first 64 go to
    `grid`. Returns samples/s and the metrics (with the real-data baseline, 1000 training images)."""
    ds = IMAGE_GEN.dataset(model.run_config)
    t0 = time.perf_counter()
    samples = generate_uint8(model, METRIC_SAMPLES, seed=0)
    seconds = time.perf_counter() - t0
    save_image_grid(samples[:64], grid, nrow=8)
    metrics = image_metrics(samples, ds, split="test", net=feature_net(ds))
    return {"samples_per_s": round(METRIC_SAMPLES / seconds), **{k: metrics.get(k) for k in METRIC_KEYS}}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "device": device_name(), "load_average_at_end": os.getloadavg()}


def device_name() -> str:
    """Where genlab's "auto" device trains: the CUDA card's name, or "cpu"."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
