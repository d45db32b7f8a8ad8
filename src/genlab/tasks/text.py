"""Neural language models on text: corpus → tokenizer → token streams → LM; sampling and perplexity."""

import math
import sys
from collections.abc import Callable
from typing import Any, TextIO

import torch

from genlab.checkpoint import TOKENIZER, RunDir, atomic_write_json
from genlab.config import from_dict
from genlab.data.text import TextDataConfig, TokenBatches, evaluation_text, load_corpus
from genlab.data.tokenizers import Tokenizer, start_ids, tokenizer_from_dict, train_tokenizer
from genlab.distributed import DistInfo
from genlab.errors import CheckpointError, ConfigError
from genlab.eval.perplexity import TokenSplit, stream_nll
from genlab.generation import beam_search, generate
from genlab.tasks import NeuralTask, Prepared
from genlab.trainer import TrainConfig

EVAL_STREAMS = 16


def encode_split(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """Token ids of `text`, preceded by the line separator so that its first token is predicted too."""
    return torch.tensor(start_ids(tokenizer) + tokenizer.encode(text), dtype=torch.long)


class TextLMTask(NeuralTask):
    DataConfig = TextDataConfig

    def prepare(self, data_cfg: TextDataConfig, model_cls: type, train_cfg: TrainConfig, dist: DistInfo,
                run: RunDir | None = None, model_cfg: Any = None) -> Prepared:
        corpus = load_corpus(data_cfg)
        # On resume the saved tokenizer is reused, so ids keep their meaning.
        if run is not None and run.file(TOKENIZER).is_file():
            tokenizer = self.load_artifacts(run, {})
        else:
            tokenizer = train_tokenizer(data_cfg.tokenizer, corpus.train, data_cfg.lowercase, data_cfg.max_vocab)
        train = encode_split(tokenizer, corpus.train)
        valid = encode_split(tokenizer, corpus.valid)
        batches = TokenBatches(train, train_cfg.batch_size, data_cfg.seq_len, model_cls.stateful_training,
                               train_cfg.seed, dist.rank, dist.world_size, dist.device)
        val = TokenSplit(valid, data_cfg.seq_len, EVAL_STREAMS) if len(valid) > 1 else None
        info = corpus.describe() | {
            "tokens": {"train": len(train) - 1, "valid": len(valid) - 1},
            "vocab_size": tokenizer.vocab_size,
        }
        return Prepared(
            shapes=model_cls.shapes_from_data(tokenizer.vocab_size, data_cfg.seq_len),
            train_batch=batches,
            val_data=val,
            info=info,
            artifacts=tokenizer,
            save_artifacts=lambda r: atomic_write_json(r.file(TOKENIZER), tokenizer.to_dict()),
        )

    def load_artifacts(self, run: RunDir, config: dict[str, Any]) -> Tokenizer:
        import json

        path = run.file(TOKENIZER)
        if not path.is_file():
            raise CheckpointError(f"{run.path} has no {TOKENIZER}")
        try:
            return tokenizer_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path} is corrupt: {e}") from None

    # --- sampling ---

    def sample(self, model: torch.nn.Module, tokenizer: Tokenizer, config: dict, *, prompt: str = "",
               max_new_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None, beam: int | None = None,
               label: str | None = None, out: TextIO = sys.stdout, **unused: Any) -> str:
        """Continue `prompt`, streaming text to `out` as tokens arrive; returns the generated text."""
        if label is not None:
            raise ConfigError("--label applies to conditional image models; a language model takes --prompt")
        ids = start_ids(tokenizer) + tokenizer.encode(prompt)
        if beam:
            new = beam_search(model, ids, max_new_tokens, beam)
            text = tokenizer.decode(new)
            out.write(prompt + text)
            out.flush()
            return text
        return stream_decode(generate(model, ids, max_new_tokens, temperature, top_k, top_p, seed),
                             tokenizer, out, prefix=prompt)

    # --- evaluation ---

    def evaluate(self, model: torch.nn.Module, tokenizer: Tokenizer, config: dict, data: str | None = None,
                 split: str = "test") -> dict[str, Any]:
        """Held-out cross-entropy (nats/token), perplexity and bits per character on a whole split."""
        data_cfg = from_dict(TextDataConfig, config["data"], "saved data config")
        source, text = evaluation_text(data_cfg, data, split)
        tokens = encode_split(tokenizer, text)
        device = next(model.parameters()).device
        tokens = tokens.to(device)
        model.eval()
        nll, count = stream_nll(model, tokens, data_cfg.seq_len, EVAL_STREAMS)
        ce = nll / count
        return {
            "data": source,
            "tokens": count,
            "characters": len(text),
            "cross_entropy_nats": ce,
            "perplexity": math.exp(ce),
            "bits_per_char": nll / math.log(2) / len(text),
        }


def stream_decode(ids: Any, tokenizer: Tokenizer, out: TextIO, prefix: str = "",
                  stop: Callable[[str], bool] | None = None) -> str:
    """Write the text of `ids` to `out` as it grows (decoding the whole sequence so that multi-byte
    BPE pieces print only once complete); stop early when `stop(text)` is true."""
    out.write(prefix)
    out.flush()
    seq: list[int] = []
    shown = ""
    for token in ids:
        seq.append(token)
        text = tokenizer.decode(seq)
        if text.endswith("\ufffd") and tokenizer.kind == "bpe":
            continue  # an incomplete UTF-8 sequence: wait for its next byte
        out.write(text[len(shown):])
        out.flush()
        shown = text
        if stop is not None and stop(shown):
            break
    return shown


TEXT_LM = TextLMTask()
