"""Count-based language models on text: corpus → token strings → `NgramLM.fit`; sampling, perplexity, ARPA.

An n-gram run directory holds config.json (as every run), ngram.safetensors + ngram.json (the tables) and,
for BPE, tokenizer.json. Tokens are strings: whitespace words (as KenLM), characters (a space is written
"▁" so that ARPA files stay valid), or byte-level BPE pieces.
"""

import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from genlab.checkpoint import TOKENIZER, RunDir, atomic_write_json
from genlab.config import check_sampling, from_dict, option, to_dict
from genlab.data.text import TextSourceConfig, evaluation_text, load_corpus
from genlab.data.tokenizers import BPETokenizer, tokenizer_from_dict, train_tokenizer
from genlab.errors import CheckpointError, ConfigError
from genlab.eval.sentences import sentence_score
from genlab.malloc import keep_freed_memory

SPACE = "\u2581"  # stands for " " in character n-grams


@dataclass
class NgramDataConfig(TextSourceConfig):
    tokenizer: str = option("word", "word (whitespace, as KenLM), char, or bpe")
    max_vocab: int | None = option(None, "word/char: keep the most frequent tokens, others become <unk> "
                                         "(default: all, as KenLM); bpe: vocabulary size (default 2000)")


class TokenStrings:
    """Text ↔ token strings for n-gram models, one sentence per line."""

    def __init__(self, kind: str, lowercase: bool = False, bpe: BPETokenizer | None = None):
        self.kind, self.lowercase, self.bpe = kind, lowercase, bpe

    def split(self, line: str) -> list[str]:
        if self.lowercase:
            line = line.lower()
        if self.kind == "word":
            return line.split()
        if self.kind == "char":
            return [SPACE if c == " " else c for c in line.strip("\n")]
        return self.bpe.hf.encode(line.strip("\n")).tokens

    def sentences(self, text: str) -> Iterator[list[str]]:
        """One token list per non-empty line, made as they are consumed (a corpus never held twice)."""
        return (self.split(line) for line in text.split("\n") if line.strip())

    def join(self, tokens: list[str]) -> str:
        if self.kind == "word":
            return " ".join(tokens)
        if self.kind == "char":
            return "".join(tokens).replace(SPACE, " ")
        hf = self.bpe.hf
        return hf.decode([i for i in (hf.token_to_id(t) for t in tokens) if i is not None])


def cap_vocabulary(sentences: list[list[str]], size: int) -> list[list[str]]:
    """Keep the `size` most frequent tokens (ties alphabetical); the rest become <unk>."""
    counts = Counter(t for s in sentences for t in s)
    keep = set(sorted(counts, key=lambda t: (-counts[t], t))[:size])
    return [[t if t in keep else "<unk>" for t in s] for s in sentences]


