"""Image generation: images → batches → any image generator (VAE, GAN, ...); sampling grids, reconstructions,
latent walks, and the evaluation report (likelihood bounds where the model has them, sample quality always).

The image-generator contract (duck-typed; the task never asks which family it holds):

    task = IMAGE_GEN                                   class attribute
    pixel_range: "unit" | "symmetric"                  class attribute: [0,1] or [-1,1] floats in and out
    shapes_from_data(channels, image_size, num_classes) -> dict     classmethod: config fields the data decides
    conditional: bool                                  property: trained with labels (then generate needs them)
    text_conditioned: bool                             property: trained on captions with a text encoder
    generate(num_samples, labels=None, generator=None, prompts=None) -> float (N,C,H,W) in the model's range
        labels: int64 (N,) class indices, only for conditional models; prompts: strings (one for all or one
        each), only for text-conditioned models ("" samples unconditionally); generator: a torch.Generator for
        reproducible noise (it may live on the CPU while the model is on CUDA)
    load_pretrained()                                  optional: at training start, pretrained parts (a text
                                                       encoder copied from a language-model run)

Optional hooks, called when present:

    noise(n, device, generator=None) -> (N, Z)         draws of the latent prior
    decode(z, labels=None) -> (N,C,H,W)                latents → images in model range (labels: class ids)
        both: `genlab interpolate` walks between two prior draws (a GAN)
    encode(x, labels=None) -> (N, Z)                   images in model range → latents (posterior means)
        with decode: `genlab reconstruct`, and `genlab interpolate` walks between two real images (a VAE)
    likelihood_report(images_uint8, labels, **likelihood_options) -> dict
        bounds of -log p(x) on the evaluation split (a VAE's ELBO and IWAE, a diffusion model's variational
        bound), merged into the eval report (report keys ending in _nats are nats per image; _bits_per_dim bits
        per dimension; "likelihood_note" is the report's paragraph about them)
    sampling_option_names: tuple of generate's keyword options (a diffusion model's sampler, steps, guidance,
        eta), accepted by sample, eval and edit
    edit(images, labels, strength, mask, generator, **sampling_options) -> (N,C,H,W)
        images in model range re-generated part-way (SDEdit) or inside a mask (inpainting): `genlab edit`

A run of an image model keeps `images.json` (class names, shape, pixel range) beside the weights.
"""

import dataclasses
import inspect
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.checkpoint import RunDir, atomic_write_bytes, atomic_write_json
from genlab.config import from_dict
from genlab.data.captions import CAPTION_GROUNDING, GroundedPhrase
from genlab.data.images import (
    ImageBatches,
    ImageDataConfig,
    ImageDataset,
    fit_images,
    from_model_range,
    load_images,
    read_image,
    save_image_grid,
    to_model_range,
)
from genlab.distributed import DistInfo
from genlab.errors import CheckpointError, ConfigError, DataError
from genlab.models.gan.adversarial import pooled_frechet_distance
from genlab.pipelines.images import generate_uint8, sampling_options
from genlab.pipelines.text_to_image import TextToImagePipeline, describe_conditioning
from genlab.registry import get_model_class
from genlab.tasks.neural import NeuralTask, Prepared
from genlab.text_encoders import text_encoder_spec
from genlab.trainer import TrainConfig

ARTIFACTS = "images.json"
TUNE_SAMPLES = 500  # samples a diffusion trial of `genlab tune` is scored by
EVAL_BATCH = 256


