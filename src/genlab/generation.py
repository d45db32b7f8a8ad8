"""Decoding for any language model with the `forward(tokens, state) -> (logits, state)` interface:
temperature, top-k and nucleus (top-p) sampling, greedy, and beam search.

Every call feeds only new tokens with the carried state, so output runs past a recurrent model's
training window (carried hidden state) and past a Transformer's context (its state is a sliding window and
the keys and values of its tokens, so a step within the context computes only the new token).
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from genlab.config import check_sampling
from genlab.errors import ConfigError


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set logits outside the top-k, or outside the smallest set with probability ≥ top_p, to -inf."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop_sorted[..., 0] = False  # explicitly: a top_p below float32's smallest value rounds to 0
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def generate(model: torch.nn.Module, prompt: list[int], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             use_cache: bool = True) -> Iterator[int]:
    """Yield `max_new_tokens` token ids continuing `prompt` (non-empty), one at a time.

    `use_cache=False` drops whatever state the model can rebuild (a Transformer's key-value cache) before each
    step, so each step recomputes its window: the same tokens, slower (kept for benchmarks and tests).
    """
    for tokens in generate_batch(model, prompt, 1, max_new_tokens, temperature, top_k, top_p, seed, use_cache):
        yield tokens[0]


@torch.inference_mode()
def generate_batch(model: torch.nn.Module, prompt: list[int], num_samples: int, max_new_tokens: int,
                   temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   seed: int | None = None, use_cache: bool = True) -> Iterator[list[int]]:
    """Sample `num_samples` independent continuations of `prompt` in one batch: yield one token per stream
    per step (a list of `num_samples` ids), `max_new_tokens` times. Stream 0 of a call with num_samples=1 is
    exactly `generate` with the same seed."""
    check_sampling(temperature, top_k, top_p, max_new_tokens)
    if num_samples < 1:
        raise ConfigError("--num-samples must be at least 1")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    model.eval()
    logits, state = _feed(model, torch.tensor([prompt], device=device), None)
    # The prompt is run once; its state is copied to every stream.
    streams = torch.zeros(num_samples, dtype=torch.long, device=device)
    logits, state = logits[:, -1:][streams], _select(state, streams)
    for step in range(max_new_tokens):
        last = logits[:, -1, :].float()
        if temperature == 0:
            nxt = last.argmax(-1, keepdim=True)
        else:
            # Shifted so the largest logit is 0, and T kept above float32's smallest normal number (a smaller
            # one rounds to 0): a tiny temperature gives -inf for the rest (the greedy limit), never nan.
            scaled = (last - last.max(-1, keepdim=True).values) / max(temperature, torch.finfo(last.dtype).tiny)
            probs = F.softmax(filter_logits(scaled, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
        yield nxt[:, 0].tolist()
        if step + 1 < max_new_tokens:  # the last token's logits would go unused
            logits, state = model(nxt, state if use_cache else model.without_cache(state))


def _feed(model: torch.nn.Module, tokens: torch.Tensor, state):
    """Run a prompt of any length through the model, in chunks that fit its context."""
    chunk = getattr(model.config, "context_length", 0) or tokens.size(1)
    for start in range(0, tokens.size(1), chunk):
        logits, state = model(tokens[:, start:start + chunk], state)
    return logits, state


def _select(state: tuple[torch.Tensor, ...] | None, idx: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """The streams `idx` of a batch-first state (reordered, repeated or dropped)."""
    return None if state is None else tuple(s[idx] for s in state)


@torch.inference_mode()
def beam_search(model: torch.nn.Module, prompt: list[int], max_new_tokens: int, beam_size: int = 4,
                stop_token: int | None = None) -> list[int]:
    """The most probable continuation found by beam search (sum of log-probabilities, no length penalty).

    Beams that emit `stop_token` are finished and compete with the rest by score.
    """
    if beam_size < 1:
        raise ConfigError("--beam must be at least 1")
    device = next(model.parameters()).device
    model.eval()
    logits, state = _feed(model, torch.tensor([prompt], device=device), None)
    seqs = torch.empty(1, 0, dtype=torch.long, device=device)
    scores = torch.zeros(1, device=device)
    finished: list[tuple[float, list[int]]] = []
    for _ in range(max_new_tokens):
        logp = F.log_softmax(logits[:, -1, :].float(), dim=-1)  # (beams, V)
        total = (scores[:, None] + logp).flatten()
        top = torch.topk(total, min(beam_size, total.numel()))
        beam_idx, tok = top.indices // logp.size(1), top.indices % logp.size(1)
        seqs = torch.cat([seqs[beam_idx], tok[:, None]], dim=1)
        scores = top.values
        state = _select(state, beam_idx)
        if stop_token is not None:
            done = tok == stop_token
            finished += [(float(scores[i]), seqs[i].tolist()) for i in torch.nonzero(done).flatten().tolist()]
            keep = ~done
            if not keep.any():
                break
            seqs, scores, tok = seqs[keep], scores[keep], tok[keep]
            state = _select(state, keep)
        logits, state = model(tok[:, None], state)
    finished += [(float(s), q.tolist()) for s, q in zip(scores, seqs, strict=True)]
    return max(finished, key=lambda f: f[0])[1]
