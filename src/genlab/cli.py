"""The `genlab` command line: a thin Typer layer over genlab.api."""

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from genlab import api
from genlab.config import describe
from genlab.errors import ConfigError, GenlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Generative models from language to images: train, sample, evaluate.")
data_app = typer.Typer(no_args_is_help=True, help="Built-in and user data sets.")
models_app = typer.Typer(no_args_is_help=True, help="Registered models and their options.")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def global_options(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or progress lines on standard "
                                                              "error (results, warnings and errors still print); "
                                                              "before the command: genlab -q train ...")] = False,
) -> None:
    """Options of every command."""
    if quiet:
        from genlab.progress import quiet as quiet_progress

        ctx.with_resource(quiet_progress())  # entered here, left when the command has finished


def parse_options(args: list[str]) -> dict[str, Any]:
    """`--n-layer 4 --dropout=0.1 --tie-weights` → {"n_layer": "4", "dropout": "0.1", "tie_weights": "true"}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--quiet", "-q"):
            raise ConfigError(f"{arg} is an option of genlab itself: put it first (genlab {arg} COMMAND ...)")
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}; options look like --name value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


@app.command(context_settings=EXTRA)
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name (see `genlab models list`)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory [default: runs/MODEL]")] = None,
    config: Annotated[Path | None, typer.Option(help="JSON/YAML file with model/data/train sections")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
) -> None:
    """Train MODEL. Any other `--option value` sets a model, data or training option: `--data names`,
    `--max-steps 2000`, `--n-layer 4` (`genlab models show MODEL` lists them)."""
    summary = api.train(model, out or Path("runs") / model, parse_options(ctx.args), config, overwrite, resume)
    if summary["is_main"]:
        typer.echo(summary["message"], err=True)
        if summary.get("interrupted"):
            raise typer.Exit(130)


# A diffusion model's sampling options, shared by sample, edit and eval (None: the run's defaults).
SamplerOpt = Annotated[str | None, typer.Option(help="diffusion: ddpm, ddim or dpm-solver++ [default: the run's, "
                                                     "dpm-solver++]")]
StepsOpt = Annotated[int | None, typer.Option(help="diffusion: sampling steps [default: the run's, 20]")]
GuidanceOpt = Annotated[float | None, typer.Option(help="diffusion, conditional: classifier-free guidance scale w "
                                                        "(0: none) [default: the run's, 1]")]
EtaOpt = Annotated[float | None, typer.Option(help="diffusion, ddim: noise η in [0, 1] [default: 0]")]
SpacingOpt = Annotated[str | None, typer.Option(help="diffusion: timestep spacing trailing, linspace or logsnr "
                                                     "[default: the sampler's]")]


def diffusion_options(sampler: str | None, steps: int | None, guidance: float | None, eta: float | None,
                      spacing: str | None) -> dict[str, Any]:
    given = {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta, "spacing": spacing}
    return {k: v for k, v in given.items() if v is not None}


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="run directory")],
    prompt: Annotated[str, typer.Option(help="text to continue")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 200,
    temperature: Annotated[float, typer.Option(help="softmax temperature; 0 is greedy")] = 1.0,
    top_k: Annotated[int | None, typer.Option(help="sample among the k most probable tokens")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus sampling: smallest set with this probability")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed, for reproducible samples")] = None,
    beam: Annotated[int | None, typer.Option(help="beam search with this many beams instead of sampling")] = None,
    label: Annotated[str | None, typer.Option(help="image models trained --conditional: class name or index")] = None,
    num_samples: Annotated[int | None, typer.Option(help="image models: images to generate [default: 64]")] = None,
    out: Annotated[Path | None, typer.Option(help="image models: grid PNG [default: RUN/samples.png]")] = None,
    npz: Annotated[Path | None, typer.Option(help="image models: also write the raw uint8 samples here")] = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    eta: EtaOpt = None,
    spacing: SpacingOpt = None,
) -> None:
    """Generate from a trained model: text streams to the terminal; images go to a PNG grid."""
    image = {k: v for k, v in {"num_samples": num_samples, "out_path": out, "npz": npz}.items() if v is not None}
    result = api.sample(run, prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=seed, beam=beam, label=label, **image,
                        **diffusion_options(sampler, steps, guidance, eta, spacing))
    if isinstance(result, str):
        typer.echo()


@app.command()
def generate(
    run: Annotated[Path, typer.Argument(help="run directory of a text-to-image model (trained with --text-encoder)")],
    prompts: Annotated[list[str], typer.Argument(help="one or more prompts, e.g. \"a small dark ankle boot\"; "
                                                      "\"\" samples unconditionally")],
    num_samples: Annotated[int, typer.Option(help="images per prompt (one row each)")] = 8,
    seed: Annotated[int | None, typer.Option(help="random seed, for reproducible images")] = None,
    out: Annotated[Path | None, typer.Option(help="grid PNG [default: RUN/generated.png]")] = None,
    npz: Annotated[Path | None, typer.Option(help="also write the raw uint8 images and their prompts here")] = None,
    guidance: GuidanceOpt = None,
    steps: StepsOpt = None,
    sampler: SamplerOpt = None,
) -> None:
    """Text to image: generate images of each prompt with a text-conditioned diffusion model, VAE or GAN."""
    api.generate(run, prompts, num_samples, guidance=guidance, steps=steps, sampler=sampler, seed=seed, out=out,
                 npz=npz)


@app.command()
def reconstruct(
    run: Annotated[Path, typer.Argument(help="run directory of a model with an encoder (a VAE)")],
    num_images: Annotated[int, typer.Option(help="held-out images to reconstruct")] = 32,
    split: Annotated[str, typer.Option(help="train, valid or test")] = "test",
    out: Annotated[Path | None, typer.Option(help="grid PNG [default: RUN/reconstructions.png]")] = None,
    seed: Annotated[int, typer.Option(help="which images are drawn")] = 0,
) -> None:
    """A grid of held-out images (odd rows) and their reconstructions (even rows)."""
    api.reconstruct(run, num_images=num_images, split=split, out_path=out, seed=seed)


@app.command()
def interpolate(
    run: Annotated[Path, typer.Argument(help="run directory of an image model (VAE or GAN)")],
    pairs: Annotated[int, typer.Option(help="walks, one row each")] = 4,
    steps: Annotated[int, typer.Option(help="points on each latent walk, ends included")] = 10,
    split: Annotated[str, typer.Option(help="models with an encoder: the split the images come from "
                                            "(train, valid or test)")] = "test",
    out: Annotated[Path | None, typer.Option(help="grid PNG [default: RUN/interpolations.png]")] = None,
    seed: Annotated[int, typer.Option(help="which images (or noise vectors) are drawn")] = 0,
) -> None:
    """Latent walks, one per row: a VAE from one held-out image to another, a GAN between two noise vectors."""
    api.interpolate(run, pairs=pairs, steps=steps, split=split, out_path=out, seed=seed)


@app.command()
def edit(
    run: Annotated[Path, typer.Argument(help="run directory of a diffusion model")],
    image: Annotated[Path, typer.Option(help="the image to edit (PNG, JPEG, ...)")],
    mask: Annotated[Path | None, typer.Option(help="inpainting: a mask the image's size, white = repaint, "
                                                   "black = keep")] = None,
    strength: Annotated[float | None, typer.Option(help="noise level to start from, in (0, 1] "
                                                        "[default: 0.6; 1 with --mask]")] = None,
    label: Annotated[str | None, typer.Option(help="conditional models: the class to edit towards")] = None,
    num_samples: Annotated[int, typer.Option(help="edits, each from its own seed")] = 8,
    seed: Annotated[int, typer.Option(help="seed of the first edit")] = 0,
    out: Annotated[Path | None, typer.Option(help="row PNG [default: RUN/edit.png]")] = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    eta: EtaOpt = None,
    spacing: SpacingOpt = None,
) -> None:
    """Edit an image with a diffusion model: SDEdit (noise it part-way, denoise with a new --label) or, with
    --mask, inpainting. Writes the input, the masked input and the edits in one row."""
    api.edit(run, image=image, mask=mask, strength=strength, label=label, num_samples=num_samples, seed=seed,
             out_path=out, **diffusion_options(sampler, steps, guidance, eta, spacing))


@app.command(name="eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory")],
    data: Annotated[str | None, typer.Option(help="evaluate on this source instead of the training data")] = None,
    split: Annotated[str, typer.Option(help="train, valid or test")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    num_samples: Annotated[int | None, typer.Option(help="image models: samples for FD/KID/precision/recall "
                                                         "[default: 1000]")] = None,
    iwae_samples: Annotated[int | None, typer.Option(help="VAEs: importance samples k of the IWAE bound "
                                                          "[default: 64]")] = None,
    likelihood_images: Annotated[int | None, typer.Option(help="diffusion: images of the split (the first ones) "
                                                               "for the variational bound [default: 256]")] = None,
    likelihood_timesteps: Annotated[int | None, typer.Option(help="diffusion: timestep strata of the bound "
                                                                  "(T - 1: every term) [default: 100]")] = None,
    images_per_prompt: Annotated[int | None, typer.Option(help="text-to-image runs on a built-in captioned set: "
                                                               "images per held-out prompt [default: 4]")] = None,
    sampler: SamplerOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    eta: EtaOpt = None,
    spacing: SpacingOpt = None,
) -> None:
    """Held-out metrics of a trained model, as a table and in RUN/eval.json, with RUN/report.html (image models:
    also RUN/eval.md)."""
    given = {"num_samples": num_samples, "iwae_samples": iwae_samples, "likelihood_images": likelihood_images,
             "likelihood_timesteps": likelihood_timesteps, "images_per_prompt": images_per_prompt}
    extra = {k: v for k, v in given.items() if v is not None}
    extra |= diffusion_options(sampler, steps, guidance, eta, spacing)
    report = api.evaluate(run, data=data, split=split, **extra)
    if run.is_dir():
        from genlab.reports import write_report  # the HTML report beside eval.json (matplotlib only here)

        write_report([run])
    typer.echo(json.dumps(report, indent=2) if as_json else format_table(report))


def _flatten(report: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a[b]": 1}, at any depth."""
    out: dict[str, Any] = {}
    for key, value in report.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        out |= _flatten(value, name) if isinstance(value, dict) else {name: value}
    return out


