"""The Python API behind the CLI and the server: train, load, sample, evaluate. Each is a few lines over the
registry, the model family's task and the shared trainer.

The functions after `describe` work on a model already loaded (`load`) and return data instead of writing
files: what a server or a notebook calls many times on one model.
"""

import dataclasses
import inspect
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from genlab.checkpoint import RunDir, atomic_write_json
from genlab.config import from_dict, read_config_file, split_overrides
from genlab.errors import CheckpointError, ConfigError, RunExistsError
from genlab.eval.sentences import sentence_score
from genlab.registry import get_model_class
from genlab.tasks import task_for

# Options that may change when a run is resumed; anything else would make it a different run.
RESUMABLE_OPTIONS = {"max_steps", "max_seconds", "eval_interval", "eval_seconds", "eval_batches", "log_interval",
                     "device", "precision", "tensorboard"}


SAVED_SECTION = {"model": "model_config"}  # config.json key of each config section, where it differs


def resolve_configs(model: str, overrides: dict[str, Any], config_file: Path | None = None) -> dict[str, Any]:
    """Typed configs (model, data, and train for trained models) from defaults < config file < overrides."""
    cls = get_model_class(model)
    sections = task_for(cls).config_sections(cls)
    derived = {f.name for f in dataclasses.fields(cls.Config) if f.metadata.get("derived")}
    settable = {f.name for name, c in sections.items() if name != "model" for f in dataclasses.fields(c)}
    bad = (derived - settable) & set(overrides)
    if bad:
        raise ConfigError(f"{', '.join(sorted(bad))} is decided by the data and cannot be set")
    file_values = read_config_file(config_file) if config_file else {}
    by_section = split_overrides(overrides, sections)
    family_defaults = {"train": getattr(cls, "train_defaults", {})}  # e.g. a GAN's lr and schedule
    return {name: from_dict(cls_, {**family_defaults.get(name, {}), **file_values.get(name, {}), **by_section[name]},
                            f"{name} options")
            for name, cls_ in sections.items()}


def saved_configs(cls: type, run: RunDir, overrides: dict[str, Any]) -> dict[str, Any]:
    """The configs a run was trained with, for --resume; only RESUMABLE_OPTIONS may be overridden."""
    saved = run.read_config()
    if saved["model"] != cls.registry_name:
        raise CheckpointError(f"{run.path} holds a {saved['model']!r} run, not {cls.registry_name!r}")
    fixed = set(overrides) - RESUMABLE_OPTIONS
    if fixed:
        raise ConfigError(f"cannot change {', '.join(sorted(fixed))} when resuming; "
                          f"only {', '.join(sorted(RESUMABLE_OPTIONS))} may change")
    sections = task_for(cls).config_sections(cls)
    try:
        values = {name: saved[SAVED_SECTION.get(name, name)] for name in sections}
    except KeyError as e:
        raise CheckpointError(f"{run.path}/config.json lacks its {e} section; the run cannot be resumed") from None
    values["train"] = {**values.get("train", {}), **overrides}
    return {name: from_dict(cls_, values[name], f"saved {name} config") for name, cls_ in sections.items()}