class NgramTask:
    DataConfig = NgramDataConfig

    def config_sections(self, cls: type) -> dict[str, type]:
        return {"model": cls.Config, "data": NgramDataConfig}

    def train(self, name: str, cls: type, cfg: dict[str, Any], run: RunDir, overwrite: bool,
              resume: bool, on_validation: Any = None) -> dict[str, Any]:
        """Count and smooth in one pass, save, and report n-grams per order, time and peak memory."""
        if resume:
            raise ConfigError("n-gram models are estimated in one pass; there is nothing to resume")
        data_cfg: NgramDataConfig = cfg["data"]
        keep_freed_memory()  # numpy temporaries of hundreds of MiB on large corpora: reuse them, as training does
        start = time.perf_counter()
        corpus = load_corpus(data_cfg)
        bpe = None
        if data_cfg.tokenizer == "bpe":
            bpe = train_tokenizer("bpe", corpus.train, data_cfg.lowercase, data_cfg.max_vocab)
        elif data_cfg.tokenizer not in ("word", "char"):
            raise ConfigError(f"unknown tokenizer {data_cfg.tokenizer!r}; use word, char or bpe")
        tokens = TokenStrings(data_cfg.tokenizer, data_cfg.lowercase, bpe)
        sentences = tokens.sentences(corpus.train)
        if data_cfg.max_vocab is not None and data_cfg.tokenizer != "bpe":
            sentences = cap_vocabulary(list(sentences), data_cfg.max_vocab)
        model = cls.fit(sentences, cfg["model"])
        run.prepare_new(overwrite)
        model.save(run.path)
        if bpe is not None:
            atomic_write_json(run.file(TOKENIZER), bpe.to_dict())
        run.write_config({"model": name, "model_config": to_dict(cfg["model"]), "data": to_dict(data_cfg),
                          "data_info": corpus.describe()})
        counts = model.counts_per_order()
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        table = "\n".join(f"{n:>5}  {c:,}" for n, c in enumerate(counts, 1))
        message = (f"order  n-grams\n{table}\nestimated in {seconds:.1f} s, peak memory {peak_mb:,.0f} MB; "
                   f"run directory: {run.path}")
        return {"run_dir": str(run.path), "is_main": True, "counts": counts, "seconds": seconds,
                "peak_memory_mb": peak_mb, "message": message}

    def tune_objective_name(self, model_name: str) -> str:
        return "perplexity on the validation split"

    def tune_objective(self, run: RunDir, summary: dict[str, Any]) -> float:
        """A finished trial's value for `genlab tune`: its perplexity on the validation split."""
        from genlab.registry import get_model_class

        config = run.read_config()
        model = get_model_class(config["model"]).from_run(run, config)
        return self.evaluate(model, self.load_artifacts(run, config), config, split="valid")["perplexity"]

    def load_artifacts(self, run: RunDir | None, config: dict[str, Any]) -> TokenStrings:
        data = config.get("data", {})
        bpe = None
        if data.get("tokenizer") == "bpe":
            path = run.file(TOKENIZER) if run is not None else None
            if path is None or not path.is_file():
                raise CheckpointError(f"{run.path if run else 'model'} has no {TOKENIZER} for its BPE tokens")
            try:
                bpe = tokenizer_from_dict(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{path} is corrupt: {e}") from None
        return TokenStrings(data.get("tokenizer", "word"), data.get("lowercase", False), bpe)

    def sample(self, model: Any, tokens: TokenStrings, config: dict, *, prompt: str = "",
               max_new_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, beam: int | None = None,
               label: str | None = None, out: TextIO = sys.stdout, **unused: Any) -> str:
        """Continue `prompt` (as the start of a sentence) until </s>, streaming tokens to `out`."""
        if top_p is not None or beam or label is not None:
            raise ConfigError("n-gram sampling takes --prompt, --temperature, --top-k, --seed and --max-new-tokens")
        out.write(prompt)
        text = ""
        for piece in self.stream(model, tokens, config, prompt=prompt, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_k=top_k, seed=seed):
            out.write(piece)
            out.flush()
            text += piece
        return text.lstrip(" ") if tokens.kind == "word" else text

    def stream(self, model: Any, tokens: TokenStrings, config: dict, *, prompt: str = "", max_new_tokens: int = 200,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None) -> Iterator[str]:
        """The continuation of `prompt` as text pieces, one per token, until </s> (what a server streams);
        options are checked now, before the first piece."""
        if top_p is not None:
            raise ConfigError("n-gram sampling takes temperature and top_k, not top_p")
        check_sampling(temperature, top_k, top_p, max_new_tokens)
        words = model.generate(tokens.split(prompt), max_new_tokens, temperature, top_k, seed)
        return (tokens.join([w]) if tokens.kind != "word" or (i == 0 and not prompt) else " " + tokens.join([w])
                for i, w in enumerate(words))

    def score(self, model: Any, tokens: TokenStrings, config: dict, texts: list[str]) -> list[dict]:
        """Probability of each text as one sentence, as kenlm.Model.score(text, bos=True, eos=True)."""
        sentences = [tokens.split(t) for t in texts]
        log10 = model.score_sentences(sentences) if sentences else []
        return [sentence_score(t, float(lp) * math.log(10), len(s) + 1)
                for t, s, lp in zip(texts, sentences, log10, strict=True)]

    def evaluate(self, model: Any, tokens: TokenStrings, config: dict, data: str | None = None,
                 split: str = "test") -> dict[str, Any]:
        """Perplexity as KenLM computes it (</s> predicted, <s> not), OOV and zero-probability counts."""
        data_cfg = from_dict(NgramDataConfig, config.get("data", {}), "saved data config")
        if data is None and "data_info" not in config:
            raise ConfigError("this model was not trained by genlab: give the text to score with --data")
        source, text = evaluation_text(data_cfg, data, split)
        report = model.perplexity(tokens.sentences(text))
        ln10 = 2.302585092994046
        nats = -report["log10_prob"] * ln10
        result = {"data": source, **report, "cross_entropy_nats": nats / max(report["tokens"], 1),
                  "bits_per_char": nats / 0.6931471805599453 / len(text)}
        if not model.normalized:
            result["note"] = "stupid backoff scores are not probabilities: this 'perplexity' is not one"
        return result

    def export(self, model: Any, path: Path, fmt: str) -> None:
        if fmt != "arpa":
            raise ConfigError(f"unknown export format {fmt!r}; n-gram models export to arpa")
        model.to_arpa(path)


NGRAM_TASK = NgramTask()