def format_table(report: dict[str, Any]) -> str:
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in _flatten(report).items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(help="training time of each model")] = 120.0,
    out: Annotated[Path, typer.Option(help="folder of the demo runs (replaced on each demo run)")] = Path("runs/demo"),
) -> None:
    """The main jobs on built-in data, about two minutes of training each: a character-level Transformer on
    `names` (20 new names, test perplexity), a VAE and a class-conditional diffusion model on `mnist5k` (sample
    grids, test likelihood, sample quality, SDEdit), and a text-to-image diffusion model on the digits' captions
    (a grid of three prompts, one of them held out)."""
    from genlab.demo import run_demo

    run_demo(out, seconds)


@data_app.command("list")
def data_list() -> None:
    """Built-in data sets."""
    from genlab.data.images import BUILTIN_IMAGES
    from genlab.data.text import BUILTIN_TEXT

    tables = (("text", BUILTIN_TEXT), ("images", BUILTIN_IMAGES))
    width = max(len(name) for _, table in tables for name in table)
    for kind, table in tables:
        for name, (_, about) in table.items():
            typer.echo(f"{name:<{width}} {kind:<7} {about}")


def is_image_source(source: str) -> bool:
    """Built-in image sets, .npz files and folders without .txt files are images; the rest is text."""
    from genlab.data.images import BUILTIN_IMAGES

    path = Path(source).expanduser()
    if source.split(":")[0] in BUILTIN_IMAGES and not path.exists():
        return True
    return path.suffix == ".npz" or (path.is_dir() and not any(path.glob("*.txt")))