def train(model: str, out: str | Path, overrides: dict[str, Any] | None = None, config_file: Path | None = None,
          overwrite: bool = False, resume: bool = False,
          on_validation: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
    """Train `model` into run directory `out`; returns a summary (steps, best validation loss, seconds).
    `on_validation(step, loss, progress)`: called after each periodic validation (neural models) with the fraction
    of the training budget used, e.g. a tuner's pruner."""
    overrides = dict(overrides or {})
    cls = get_model_class(model)
    run = RunDir(out)
    if resume:
        cfg = saved_configs(cls, run, overrides)
    else:
        if run.exists() and not overwrite:
            raise RunExistsError(f"run directory {run.path} already exists; pass --overwrite to replace it "
                                 "or --resume to continue it")
        cfg = resolve_configs(model, overrides, config_file)
    return task_for(cls).train(model, cls, cfg, run, overwrite, resume, on_validation)


def load(path: str | Path, device: str = "auto") -> Any:
    """A ready model from a run directory (or a model file such as an ARPA language model)."""
    path = Path(path)
    if path.is_file():
        return load_file(path)
    run = RunDir(path)
    config = run.read_config()
    try:
        cls = get_model_class(config["model"])
    except ConfigError:
        raise CheckpointError(f"{path} holds a model genlab does not know: {config['model']!r}") from None
    model = cls.from_run(run, config, device)  # a name: models that run on numpy never import torch
    model.artifacts = task_for(cls).load_artifacts(run, config)  # e.g. the tokenizer
    model.run_config = config
    return model


# A model file genlab reads without a run directory: name ending -> registered model that reads it.
MODEL_FILES = {".arpa": "ngram", ".arpa.gz": "ngram"}


def load_file(path: Path) -> Any:
    """A model from a single file (an ARPA language model from KenLM, SRILM or genlab)."""
    for ending, name in MODEL_FILES.items():
        if path.name.endswith(ending):
            cls = get_model_class(name)
            model = cls.from_file(path)
            model.artifacts = task_for(cls).load_artifacts(None, {})
            return model
    raise CheckpointError(f"{path} is a file; genlab loads run directories and {', '.join(MODEL_FILES)} files")


def export(path: str | Path, fmt: str = "arpa", out: str | Path | None = None) -> Path:
    """Write the model at `path` in format `fmt` (n-gram models: ARPA); returns the file written."""
    model = load(path)
    target = Path(out) if out is not None else Path(path) / f"model.{fmt}"
    task_for(model).export(model, target, fmt)
    return target


def sample(path: str | Path, **options: Any) -> Any:
    """Sample from a trained model; options are the family's (prompt, temperature, label, ...)."""
    model = load(path)
    options.setdefault("run_dir", Path(path))  # where image tasks put their grid; text tasks ignore it
    return task_for(model).sample(model, model.artifacts, model.run_config, **options)


def generate(path: str | Path, prompt: str | list[str], num_images: int = 8, *, guidance: float | None = None,
             steps: int | None = None, sampler: str | None = None, seed: int | None = None,
             out: str | Path | None = None, npz: str | Path | None = None, log: Any = True) -> dict[str, Any]:
    """Text to image: `num_images` images per prompt from a text-conditioned run (diffusion, VAE or GAN trained
    with --text-encoder), as a grid PNG with one row per prompt (default RUN/generated.png) and optionally an .npz;
    returns {"grid", "images" (uint8 N×C×H×W), ...}. `guidance`, `steps`, `sampler`: a diffusion model's."""
    model = load(path)
    fn = getattr(task_for(model), "generate", None)
    if fn is None:
        raise ConfigError(f"`genlab generate` turns prompts into images; {model.run_config['model']!r} runs are "
                          "language models: use `genlab sample RUN --prompt TEXT`")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    return fn(model, model.artifacts, model.run_config, prompts, num_samples=num_images, out_path=out, npz=npz,
              seed=seed, run_dir=Path(path), log=log, guidance=guidance, steps=steps, sampler=sampler)


def evaluate(path: str | Path, data: str | None = None, split: str = "test", write: bool = True,
             **options: Any) -> dict[str, Any]:
    """Held-out metrics of a trained model; also written to RUN/eval.json (and RUN/eval.md when the task
    has a `write_report` hook). `options` are the family's (num_samples, iwae_samples for image models).
    `genlab eval` also writes the run's HTML report (genlab.reports)."""
    model = load(path)
    task = task_for(model)
    _check_options(task.evaluate, options, model.run_config["model"])
    report = task.evaluate(model, model.artifacts, model.run_config, data=data, split=split, **options)
    report = {"model": model.run_config["model"], **report}
    pictures = {"prompt_samples": report.pop("prompt_samples")} if "prompt_samples" in report else {}
    if write and Path(path).is_dir():
        atomic_write_json(Path(path) / "eval.json", report)
        write_report = getattr(task, "write_report", None)
        if write_report is not None:
            write_report(model, model.artifacts, model.run_config, Path(path), report, **pictures)
    return report


def reconstruct(path: str | Path, **options: Any) -> dict[str, Any]:
    """A grid of held-out images and their reconstructions (models with an encoder); default RUN/reconstructions.png."""
    return _image_command(path, "reconstruct", options)


def interpolate(path: str | Path, **options: Any) -> dict[str, Any]:
    """A grid of latent walks (a VAE's between held-out images, a GAN's between noise vectors); default
    RUN/interpolations.png."""
    return _image_command(path, "interpolate", options)


def edit(path: str | Path, **options: Any) -> dict[str, Any]:
    """SDEdit or inpainting of one image by a diffusion model: a row of edits, default RUN/edit.png."""
    return _image_command(path, "edit", options)


def _image_command(path: str | Path, name: str, options: dict[str, Any]) -> dict[str, Any]:
    model = load(path)
    fn = getattr(task_for(model), name, None)
    if fn is None:
        raise ConfigError(f"`genlab {name}` applies to image models; {model.run_config['model']!r} is not one")
    return fn(model, model.artifacts, model.run_config, Path(path), **options)


def _check_options(fn: Any, options: dict[str, Any], model: str) -> None:
    """ConfigError naming the first option that `fn` does not take."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    bad = sorted(set(options) - set(params))
    if bad:
        raise ConfigError(f"--{bad[0].replace('_', '-')} does not apply to {model!r} models")


# --- describing a run, and working on a loaded model ---

EVAL_REPORT = "eval.json"
# What `genlab sample`, `genlab generate` and `genlab eval` wrote; a card shows the newest.
SAMPLE_GRIDS = ("samples.png", "generated.png", "eval_samples.png")


def describe(path: str | Path) -> dict[str, Any]:
    """A run's card without loading its weights: family, what it can do, options, data, the metrics of its last
    `genlab eval` (None if never evaluated), how it is conditioned, and its latest sample grid if any."""
    run = RunDir(path)
    config = run.read_config()
    try:
        cls = get_model_class(config["model"])
    except (ConfigError, KeyError):
        raise CheckpointError(f"{run.path} holds a model genlab does not know: {config.get('model')!r}") from None
    model_cfg = config.get("model_config", {})
    if cls.task_name == "images":
        artifacts = task_for(cls).load_artifacts(run, config)  # class names, example prompts, image shape
        conditioning = ("text" if model_cfg.get("text_encoder") else
                        "class" if model_cfg.get("conditional") else "none")
        abilities = ["images.generate"] + (["images.edit"] if callable(getattr(cls, "edit", None)) else [])
    else:
        artifacts, conditioning, abilities = {}, "text prefix", ["text.generate", "text.score"]
    grids = sorted((run.file(g) for g in SAMPLE_GRIDS if run.file(g).is_file()), key=lambda f: -f.stat().st_mtime)
    data = config.get("data", {})
    return {
        "family": config["model"],
        "task": cls.task_name,
        "about": (cls.__doc__ or "").strip().split("\n")[0],
        "capabilities": abilities,
        "conditioning": conditioning,
        "class_names": artifacts.get("class_names"),
        "example_prompts": artifacts.get("example_prompts"),
        "image_size": artifacts.get("image_size"),
        "options": model_cfg,
        "data": data.get("data") or data.get("source") or config.get("data_info", {}).get("source"),
        "data_info": config.get("data_info", {}),
        "sampling_options": list(getattr(cls, "sampling_option_names", ())),  # a diffusion model's sampler, ...
        "metrics": _json_or_none(run.file(EVAL_REPORT)),
        "sample_grid": grids[0].name if grids else None,
    }


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def text_stream(model: Any, prompt: str = "", *, max_new_tokens: int = 200, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int | None = None) -> Iterator[str]:
    """The continuation of `prompt` by a loaded language model (neural or n-gram), piece by piece; bad options
    raise ConfigError here, before the first piece."""
    stream = getattr(task_for(model), "stream", None)
    if stream is None:
        raise ConfigError(f"{model.run_config['model']!r} runs make images, not text")
    return stream(model, model.artifacts, model.run_config, prompt=prompt, max_new_tokens=max_new_tokens,
                  temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


def score_text(model: Any, texts: list[str]) -> dict[str, Any]:
    """Log-probability and perplexity of each text (one sentence or line each, its end predicted) under a loaded
    language model, and of all of them together."""
    score = getattr(task_for(model), "score", None)
    if score is None:
        raise ConfigError(f"{model.run_config['model']!r} runs make images; only language models score text")
    sentences = score(model, model.artifacts, model.run_config, list(texts))
    total = sum(s["logprob"] for s in sentences)
    tokens = sum(s["tokens"] for s in sentences)
    overall = sentence_score("", total, tokens)
    overall.pop("text")
    return {"sentences": sentences, "total": overall}


def image_png(model: Any, *, prompt: str = "", label: str | int | None = None, num_images: int = 8,
              seed: int | None = None, **sampling: Any) -> bytes:
    """A PNG grid of `num_images` images from a loaded image model: of `prompt` (text-conditioned runs), of
    `label` (class-conditional runs, every class in turn without one), or unconditional. `sampling`: a diffusion
    model's sampler, steps, guidance, eta, spacing (None: the run's)."""
    task = task_for(model)
    if not hasattr(task, "generate"):
        raise ConfigError(f"{model.run_config['model']!r} runs make text, not images")
    with tempfile.TemporaryDirectory(prefix="genlab-") as tmp:
        out = Path(tmp) / "grid.png"
        task.sample(model, model.artifacts, model.run_config, prompt=prompt, label=label, num_samples=num_images,
                    out_path=out, seed=seed, log=False, **{k: v for k, v in sampling.items() if v is not None})
        return out.read_bytes()


def edit_png(model: Any, image: bytes, mask: bytes | None = None, **options: Any) -> bytes:
    """`genlab edit` on image bytes (PNG, JPEG, ...) by a loaded diffusion model: a PNG row of the input, the
    masked input with `mask`, then the edits. `options`: strength, label, num_samples, seed, sampling options."""
    task = task_for(model)
    if not hasattr(task, "edit"):
        raise ConfigError(f"{model.run_config['model']!r} runs make text, not images")
    with tempfile.TemporaryDirectory(prefix="genlab-") as tmp:
        files = {"image": Path(tmp) / "image", "mask": Path(tmp) / "mask"}
        files["image"].write_bytes(image)
        if mask is not None:
            files["mask"].write_bytes(mask)
        out = Path(tmp) / "edit.png"
        task.edit(model, model.artifacts, model.run_config, tmp, image=files["image"],
                  mask=files["mask"] if mask is not None else None, out_path=out, log=False,
                  **{k: v for k, v in options.items() if v is not None})
        return out.read_bytes()
