"""Decoding for any language model with the `forward(tokens, state) -> (logits, state)` interface:
temperature, top-k and nucleus (top-p) sampling, greedy, and beam search.

Every call feeds only new tokens with the carried state, so output runs past a recurrent model's
training window (carried hidden state) and past a Transformer's context (its state is a sliding window).
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from genlab.errors import ConfigError


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int) -> None:
    if temperature < 0:
        raise ConfigError("--temperature must be ≥ 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ConfigError("--top-k must be at least 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError("--top-p must be in (0, 1]")
    if max_new_tokens < 0:
        raise ConfigError("--max-new-tokens must be ≥ 0")


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
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: list[int], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None) -> Iterator[int]:
    """Yield `max_new_tokens` token ids continuing `prompt` (non-empty), one at a time."""
    check_sampling(temperature, top_k, top_p, max_new_tokens)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    model.eval()
    logits, state = _feed(model, torch.tensor([prompt], device=device), None)
    for _ in range(max_new_tokens):
        last = logits[:, -1, :].float()
        if temperature == 0:
            nxt = last.argmax(-1, keepdim=True)
        else:
            probs = F.softmax(filter_logits(last / temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
        yield int(nxt)
        logits, state = model(nxt, state)


def _feed(model: torch.nn.Module, tokens: torch.Tensor, state):
    """Run a prompt of any length through the model, in chunks that fit its context."""
    chunk = getattr(model.config, "context_length", 0) or tokens.size(1)
    for start in range(0, tokens.size(1), chunk):
        logits, state = model(tokens[:, start:start + chunk], state)
    return logits, state


@torch.no_grad()
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
        state = None if state is None else tuple(s[beam_idx] for s in state)
        if stop_token is not None:
            done = tok == stop_token
            finished += [(float(scores[i]), seqs[i].tolist()) for i in torch.nonzero(done).flatten().tolist()]
            keep = ~done
            if not keep.any():
                break
            seqs, scores, tok = seqs[keep], scores[keep], tok[keep]
            state = None if state is None else tuple(s[keep] for s in state)
        logits, state = model(tok[:, None], state)
    finished += [(float(s), q.tolist()) for s, q in zip(scores, seqs, strict=True)]
    return max(finished, key=lambda f: f[0])[1]