@data_app.command("show")
def data_show(
    source: Annotated[str, typer.Argument(help="built-in name, .txt file, folder, IDX folder or .npz")],
    grid: Annotated[Path | None, typer.Option(help="image data: also write a grid of training images here")] = None,
) -> None:
    """Size, vocabulary (text) or shape and classes (images), the split, and a sample."""
    if is_image_source(source):
        from genlab.data.images import ImageDataConfig, load_images, save_image_grid

        dataset = load_images(ImageDataConfig(data=source))
        typer.echo(json.dumps(dataset.describe(), indent=2))
        if grid is not None:
            save_image_grid(dataset.splits["train"][:64], grid)
            typer.echo(f"wrote {grid}", err=True)
        return
    from genlab.data.text import TextDataConfig, load_corpus

    corpus = load_corpus(TextDataConfig(data=source))
    text = corpus.train + corpus.valid + corpus.test
    typer.echo(f"source:      {source}")
    typer.echo(f"characters:  {len(text):,}   lines: {text.count(chr(10)):,}   words: {len(text.split()):,}")
    typer.echo(f"vocabulary:  {len(set(text)):,} characters, {len(set(text.split())):,} words")
    typer.echo(f"split:       {corpus.split} " + ", ".join(f"{k} {len(corpus.part(k)):,} chars"
                                                       for k in ("train", "valid", "test")))
    typer.echo("sample:\n" + "".join(corpus.train[:300]))


