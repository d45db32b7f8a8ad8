"""Neural language models on text: corpus → tokenizer → token streams → LM; sampling and perplexity."""

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import torch

from genlab.checkpoint import TOKENIZER, RunDir, atomic_write_json
from genlab.config import check_sampling, from_dict
from genlab.data.text import TextDataConfig, evaluation_text, load_corpus
from genlab.data.token_batches import TokenBatches
from genlab.data.tokenizers import Tokenizer, start_ids, tokenizer_from_dict, train_tokenizer
from genlab.distributed import DistInfo
from genlab.errors import CheckpointError, ConfigError
from genlab.eval.perplexity import TokenSplit, stream_nll
from genlab.eval.sentences import sentence_score
from genlab.generation import beam_search, generate
from genlab.tasks.neural import NeuralTask, Prepared
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

    def onnx_graph(self, model: torch.nn.Module, tokenizer: Tokenizer) -> Any:
        """What `genlab export --format onnx` writes: one decoding step with its state (genlab.onnx_export)."""
        from genlab.onnx_export import language_model_step

        return language_model_step(model, tokenizer)

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

    def stream(self, model: torch.nn.Module, tokenizer: Tokenizer, config: dict, *, prompt: str = "",
               max_new_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | None = None) -> Iterator[str]:
        """The continuation of `prompt` as text pieces, one per decodable token (what a server streams);
        options are checked now, before the first piece."""
        check_sampling(temperature, top_k, top_p, max_new_tokens)
        ids = start_ids(tokenizer) + tokenizer.encode(prompt)
        return decoded_pieces(generate(model, ids, max_new_tokens, temperature, top_k, top_p, seed), tokenizer)

    @torch.no_grad()
    def score(self, model: torch.nn.Module, tokenizer: Tokenizer, config: dict, texts: list[str]) -> list[dict]:
        """Natural-log probability of each text as a line: its tokens and the line break that ends it, given the
        line break before it (as an n-gram model scores a sentence with </s>)."""
        model.eval()
        device = next(model.parameters()).device
        end = start_ids(tokenizer)
        scores = []
        for text in texts:
            ids = torch.tensor([end + tokenizer.encode(text) + end], device=device)
            logits = torch.cat([chunk for chunk in _logits_in_windows(model, ids[:, :-1])], dim=1)
            logp = torch.log_softmax(logits.float(), dim=-1)[0].gather(1, ids[0, 1:, None]).sum()
            scores.append(sentence_score(text, float(logp), ids.size(1) - 1))
        return scores

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


def decoded_pieces(ids: Iterable[int], tokenizer: Tokenizer) -> Iterator[str]:
    """The text of `ids` as it grows, one piece per token (decoding the whole sequence so that multi-byte BPE
    pieces come out only once complete)."""
    seq: list[int] = []
    shown = ""
    for token in ids:
        seq.append(token)
        text = tokenizer.decode(seq)
        if text.endswith("\ufffd") and tokenizer.kind == "bpe":
            continue  # an incomplete UTF-8 sequence: wait for its next byte
        piece, shown = text[len(shown):], text
        yield piece


def stream_decode(ids: Iterable[int], tokenizer: Tokenizer, out: TextIO, prefix: str = "",
                  stop: Callable[[str], bool] | None = None) -> str:
    """Write the text of `ids` to `out` as it grows; stop early when `stop(text)` is true. Returns the text."""
    out.write(prefix)
    out.flush()
    shown = ""
    for piece in decoded_pieces(ids, tokenizer):
        out.write(piece)
        out.flush()
        shown += piece
        if stop is not None and stop(shown):
            break
    return shown


def _logits_in_windows(model: torch.nn.Module, ids: torch.Tensor) -> Iterator[torch.Tensor]:
    """Logits of every position of `ids` (1, T), fed a context window at a time with the state carried."""
    window = getattr(model.config, "context_length", 0) or ids.size(1)
    state = None
    for start in range(0, ids.size(1), window):
        logits, state = model(ids[:, start:start + window], state)
        yield logits


TEXT_LM = TextLMTask()
