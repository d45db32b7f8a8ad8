"""Draw images with a genlab VAE, GAN or diffusion model exported to ONNX, without genlab or PyTorch: numpy and
onnxruntime (the PNG is written with the standard library).

    genlab export runs/diff --format onnx      # writes runs/diff/model.onnx and its sidecar model.onnx.json
    python examples/onnx_images.py runs/diff/model.onnx --label 7 --num-samples 16 --out sevens.png

The sidecar says what the graph takes and returns. A VAE's decoder and a GAN's generator turn noise into images in
one call; a diffusion model's graph is one denoising step, which the deterministic DDIM sampler below (η = 0,
"trailing" timesteps, x̂₀ clipped to [-1, 1], as genlab's `ddim`) calls once per step, with classifier-free guidance
when the model is conditional. A text-conditioned model needs its text encoder's states for a prompt (see the
sidecar's `text_encoder`); this script draws with the empty prompt's, stored in the sidecar: unconditional samples.
"""

import argparse
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort


class OnnxImageModel:
    def __init__(self, path: str | Path):
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.meta = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
        self.inputs = {s["name"]: s for s in self.meta["inputs"]}

    def run(self, **inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, inputs)[0]

    def condition(self, n: int, label: int | None) -> dict[str, np.ndarray]:
        """The condition inputs of n images: a label (or every class in turn), the empty prompt, or none."""
        if "label" in self.inputs:
            labels = np.full(n, label) if label is not None else np.arange(n) % len(self.meta["class_names"])
            return {"label": labels.astype(np.int64)}
        empty = self.meta.get("empty_prompt", {})
        return {k: np.repeat(np.asarray(v, dtype=np.bool_ if k == "text_mask" else np.float32), n, axis=0)
                for k, v in empty.items()}

    def null_condition(self, n: int) -> dict[str, np.ndarray] | None:
        """A diffusion model's null condition for guidance: the null label (text models: the empty prompt)."""
        if "null_label" not in self.meta:
            return None
        return {"label": np.full(n, self.meta["null_label"], np.int64)}


def ddim(model: OnnxImageModel, x: np.ndarray, condition: dict, null: dict | None, steps: int,
         guidance: float) -> np.ndarray:
    """Deterministic DDIM from noise x (N, C, H, W) at t = T - 1 to images in [-1, 1]."""
    meta = model.meta
    acp = np.asarray(meta["schedule"]["alphas_cumprod"], np.float64)
    T = len(acp)
    timesteps = np.round(T - np.arange(steps) * (T / steps)).astype(np.int64) - 1  # "trailing" spacing
    for i, t in enumerate(timesteps):
        a = acp[t]
        a_next = acp[timesteps[i + 1]] if i + 1 < steps else 1.0
        tt = np.full(len(x), t, np.int64)
        out = model.run(x_t=x, t=tt, **condition)
        if null is not None and guidance != 0:
            out_null = model.run(x_t=x, t=tt, **null)
            out = out_null + (1 + guidance) * (out - out_null)
        if meta["prediction"] == "epsilon":
            x0 = (x - math.sqrt(1 - a) * out) / math.sqrt(a)
        elif meta["prediction"] == "v":
            x0 = math.sqrt(a) * x - math.sqrt(1 - a) * out
        else:
            x0 = out
        x0 = np.clip(x0, -1, 1)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = (math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps).astype(np.float32)
    return np.clip(x, -1, 1)


def draw(model: OnnxImageModel, n: int, label: int | None, steps: int, guidance: float | None,
         rng: np.random.Generator) -> np.ndarray:
    """n images (N, C, H, W) as uint8."""
    meta = model.meta
    condition = model.condition(n, label)
    if meta["kind"] == "diffusion_step":
        x = rng.standard_normal((n, *meta["image_shape"])).astype(np.float32)
        w = meta["guidance"] if guidance is None else guidance
        images = ddim(model, x, condition, model.null_condition(n), steps, w)
    else:
        z = rng.standard_normal((n, model.inputs["z"]["shape"][1])).astype(np.float32)
        images = model.run(z=z, **condition)
    scaled = images * 255 if meta["pixel_range"] == "unit" else (images + 1) * 127.5
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) uint8 -> one (H', W', C) picture, nrow images a row, black between them."""
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    out = np.zeros((pad + rows * (h + pad), pad + nrow * (w + pad), c), np.uint8)
    for i, img in enumerate(images):
        y, x = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        out[y:y + h, x:x + w] = img.transpose(1, 2, 0)
    return out


def write_png(path: Path, picture: np.ndarray) -> None:
    """An 8-bit grayscale or RGB PNG of picture (H, W, 1 or 3)."""
    h, w, c = picture.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in picture.reshape(h, w * c))  # filter 0 on every row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the exported model.onnx (its sidecar model.onnx.json beside it)")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--label", default=None, help="class name or index (default: every class in turn)")
    parser.add_argument("--steps", type=int, default=20, help="diffusion: DDIM steps")
    parser.add_argument("--guidance", type=float, default=None, help="diffusion: guidance scale (default: the run's)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default="samples.png")
    args = parser.parse_args()

    model = OnnxImageModel(args.model)
    names = model.meta["class_names"] or []
    label = None if args.label is None else (names.index(args.label) if args.label in names else int(args.label))
    images = draw(model, args.num_samples, label, args.steps, args.guidance, np.random.default_rng(args.seed))
    write_png(Path(args.out), grid(images, nrow=math.ceil(math.sqrt(len(images)))))
    print(f"wrote {len(images)} images to {args.out}")


if __name__ == "__main__":
    main()