@models_app.command("list")
def models_list() -> None:
    """Registered models."""
    from genlab.registry import get_model_class, model_names

    for name in model_names():
        doc = (get_model_class(name).__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{name:<14} {doc}")


@models_app.command("show")
def models_show(model: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Options of MODEL (model, data and training), with defaults."""
    from genlab.registry import get_model_class
    from genlab.tasks import task_for

    cls = get_model_class(model)
    for title, config in task_for(cls).config_sections(cls).items():
        typer.echo(f"{title} options:")
        defaults = getattr(cls, "train_defaults", {}) if title == "train" else {}
        for name, default, help_text in describe(config, defaults):
            typer.echo(f"  --{name.replace('_', '-'):<18} {default:<10} {help_text}")


@app.command(context_settings=EXTRA)
def tune(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name (see `genlab models list`)")],
    study: Annotated[Path, typer.Option(help="study folder: its SQLite file, the trial runs, the best config and "
                                             "the report")],
    trials: Annotated[int, typer.Option(help="finished trials the study should reach (with those of earlier "
                                             "runs of the same study)")] = 20,
    timeout: Annotated[float | None, typer.Option(help="stop starting trials after this many seconds")] = None,
    jobs: Annotated[int, typer.Option(help="trials in parallel, as processes sharing the study")] = 1,
    storage: Annotated[str | None, typer.Option(help="a database URL Optuna accepts (e.g. postgresql://...) "
                                                     "instead of STUDY/study.db: several machines, one study")] = None,
    space: Annotated[Path | None, typer.Option(help="YAML search space: option: {low, high[, log][, int]} | "
                                                    "[choices] | null, over the declared ranges")] = None,
    sampler: Annotated[str, typer.Option(help="tpe or random")] = "tpe",
    pruner: Annotated[str, typer.Option(help="asha (successive halving: at 10%, 30% and 90% of the budget the "
                                             "best third goes on), median (stop trials whose validation loss "
                                             "trails the median) or none")] = "asha",
    sampler_seed: Annotated[int, typer.Option(help="seed of the sampler")] = 0,
    study_name: Annotated[str, typer.Option(help="name of the study in its storage")] = "genlab",
    worker: Annotated[int, typer.Option(hidden=True)] = 0,
) -> None:
    """Search MODEL's hyper-parameters by experiment (Optuna). Any other `--option value` applies to every trial:
    `--data names --max-steps 600 --eval-interval 100`. Run the same command again to continue the study."""
    from genlab.tune import TuneOptions
    from genlab.tune import tune as run_tune

    opts = TuneOptions(trials=trials, timeout=timeout, jobs=jobs, storage=storage, space_file=space,
                       sampler=sampler, pruner=pruner, sampler_seed=sampler_seed, study_name=study_name)
    try:
        summary = run_tune(model, study, parse_options(ctx.args), opts, worker)
    except KeyboardInterrupt:
        typer.echo(f"genlab: interrupted; the running trial is marked failed. Continue with the same command "
                   f"(the study is in {study})", err=True)
        raise typer.Exit(130) from None
    if summary:
        typer.echo(summary["message"], err=True)


@app.command()
def serve(
    runs_dir: Annotated[Path, typer.Argument(help="folder whose run directories (any depth up to 4) are served")],
    host: Annotated[str, typer.Option(help="address to listen on (beyond loopback: --token-file)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    token_file: Annotated[Path | None, typer.Option(help="file holding a bearer token that /v1 requests must "
                                                         "send (Authorization: Bearer TOKEN)")] = None,
    max_models: Annotated[int, typer.Option(help="models kept in memory (least recently used dropped)")] = 4,
    workers: Annotated[int, typer.Option(help="inferences run at once (the CPU cores are split between them)")] = 2,
    queue: Annotated[int, typer.Option(help="requests that may wait beyond those; more get 503")] = 64,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda")] = "auto",
    log_level: Annotated[str, typer.Option(help="uvicorn's: info logs every request, warning only problems")] = "info",
) -> None:
    """Serve every run under RUNS_DIR: a web page at / and an HTTP API at /v1 (documented at /docs)."""
    from genlab.server import serve as run_server

    run_server(runs_dir, host, port, token_file, max_models, workers, queue, device, log_level)


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(help="a run directory, several of them (a comparison), or a study "
                                                     "folder made by `genlab tune`")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file [default: report.html in the run "
                                                                 "or study folder; ./report.html comparing]")] = None,
) -> None:
    """A self-contained HTML report (pictures inline; opens offline): a run's config, data, curves, last
    evaluation and samples; several runs side by side; or a study's best trial, trials and Optuna's plots."""
    from genlab.reports import write_report

    typer.echo(f"wrote {write_report(paths, out)}", err=True)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Path | None, typer.Option(help="output file [default: RUN/model.FORMAT]; arpa: .gz compresses; "
                                                  "onnx: its sidecar OUT.json is written beside it")] = None,
    fmt: Annotated[str, typer.Option("--format", help="arpa (n-gram runs) or onnx (neural runs; needs "
                                                      "pip install 'genlab[onnx]')")] = "arpa",
) -> None:
    """Write a model in a standard format: n-gram models as ARPA files that KenLM and SRILM read; neural models as
    ONNX graphs that onnxruntime runs without genlab, each with a JSON sidecar naming its inputs and outputs."""
    path = api.export(run, fmt, out)
    typer.echo(f"wrote {path}", err=True)


def _format_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"genlab: warning: {message}\n"


def main() -> None:
    warnings.formatwarning = _format_warning  # one plain line, as errors are
    try:
        app()
    except GenlabError as e:
        typer.echo(f"genlab: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("genlab: interrupted", err=True)
        sys.exit(130)