@dataclass
class ImageSplit:
    """A held-out split for `model.evaluate`: uint8 images (N,C,H,W) and int64 labels (N,) or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    captions: list[str] | None = None  # one per image (text models), its first caption
    batch_size: int = EVAL_BATCH

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, pixel_range: str, device: torch.device | str, max_batches: int | None = None):
        """{"x": floats in `pixel_range` on `device`, "y": labels or None, "text": captions or None}, in order."""
        for i, start in enumerate(range(0, len(self.images), self.batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            end = start + self.batch_size
            x = to_model_range(self.images[start:end], pixel_range).to(device)
            y = None if self.labels is None else self.labels[start:end].to(device)
            yield {"x": x, "y": y, "text": None if self.captions is None else self.captions[start:end]}


class CaptionedBatches:
    """Training batches with one caption per image ("text"): for an image with several captions, the one drawn
    from (seed, step), so that resume is exact. With `grounding` (caption -> its GroundedPhrases), also each
    caption's grounded phrases ("grounding")."""

    def __init__(self, batches: ImageBatches, captions: list[list[str]],
                 grounding: Callable[[str], list[GroundedPhrase]] | None = None):
        self.batches, self.captions, self.grounding = batches, captions, grounding

    def __call__(self, step: int) -> dict:
        batch = self.batches(step)
        idx = self.batches.indices(step).tolist()
        rng = np.random.default_rng([self.batches.seed, step])
        picks = rng.integers(0, 1 << 30, len(idx))
        batch["text"] = [self.captions[i][int(k) % len(self.captions[i])] for i, k in zip(idx, picks, strict=True)]
        if self.grounding is not None:
            batch["grounding"] = [self.grounding(text) for text in batch["text"]]
        return batch


def caption_grounding(ds: ImageDataset, model_cfg: Any) -> Callable[[str], list[GroundedPhrase]] | None:
    """What grounds the data set's captions when the model trains with a grounding loss (None otherwise);
    ConfigError when it asks for one and the captions have none."""
    if not getattr(model_cfg, "grounded", False):
        return None
    kind = ds.caption_info.get("kind")
    if kind not in CAPTION_GROUNDING:
        raise ConfigError(f"--grounding-weight and --grounding-pixel-weight need captions whose phrases are placed "
                          f"in their images, and {ds.source}'s are not; the built-in scenes sets have them "
                          "(mnist5k-scenes, fashion-mnist-scenes)")
    return CAPTION_GROUNDING[kind]


def resolve_label(label: str | int, class_names: list[str] | None, conditional: bool) -> int:
    """A class index from a class name (case-insensitive) or an index; ConfigError for anything else."""
    if not conditional:
        raise ConfigError("this model was trained without labels, so it cannot take --label; "
                          "train a conditional model (e.g. `genlab train vae --conditional`)")
    names = class_names or []
    text = str(label).strip()
    for i, name in enumerate(names):
        if text.lower() == name.lower():
            return i
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    shown = ", ".join(repr(n) for n in names)
    raise ConfigError(f"label {text!r} is not one the model was trained on; use a class name ({shown}) "
                      f"or an index 0-{len(names) - 1}")


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: n labels covering every class equally (to within one)."""
    return torch.arange(n) % num_classes


def _stream(log: Any) -> Any:
    """Where progress lines go: `log=True` is stderr as it is at call time; a stream is itself."""
    return sys.stderr if log is True else log


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points (len(t), Z) on the great circle from a to b (Z,), with norms that move from |a| to |b|;
    the straight line where a and b are (anti)parallel."""
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega) < 1e-6:
        return a[None] + t[:, None] * (b - a)[None]
    wa, wb = torch.sin((1 - t) * omega) / torch.sin(omega), torch.sin(t * omega) / torch.sin(omega)
    return wa[:, None] * a[None] + wb[:, None] * b[None]


def _has_latents(model: Any) -> bool:
    return callable(getattr(model, "noise", None)) and callable(getattr(model, "decode", None))


def _has_encoder(model: Any) -> bool:
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))


def _need_encoder(model: Any, command: str) -> None:
    if not _has_encoder(model):
        name = getattr(model, "registry_name", type(model).__name__)
        raise ConfigError(f"`genlab {command}` needs a model with an encoder (a VAE); {name!r} only generates")


