"""Fast decoding: the Transformer's key-value cache gives the outputs of recomputing its window, and batched
sampling gives one independent stream per row (tiny untrained models, fixed seeds)."""

import pytest
import torch
from torch import nn

from genlab.eval.perplexity import stream_nll
from genlab.generation import beam_search, generate, generate_batch
from genlab.models.lm.base import LanguageModel, State
from genlab.registry import get_model_class

CTX = 16


def tiny_transformer(n_layer: int = 2, dropout: float = 0.0) -> LanguageModel:
    torch.manual_seed(0)
    cls = get_model_class("transformer")
    return cls(cls.Config(vocab_size=11, context_length=CTX, n_layer=n_layer, n_head=2, n_embd=16,
                          dropout=dropout)).eval()


def tiny_recurrent(name: str) -> LanguageModel:
    torch.manual_seed(0)
    cls = get_model_class(name)
    return cls(cls.Config(vocab_size=11, n_embd=8, n_hidden=12, n_layer=2)).eval()


class WindowOnly(nn.Module):
    """A language model whose state keeps only what cannot be recomputed: the Transformer as before its cache."""

    def __init__(self, lm: LanguageModel):
        super().__init__()
        self.lm, self.config = lm, lm.config

    def forward(self, tokens: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        logits, state = self.lm(tokens, state)
        return logits, self.lm.without_cache(state)


@pytest.mark.parametrize("chunks", [[1] * 40, [3, 5, 1, 7, 2, 9, 1, 1, 4, 16, 2]])
@torch.no_grad()
def test_cached_logits_equal_recomputed_window_past_the_context(chunks: list[int]) -> None:
    model = tiny_transformer()
    seq = torch.randint(0, 11, (3, sum(chunks)))
    state, start = None, 0
    for n in chunks:
        logits, state = model(seq[:, start:start + n], state)
        start += n
        # What the window-only model computes: the last ≤ CTX tokens from position 0, no state.
        reference, _ = model(seq[:, max(start - CTX, 0):start])
        torch.testing.assert_close(logits, reference[:, -n:], atol=1e-5, rtol=0)
        assert torch.equal(state[0], seq[:, max(start - (CTX - 1), 0):start])


@torch.no_grad()
def test_state_layout() -> None:
    model = tiny_transformer(n_layer=3)
    hs = model.config.n_embd // model.config.n_head
    _, state = model(torch.zeros(2, 5, dtype=torch.long))
    assert len(state) == 1 + 2 * 3 and state[0].shape == (2, 5)
    assert all(s.shape == (2, 2, 5, hs) for s in state[1:])
    _, state = model(torch.zeros(2, CTX - 5, dtype=torch.long), state)  # the window slides by one
    assert state[0].shape == (2, CTX - 1)
    assert all(s.shape == (2, 2, 0, hs) for s in state[1:])  # stale: positions shifted, so recompute next time


def test_training_forward_backward_with_dropout() -> None:
    model = tiny_transformer(dropout=0.1).train()
    logits, _ = model(torch.randint(0, 11, (4, CTX)))
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["transformer", "lstm"])
@pytest.mark.parametrize("options", [{"temperature": 1.0}, {"temperature": 0.8, "top_k": 5}, {"temperature": 0}])
def test_generate_with_and_without_cache_same_tokens(name: str, options: dict) -> None:
    model = tiny_transformer() if name == "transformer" else tiny_recurrent(name)
    cached = list(generate(model, [1, 2, 3], 40, seed=5, **options))
    assert len(cached) == 40
    assert list(generate(model, [1, 2, 3], 40, seed=5, use_cache=False, **options)) == cached


@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_generate_batch_streams(name: str) -> None:
    model = tiny_transformer() if name == "transformer" else tiny_recurrent(name)
    prompt = [4] * 20  # longer than the context: fed in chunks
    one = [step[0] for step in generate_batch(model, prompt, 1, 40, seed=3)]
    assert one == list(generate(model, prompt, 40, seed=3))
    steps = list(generate_batch(model, prompt, 4, 40, seed=3))
    assert len(steps) == 40 and all(len(s) == 4 for s in steps)
    streams = list(zip(*steps, strict=True))
    assert len(set(streams)) == 4  # independent samples
    assert list(generate_batch(model, prompt, 4, 40, seed=3, use_cache=False)) == steps
    # Greedy streams start from the same state, so each is the single greedy continuation.
    greedy = list(generate(model, prompt, 40, temperature=0))
    assert all(list(s) == greedy for s in zip(*generate_batch(model, prompt, 3, 40, temperature=0), strict=True))


def test_beam_search_unchanged_by_the_cache() -> None:
    model = tiny_transformer()
    for prompt in ([1], list(range(11)) * 2):
        assert beam_search(model, prompt, 30, beam_size=4) == beam_search(WindowOnly(model), prompt, 30, beam_size=4)
    # Beams that finish drop out of the batch: the state is indexed with a mask.
    assert beam_search(model, [1], 30, beam_size=4, stop_token=3) == \
        beam_search(WindowOnly(model), [1], 30, beam_size=4, stop_token=3)


@pytest.mark.parametrize("window", [CTX, 5])
def test_stream_nll_unchanged_by_the_cache(window: int) -> None:
    model = tiny_transformer()
    tokens = torch.randint(0, 11, (300,))
    nll, count = stream_nll(model, tokens, window, streams=4)
    nll_ref, count_ref = stream_nll(WindowOnly(model), tokens, window, streams=4)
    assert count == count_ref == 299
    assert nll == pytest.approx(nll_ref, rel=1e-6)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@torch.no_grad()
def test_recurrent_carried_state_equals_whole_sequence(name: str) -> None:
    model = tiny_recurrent(name)
    seq = torch.randint(0, 11, (3, 30))
    whole, _ = model(seq)
    state, parts = None, []
    for start in range(0, 30, 7):
        logits, state = model(seq[:, start:start + 7], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=0)


def test_the_most_probable_token_survives_any_top_p() -> None:
    """Found by fuzzing the server: top_p 5e-324 rounds to 0 in float32 and used to drop every token."""
    from genlab.generation import filter_logits

    logits = torch.tensor([[0.5, 2.0, -1.0]])
    for top_p in (5e-324, 1e-45, 1e-8):
        assert torch.isfinite(filter_logits(logits, top_k=1, top_p=top_p)).tolist() == [[False, True, False]]
