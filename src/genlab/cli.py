"""The `genlab` command line: a thin Typer layer over genlab.api."""

import json
import sys
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


def parse_options(args: list[str]) -> dict[str, Any]:
    """`--n-layer 4 --dropout=0.1 --tie-weights` → {"n_layer": "4", "dropout": "0.1", "tie_weights": "true"}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
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
        state = "interrupted at" if summary["interrupted"] else "finished after"
        typer.echo(f"{state} {summary['steps']} steps ({summary['train_seconds']:.0f} s); "
                   f"best validation loss {summary['best_val']:.4f}; run directory: {summary['run_dir']}", err=True)
        if summary["interrupted"]:
            typer.echo(f"resume with: genlab train {model} --out {summary['run_dir']} --resume", err=True)
            raise typer.Exit(130)


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
) -> None:
    """Generate from a trained model, streaming text to the terminal."""
    api.sample(run, prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
               top_p=top_p, seed=seed, beam=beam)
    typer.echo()


@app.command(name="eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory")],
    data: Annotated[str | None, typer.Option(help="evaluate on this source instead of the training data")] = None,
    split: Annotated[str, typer.Option(help="train, valid or test")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Held-out metrics of a trained model, as a table and in RUN/eval.json."""
    report = api.evaluate(run, data=data, split=split)
    typer.echo(json.dumps(report, indent=2) if as_json else format_table(report))


def format_table(report: dict[str, Any]) -> str:
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in report.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(help="training time budget")] = 120.0,
    out: Annotated[Path, typer.Option(help="run directory (replaced on each demo run)")] = Path("runs/demo-names"),
) -> None:
    """Train a character-level Transformer on the built-in `names` for about two minutes, then print 20 new
    names and the test perplexity."""
    from genlab.demo import run_demo

    run_demo(out, seconds)


@data_app.command("list")
def data_list() -> None:
    """Built-in data sets."""
    from genlab.data.text import BUILTIN_TEXT

    for name, (_, about) in BUILTIN_TEXT.items():
        typer.echo(f"{name:<16} text    {about}")


@data_app.command("show")
def data_show(source: Annotated[str, typer.Argument(help="built-in name, .txt file or folder")]) -> None:
    """Size, vocabulary size and a sample of a data set."""
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
    from genlab.trainer import TrainConfig

    cls = get_model_class(model)
    for title, config in (("model", cls.Config), ("data", cls.task.DataConfig), ("train", TrainConfig)):
        typer.echo(f"{title} options:")
        for name, default, help_text in describe(config):
            typer.echo(f"  --{name.replace('_', '-'):<18} {default:<10} {help_text}")


def main() -> None:
    try:
        app()
    except GenlabError as e:
        typer.echo(f"genlab: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("genlab: interrupted", err=True)
        sys.exit(130)