def _write_npz(path: Path, images: torch.Tensor, labels: torch.Tensor | None, class_names: list[str] | None,
               prompts: list[str] | None = None) -> None:
    import io

    arrays: dict[str, np.ndarray] = {"images": images.numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    if class_names:
        arrays["class_names"] = np.array(class_names)
    if prompts is not None:
        arrays["prompts"] = np.array(prompts, dtype=str)  # a unicode array: loads with allow_pickle=False
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


class ImageGenTask(NeuralTask):
    DataConfig = ImageDataConfig

    def prepare(self, data_cfg: ImageDataConfig, model_cls: type, train_cfg: TrainConfig, dist: DistInfo,
                run: RunDir | None = None, model_cfg: Any = None) -> Prepared:
        ds = load_images(data_cfg)
        pixel_range = model_cls.pixel_range
        shapes = model_cls.shapes_from_data(ds.channels, ds.image_size, ds.num_classes)
        artifacts = {"source": ds.source, "channels": ds.channels, "image_size": ds.image_size,
                     "num_classes": ds.num_classes, "class_names": ds.class_names, "pixel_range": pixel_range}
        encoder = getattr(model_cfg, "text_encoder", "")
        val_captions = None
        if encoder:  # checked before the batches, whose size errors would hide a missing-captions error
            if not ds.captions:
                raise DataError(f"--text-encoder needs captioned images and {ds.source} has no captions; use an "
                                "image folder with a metadata.jsonl (file_name, text), an .npz with a `captions` "
                                "array, or a built-in captioned set (`genlab data list`)")
            train_captions = [c for caps in ds.captions["train"] for c in caps]
            shapes["text_spec"] = text_encoder_spec(encoder, train_captions, max_tokens=model_cfg.max_prompt_tokens,
                                                    width=model_cfg.text_width, layers=model_cfg.text_layers)
            artifacts["text_encoder"] = encoder
            artifacts["example_prompts"] = [caps[0] for caps in ds.captions["test"][:8]]
            val_captions = [caps[0] for caps in ds.captions["valid"]]
        batches: Any = ImageBatches(ds.splits["train"], ds.labels["train"], train_cfg.batch_size, train_cfg.seed,
                                    pixel_range, dist.rank, dist.world_size, dist.device)
        if encoder:
            batches = CaptionedBatches(batches, ds.captions["train"], caption_grounding(ds, model_cfg))
        val = ImageSplit(ds.splits["valid"], ds.labels["valid"], val_captions) if len(ds.splits["valid"]) else None
        return Prepared(
            shapes=shapes,
            train_batch=batches,
            val_data=val,
            info=ds.describe() | {"pixel_range": pixel_range},
            artifacts=artifacts,
            save_artifacts=lambda r: atomic_write_json(r.file(ARTIFACTS), artifacts),
        )

    def load_artifacts(self, run: RunDir, config: dict[str, Any]) -> dict[str, Any]:
        path = run.file(ARTIFACTS)
        if not path.is_file():
            raise CheckpointError(f"{run.path} has no {ARTIFACTS}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is corrupt: {e}") from None

    def dataset(self, config: dict, data: str | None = None, artifacts: dict | None = None) -> ImageDataset:
        """The run's data set (or `data` instead), checked against the shape the model was trained on."""
        data_cfg = from_dict(ImageDataConfig, config["data"], "saved data config")
        if data is not None:
            data_cfg.data = data
            if artifacts is not None:  # the model's shape, whatever the other source's native shape
                data_cfg.image_size, data_cfg.channels = artifacts["image_size"], artifacts["channels"]
        return load_images(data_cfg)

    def onnx_graph(self, model: Any, artifacts: dict[str, Any]) -> Any:
        """What `genlab export --format onnx` writes: the network that makes images (genlab.onnx_export)."""
        from genlab.onnx_export import image_generator

        return image_generator(model, artifacts)

    # --- what `genlab tune` minimises ---

    def tune_objective_name(self, model_name: str) -> str:
        if getattr(get_model_class(model_name), "tune_by_sample_fd", False):
            return f"FD of {TUNE_SAMPLES} samples against validation images (8 × 8 pooled pixels)"
        return super().tune_objective_name(model_name)

    def tune_objective(self, run: RunDir, summary: dict[str, Any]) -> float:
        """The trainer's best validation loss (a VAE's negative ELBO, a GAN's pooled FD), or for models whose
        validation loss does not measure samples (diffusion) the pooled FD of samples from the best weights."""
        config = run.read_config()
        cls = get_model_class(config["model"])
        if not getattr(cls, "tune_by_sample_fd", False):
            return super().tune_objective(run, summary)
        model = cls.from_run(run, config, "auto")
        artifacts = self.load_artifacts(run, config)
        ds = self.dataset(config)
        n = min(TUNE_SAMPLES, len(ds.splits["valid"]))
        if n < 2:
            raise DataError("tuning a diffusion model scores samples against the validation split: give it some "
                            "images (--valid-fraction)")
        labels = ds.labels["valid"][:n] if model.conditional else None
        prompts = [caps[0] for caps in ds.captions["valid"][:n]] if artifacts.get("text_encoder") else None
        fake = generate_uint8(model, n, labels, seed=0, prompts=prompts)
        return pooled_frechet_distance(ds.splits["valid"][:n].float() / 255, fake.float() / 255)

    # --- sampling ---

    def sample(self, model: Any, artifacts: dict, config: dict, *, prompt: str = "", label: str | int | None = None,
               num_samples: int = 64, out_path: str | Path | None = None, npz: str | Path | None = None,
               seed: int | None = None, nrow: int | None = None, run_dir: str | Path | None = None,
               log: Any = True, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
               eta: float | None = None, spacing: str | None = None, **unused: Any) -> dict[str, Any]:
        """A grid PNG of `num_samples` samples (default RUN/samples.png), and the raw uint8 samples in an .npz
        when `npz` is given. A conditional model samples `label` (class name or index) or every class in turn
        (one class per column). A text-conditioned model samples `prompt`, or without one the run's example
        prompts (test captions), one row each. `sampler` ... `spacing`: a diffusion model's sampling."""
        options = sampling_options(model, {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta,
                                           "spacing": spacing})
        if getattr(model, "text_conditioned", False):
            if label is not None:
                raise ConfigError("this model is conditioned on text: give --prompt, not --label")
            prompts = [prompt] if prompt else list(artifacts.get("example_prompts") or [""])
            per_prompt = max(1, num_samples // len(prompts))
            square = nrow or (math.ceil(math.sqrt(per_prompt)) if len(prompts) == 1 else None)  # one prompt: a square
            return self.generate(model, artifacts, config, prompts, num_samples=per_prompt, out_path=out_path,
                                 npz=npz, seed=seed, run_dir=run_dir, log=log, nrow=square, **options)
        if prompt:
            raise ConfigError(f"--prompt applies to language models and text-to-image models; this image model was "
                              f"trained {describe_conditioning(model)}")
        labels = None
        if label is not None:
            index = resolve_label(label, artifacts.get("class_names"), model.conditional)
            labels = torch.full((num_samples,), index, dtype=torch.long)
        elif model.conditional:
            labels = balanced_labels(num_samples, artifacts["num_classes"])
            nrow = nrow or artifacts["num_classes"]
        if out_path is None:
            if run_dir is None:
                raise ConfigError("give an output path for the sample grid (--out)")
            out_path = Path(run_dir) / "samples.png"
        images = generate_uint8(model, num_samples, labels, seed, progress=bool(log), **options)
        save_image_grid(images, Path(out_path), nrow)
        written = {"grid": str(out_path), "num_samples": num_samples}
        if npz is not None:
            _write_npz(Path(npz), images, labels, artifacts.get("class_names"))
            written["npz"] = str(npz)
        if log:
            what = f" of {artifacts['class_names'][int(labels[0])]!r}" if label is not None else ""
            also = f" and {npz}" if npz else ""
            print(f"wrote {num_samples} samples{what} to {out_path}{also}", file=_stream(log))
        return written

    def generate(self, model: Any, artifacts: dict, config: dict, prompts: list[str], *, num_samples: int = 8,
                 out_path: str | Path | None = None, npz: str | Path | None = None, seed: int | None = None,
                 run_dir: str | Path | None = None, log: Any = True, nrow: int | None = None,
                 **options: Any) -> dict[str, Any]:
        """`num_samples` images per prompt from a text-conditioned model: a grid PNG with one row per prompt
        (or `nrow` images a row; default RUN/generated.png) and, with `npz`, the raw uint8 images and their
        prompts."""
        if out_path is None:
            if run_dir is None:
                raise ConfigError("give an output path for the image grid (--out)")
            out_path = Path(run_dir) / "generated.png"
        result = TextToImagePipeline(model)(prompts, num_samples, seed=seed, progress=bool(log), **options)
        save_image_grid(result.images, Path(out_path), nrow=nrow or num_samples)
        written: dict[str, Any] = {"grid": str(out_path), "num_samples": len(result.images), "prompts": prompts}
        if npz is not None:
            _write_npz(Path(npz), result.images, None, None, result.prompts)
            written["npz"] = str(npz)
        if log:
            also = f" and {npz}" if npz else ""
            layout = "one row each" if nrow is None else f"{nrow} a row"
            print(f"wrote {len(result.images)} images of {len(prompts)} prompt(s), {layout}, to {out_path}{also}",
                  file=_stream(log))
        return written | {"images": result.images}

    # --- editing (diffusion models) ---

    def edit(self, model: Any, artifacts: dict, config: dict, run_dir: str | Path, *, image: str | Path,
             mask: str | Path | None = None, strength: float | None = None, label: str | int | None = None,
             num_samples: int = 8, seed: int = 0, out_path: str | Path | None = None, sampler: str | None = None,
             steps: int | None = None, guidance: float | None = None, eta: float | None = None,
             spacing: str | None = None, log: Any = True) -> dict[str, Any]:
        """A row PNG (default RUN/edit.png): the input image, the masked input (with `mask`), then `num_samples`
        edits made with seeds `seed`, `seed`+1, ... SDEdit without a mask: the image noised to `strength`
        (default 0.6) and denoised with `label` (a conditional model without `label` denoises unconditionally).
        With a mask (white = repaint, black = keep; the input's size): inpainting, `strength` default 1."""
        if not callable(getattr(model, "edit", None)):
            name = getattr(model, "registry_name", type(model).__name__)
            raise ConfigError(f"`genlab edit` needs a diffusion model; {name!r} cannot edit images")
        options = sampling_options(model, {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta,
                                           "spacing": spacing})
        strength = strength if strength is not None else (1.0 if mask is not None else 0.6)
        if not 0 < strength <= 1:
            raise ConfigError(f"--strength must be in (0, 1], not {strength}")
        if num_samples < 1:
            raise ConfigError("--num-samples must be at least 1")
        index = resolve_label(label, artifacts.get("class_names"), model.conditional) if label is not None else None
        raw = read_image(image)  # (1, C, H, W) uint8
        size, channels = artifacts["image_size"], artifacts["channels"]
        x = fit_images(raw, channels, size)
        keep_mask = None
        if mask is not None:
            m = read_image(mask)
            if m.shape[2:] != raw.shape[2:]:
                raise DataError(f"the mask {mask} is {m.shape[3]}×{m.shape[2]} pixels but the image {image} is "
                                f"{raw.shape[3]}×{raw.shape[2]}; draw the mask at the image's size")
            gray = fit_images(m, 1, size).float() / 255  # (1, 1, H, W)
            keep_mask = (gray > 0.5).float()  # 1 = repaint
        xs = to_model_range(x, model.pixel_range).repeat(num_samples, 1, 1, 1)
        labels = None if index is None else torch.full((num_samples,), index, dtype=torch.long)
        edited = model.edit(xs, labels, strength, keep_mask, torch.Generator().manual_seed(seed), **options)
        edited = from_model_range(edited.float().cpu(), model.pixel_range)
        row = [x]
        if keep_mask is not None:
            row.append((x.float() * (1 - keep_mask)).to(torch.uint8))  # the repainted region shown black
        out_path = Path(out_path) if out_path else Path(run_dir) / "edit.png"
        grid = torch.cat(row + [edited])
        save_image_grid(grid, out_path, nrow=len(grid))
        what = "inpainted" if keep_mask is not None else f"SDEdit at strength {strength:g}"
        cond = f" as {artifacts['class_names'][index]!r}" if index is not None else ""
        if log:
            print(f"wrote {image} and {num_samples} edits ({what}{cond}) to {out_path}", file=_stream(log))
        return {"grid": str(out_path), "num_samples": num_samples, "strength": strength,
                "inpainting": keep_mask is not None}

    # --- reconstructions and latent walks (models with an encoder) ---

    def reconstruct(self, model: Any, artifacts: dict, config: dict, run_dir: str | Path, *, num_images: int = 32,
                    split: str = "test", out_path: str | Path | None = None, seed: int = 0,
                    log: Any = True) -> dict[str, Any]:
        """Rows of `split` images alternating with rows of their reconstructions decode(encode(x)), 8 a row."""
        _need_encoder(model, "reconstruct")
        images, labels = self._pick(config, split, num_images, seed, model.conditional)
        x = to_model_range(images, model.pixel_range)
        recon = from_model_range(model.decode(model.encode(x, labels), labels).float().cpu(), model.pixel_range)
        nrow = 8
        rows = []
        for start in range(0, len(images), nrow):
            rows += [images[start:start + nrow], recon[start:start + nrow]]
        out_path = Path(out_path) if out_path else Path(run_dir) / "reconstructions.png"
        save_image_grid(torch.cat(rows), out_path, nrow=nrow)
        mse = float(((images.float() - recon.float()) / 255).pow(2).mean())
        if log:
            print(f"wrote {len(images)} {split} images (odd rows) and their reconstructions (even rows) to "
                  f"{out_path}; pixel MSE {mse:.4f}", file=_stream(log))
        return {"grid": str(out_path), "num_images": len(images), "pixel_mse": mse}

    def interpolate(self, model: Any, artifacts: dict, config: dict, run_dir: str | Path, *, pairs: int = 4,
                    steps: int = 10, split: str = "test", out_path: str | Path | None = None, seed: int = 0,
                    log: Any = True) -> dict[str, Any]:
        """One latent walk of `steps` points (ends included) per row.

        A model with an encoder (a VAE) walks the straight line between the latents of two `split` images,
        shown at both ends of the row; a conditional model's label moves from one one-hot to the other.
        A model that only decodes (a GAN) walks between two prior draws made with `seed`, along the great
        circle (slerp, White 2016): the middle of a straight line between two Gaussian draws has an atypically
        small norm, off the shell the generator was trained on. A conditional GAN holds each row's class."""
        if not _has_latents(model):
            name = getattr(model, "registry_name", type(model).__name__)
            raise ConfigError(f"`genlab interpolate` needs a model with a latent space to walk; {name!r} has none")
        if pairs < 1 or steps < 2:
            raise ConfigError("--pairs must be at least 1 and --steps at least 2")
        t = torch.linspace(0, 1, steps)
        if _has_encoder(model):
            grid, what = self._walk_between_images(model, artifacts, config, pairs, t, split, seed)
        else:
            grid, what = self._walk_between_noise(model, artifacts, pairs, t, seed)
        out_path = Path(out_path) if out_path else Path(run_dir) / "interpolations.png"
        save_image_grid(grid, out_path, nrow=len(grid) // pairs)
        if log:
            print(f"wrote {pairs} latent walks of {steps} steps between {what} to {out_path}", file=_stream(log))
        return {"grid": str(out_path), "pairs": pairs, "steps": steps}

    def _walk_between_images(self, model: Any, artifacts: dict, config: dict, pairs: int, t: torch.Tensor,
                             split: str, seed: int) -> tuple[torch.Tensor, str]:
        images, labels = self._pick(config, split, 2 * pairs, seed, model.conditional)
        x = to_model_range(images, model.pixel_range)
        a, b = slice(0, pairs), slice(pairs, 2 * pairs)
        ya = yb = None
        if labels is not None:
            eye = torch.eye(artifacts["num_classes"])
            ya, yb = eye[labels[a]], eye[labels[b]]
        za, zb = model.encode(x[a], ya).cpu(), model.encode(x[b], yb).cpu()
        rows = []
        for i in range(pairs):
            z = za[i][None] + t[:, None] * (zb[i] - za[i])[None]  # (steps, Z)
            y = None if ya is None else ya[i][None] + t[:, None] * (yb[i] - ya[i])[None]
            walk = from_model_range(model.decode(z, y).float().cpu(), model.pixel_range)
            rows.append(torch.cat([images[i][None], walk, images[pairs + i][None]]))
        return torch.cat(rows), f"{split} images (first and last column: the images themselves)"

    def _walk_between_noise(self, model: Any, artifacts: dict, pairs: int, t: torch.Tensor,
                            seed: int) -> tuple[torch.Tensor, str]:
        ends = model.noise(2 * pairs, torch.device("cpu"), torch.Generator().manual_seed(seed))
        z = torch.cat([slerp(ends[i], ends[pairs + i], t) for i in range(pairs)])
        labels = (torch.arange(pairs) % artifacts["num_classes"]).repeat_interleave(len(t)) \
            if model.conditional else None
        grid = from_model_range(model.decode(z, labels).float().cpu(), model.pixel_range)
        return grid, f"noise vectors (seed {seed}){', one class per row' if labels is not None else ''}"

    def _pick(self, config: dict, split: str, n: int, seed: int,
              conditional: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`n` images of `split` drawn with `seed` (uint8, CPU), and their labels for a conditional model."""
        if split not in ("train", "valid", "test"):
            raise ConfigError(f"unknown split {split!r}; use train, valid or test")
        if n < 1:
            raise ConfigError("ask for at least one image")
        ds = self.dataset(config)
        images = ds.splits[split]
        if len(images) < n:
            raise DataError(f"the {split} split holds {len(images)} images, fewer than the {n} asked for")
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        labels = ds.labels[split]
        return images[idx], (labels[idx] if conditional and labels is not None else None)

    # --- evaluation ---

    def evaluate(self, model: Any, artifacts: dict, config: dict, data: str | None = None, split: str = "test", *,
                 num_samples: int = 1000, iwae_samples: int = 64, seed: int = 0, likelihood_images: int | None = None,
                 likelihood_timesteps: int | None = None, sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, eta: float | None = None, spacing: str | None = None,
                 images_per_prompt: int | None = None) -> dict[str, Any]:
        """Likelihood bounds (when the model has them) and sample quality against `split`: Fréchet distance,
        KID, precision/recall in a feature net's space, on `num_samples` generated images; for conditional
        models, how often the feature net classifies a sample as the label it was drawn for.
        `likelihood_images`, `likelihood_timesteps`: a diffusion model's variational bound (its subset of the
        split and its number of timestep strata); `sampler` ... `eta`: how a diffusion model samples.

        A text-conditioned model is given the split's captions instead of labels (the first caption of image
        i, i = 0, 1, ... cycled): FD & co. against the split, the label accuracy of those images, and the CLIP
        score and R-precision of a small CLIP trained on the data set's training captions
        (genlab.eval.text_image). On a built-in captioned set, also the held-out prompts (new phrasings, new
        synonyms, new scene combinations: `images_per_prompt` images each), read by classifiers."""
        from genlab.eval.images import feature_net, image_metrics

        if split not in ("valid", "test"):
            raise ConfigError(f"image models are evaluated on a held-out split, valid or test, not {split!r}")
        if num_samples < 1 or iwae_samples < 1:
            raise ConfigError("--num-samples and --iwae-samples must be at least 1")
        options = sampling_options(model, {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta,
                                           "spacing": spacing})
        likelihood_options = {k: v for k, v in {"likelihood_images": likelihood_images,
                                                "likelihood_timesteps": likelihood_timesteps}.items() if v is not None}
        ds = self.dataset(config, data, artifacts)
        images, labels = ds.splits[split], ds.labels[split]
        if len(images) == 0:
            raise DataError(f"the {split} split of {ds.source} is empty; choose another --split")
        report: dict[str, Any] = {"data": ds.source, "split": split, "n_images": len(images),
                                  "image_shape": [ds.channels, ds.image_size, ds.image_size]}
        likelihood = getattr(model, "likelihood_report", None)
        if likelihood_options and not (callable(likelihood)
                                       and "likelihood_images" in inspect.signature(likelihood).parameters):
            raise ConfigError("--likelihood-images and --likelihood-timesteps apply to diffusion models")
        text = getattr(model, "text_conditioned", False)
        if images_per_prompt is not None and (not text or images_per_prompt < 1):
            raise ConfigError("--images-per-prompt applies to text-to-image runs and must be at least 1")
        captions = None
        if text:
            if not ds.captions:
                raise DataError(f"a text-to-image run is evaluated on captioned images; {ds.source} has no captions")
            captions = [caps[0] for caps in ds.captions[split]]
        if callable(likelihood):
            given = {"prompts": captions} if text else {}
            report |= likelihood(images, labels, num_importance_samples=iwae_samples, **likelihood_options, **given)
        if not ds.num_classes:
            report["sample_quality"] = "skipped: the data set has no class labels to train the feature net on"
            return report
        gen_labels = prompts = None
        if text:
            order = torch.arange(num_samples) % len(images)
            prompts = [captions[i] for i in order.tolist()]  # type: ignore[index]
            gen_labels = labels[order] if labels is not None else None
        elif model.conditional:
            gen_labels = balanced_labels(num_samples, artifacts["num_classes"])
        generated = generate_uint8(model, num_samples, None if text else gen_labels, seed, progress=True,
                                   prompts=prompts, **options)
        if options or getattr(model, "sampling_option_names", ()):
            report["sampling"] = dataclasses.asdict(model.sampling_options(**options))
        net = feature_net(ds)
        report |= image_metrics(generated, ds, labels=gen_labels, split=split, net=net)
        if gen_labels is not None:
            predicted = torch.as_tensor(np.asarray(net.classify(generated)))
            names = artifacts.get("class_names") or [str(i) for i in range(artifacts["num_classes"])]
            report["per_label_accuracy"] = {
                names[k]: float((predicted[gen_labels == k] == k).float().mean())
                for k in range(artifacts["num_classes"]) if (gen_labels == k).any()
            }
        if text:
            report |= self._text_scores(model, ds, split, generated, prompts, seed, images_per_prompt or 4, options)
        return report

    def _text_scores(self, model: Any, ds: ImageDataset, split: str, generated: torch.Tensor, prompts: list[str],
                     seed: int, images_per_prompt: int, options: dict[str, Any]) -> dict[str, Any]:
        """CLIP score and R-precision of images generated from the split's captions; the held-out prompts."""
        from genlab.eval.text_image import clip_scorer, prompt_report

        scorer = clip_scorer(ds)
        pool = [c for caps in ds.captions[split] for c in caps]
        out: dict[str, Any] = {"captions": {
            "prompts": f"the first caption of each {split} image",
            "clip_score": scorer.clip_score(generated, prompts),
            "r_precision": scorer.r_precision(generated, prompts, pool),
            "scorer": scorer.describe(),
        }}
        if ds.eval_prompts:
            def generate(texts: list[str], s: int) -> torch.Tensor:
                return generate_uint8(model, len(texts), prompts=texts, seed=s, **options)

            held_out = prompt_report(generate, ds, images_per_prompt=images_per_prompt, seed=seed, scorer=scorer)
            out["prompt_samples"] = held_out.pop("samples")  # drawn by write_report, not kept in eval.json
            out["held_out_prompts"] = held_out
        return out

    def write_report(self, model: Any, artifacts: dict, config: dict, run_dir: str | Path,
                     report: dict[str, Any], prompt_samples: dict | None = None) -> Path:
        """RUN/eval.md: the metrics, a sample grid, reconstructions (models with an encoder), grids of the
        held-out prompts (text models), loss curves."""
        from genlab.eval.report import write_report

        run_dir = Path(run_dir)
        grid = self.sample(model, artifacts, config, num_samples=64, seed=0,
                           out_path=run_dir / "eval_samples.png", log=None)
        title = "Samples of the example prompts (one row each)" if getattr(model, "text_conditioned", False) \
            else "Samples"
        figures = [(title, Path(grid["grid"]))]
        for kind, sample in (prompt_samples or {}).items():
            path = run_dir / f"eval_prompts_{kind}.png"
            save_image_grid(sample["images"].flatten(0, 1), path, nrow=sample["images"].shape[1])
            shown = "; ".join(f"{i + 1}. {p}" for i, p in enumerate(sample["prompts"][:12]))
            figures.append((f"Held-out prompts, {kind} (one row per prompt: {shown}"
                            f"{' ...' if len(sample['prompts']) > 12 else ''})", path))
        if _has_encoder(model):
            rec = self.reconstruct(model, artifacts, config, run_dir, num_images=32, split=report.get("split", "test"),
                                   out_path=run_dir / "eval_reconstructions.png", log=None)
            figures.append(("Reconstructions (odd rows: inputs, even rows: reconstructions)", Path(rec["grid"])))
        notes = []
        if "likelihood_note" in report:
            notes.append(report["likelihood_note"])
        elif "likelihood_model" in report:
            notes.append(f"Likelihood: {report['likelihood_model']}. Bounds of -log p(x): `neg_elbo` (the ELBO) "
                         f"and `iwae_nll` (IWAE, k = {report.get('iwae_k')}), in nats per image and bits per "
                         "dimension; lower is better, IWAE is the tighter. For reference, Burda et al. (2016) "
                         "report about 85-87 nats for one-stochastic-layer models on binarised MNIST.")
        if "fd" in report:
            notes.append(f"Sample quality on {report.get('n_generated')} samples against {report.get('n_reference')} "
                         f"{report.get('split')} images, in the feature space of `{report.get('feature_net')}` "
                         f"(test accuracy {report.get('feature_net_test_accuracy', math.nan):.3f}).")
        return write_report(run_dir, report, figures, notes)


IMAGE_GEN = ImageGenTask()
