"""A genlab neural language model run (transformer, lstm, gru, rnn) as a frozen text encoder.

References: Peters et al. 2018 (ELMo: a language model's hidden states as contextual word features); Radford et
al. 2018 (GPT: the same for a Transformer decoder).

    prompt -> the run's tokenizer -> <start> t1 .. tn (B, L) -> LM.hidden_states (B, L, D) -> states

The LM reads the prompt as it read its training text: after the line separator that starts every sequence.
Its states are causal (a token sees only those before it), so right padding never changes a prompt's states.
The LM is a child module: its weights are part of the image model's state dict, so an image run stays
self-contained when the LM run moves; `load_pretrained` copies the run's weights in once, at training start.

Text outside the LM's vocabulary: a char-level LM drops the characters it never saw (its <unk> never occurred in
training, so its embedding is noise); a word-level LM reads <unk> for unknown words (trained wherever --max-vocab
cut the vocabulary, and it keeps the word's position); byte-level BPE encodes anything. The spec warns once with
the fraction of caption characters affected.
"""

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from genlab.checkpoint import TOKENIZER, WEIGHTS, RunDir, load_weights_into
from genlab.config import from_dict
from genlab.data.tokenizers import UNK_ID, Tokenizer, start_ids, tokenizer_from_dict
from genlab.errors import CheckpointError, ConfigError
from genlab.registry import get_model_class, model_names
from genlab.text_encoders.base import TextEncoder

RECURRENT_MAX_TOKENS = 128  # prompt length for a recurrent LM, which has no context limit; a caption fits


def _prompt_text(prompt: str) -> str:
    return prompt.replace("\n", " ")  # a newline would start a new sequence for the LM


def neural_lm_names() -> list[str]:
    from genlab.models.lm.base import LanguageModel  # lazy: genlab.models imports the image models, which import us

    return [n for n in model_names() if issubclass(get_model_class(n), LanguageModel)]


def read_lm_run(source: str | Path) -> tuple[RunDir, dict, dict]:
    """The run's config.json and tokenizer.json; ConfigError when the directory is not a neural LM run."""
    run = RunDir(source)
    if not run.file("config.json").is_file():
        raise ConfigError(f"{run.path} is not a genlab run directory (no config.json); choose scratch, minilm or "
                          "a language-model run directory")
    config = run.read_config()
    lms = neural_lm_names()
    if config["model"] not in lms:
        raise ConfigError(f"{run.path} is a {config['model']!r} run, not a neural language model run "
                          f"({', '.join(lms)}); a text encoder needs an LM's hidden states")
    if "model_config" not in config:
        raise CheckpointError(f"{run.path}/config.json lacks its model_config section")
    for name in (TOKENIZER, WEIGHTS):
        if not run.file(name).is_file():
            raise CheckpointError(f"{run.path} has no {name}; train the language model to the end first")
    try:
        tokenizer = json.loads(run.file(TOKENIZER).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{run.file(TOKENIZER)} is corrupt: {e}") from None
    return run, config, tokenizer


class LMTextEncoder(TextEncoder):
    """Frozen hidden states of a genlab language model."""

    kind = "lm"
    trainable = False
    persistent = True

    @classmethod
    def make_spec(cls, source: str | Path, captions: Iterable[str], *, max_tokens: int | None = None,
                  **unused: Any) -> dict:
        run, config, tokenizer_dict = read_lm_run(source)
        context = config["model_config"].get("context_length")
        if max_tokens is None:  # a character-level LM needs far more tokens than a word-level encoder
            max_tokens = context or RECURRENT_MAX_TOKENS
        elif context and max_tokens > context:
            warnings.warn(f"the language model at {run.path} reads at most {context} tokens; max_tokens lowered "
                          f"from {max_tokens} to {context}", stacklevel=3)
            max_tokens = context
        spec = {"kind": cls.kind, "dim": 0, "max_tokens": max_tokens, "source": str(run.path.resolve()),
                "model": config["model"], "model_config": config["model_config"], "tokenizer": tokenizer_dict}
        with torch.device("meta"):  # the architecture without allocating its weights, to read its width
            encoder = cls.from_spec(spec)
            spec["dim"] = encoder.lm.hidden_states(torch.zeros(1, 1, dtype=torch.long)).shape[-1]
        warn_unknown(encoder.tokenizer, captions, run.path)
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> "LMTextEncoder":
        model_cls = get_model_class(spec["model"])
        model_cfg = from_dict(model_cls.Config, spec["model_config"], f"text encoder spec of {spec['source']}")
        context = getattr(model_cfg, "context_length", None)
        if context and spec["max_tokens"] > context:
            raise ConfigError(f"max_tokens ({spec['max_tokens']}) exceeds the context length ({context}) of the "
                              f"language model at {spec['source']}; make the spec again")
        return cls(model_cls(model_cfg), tokenizer_from_dict(spec["tokenizer"]), spec["dim"], spec["max_tokens"])

    def __init__(self, lm: torch.nn.Module, tokenizer: Tokenizer, dim: int, max_tokens: int):
        start = start_ids(tokenizer)
        super().__init__(dim, max_tokens, prefix=start, pad_id=start[0])
        self.lm = lm.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.drop_unknown = tokenizer.kind == "char"  # see the module docstring

    def encode_text(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(_prompt_text(prompt))
        return [i for i in ids if i != UNK_ID] if self.drop_unknown else ids

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lm.hidden_states(ids)

    def load_pretrained(self, spec: dict) -> None:
        """Copy the run's best weights (model.safetensors) in; CheckpointError if the run changed or is gone."""
        run = RunDir(spec["source"])
        path = run.file(WEIGHTS)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the text encoder's language-model run moved or was deleted "
                                  "(only training from scratch needs it; a trained image run holds a copy)")
        if _read_json(run.file(TOKENIZER)) != spec["tokenizer"]:
            raise CheckpointError(f"the tokenizer of {run.path} changed since the text encoder spec was made "
                                  "(was the run retrained?); make the spec again")
        load_weights_into(self.lm, path)  # copies into the existing tensors: device and dtype stay


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def warn_unknown(tokenizer: Tokenizer, captions: Iterable[str], where: Path) -> None:
    """One warning giving the fraction of caption characters outside the LM's vocabulary, if any."""
    unknown = total = 0
    for caption in captions:
        text = _prompt_text(caption)
        unknown += tokenizer.unknown_chars(text)
        total += len(text)
    if unknown:
        fate = "dropped" if tokenizer.kind == "char" else "read as <unk>"
        warnings.warn(f"{unknown / total:.1%} of the caption characters are outside the vocabulary of the language "
                      f"model at {where}; they are {fate}", stacklevel=3)
