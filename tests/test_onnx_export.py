"""ONNX export (`genlab export RUN --format onnx`, genlab.onnx_export): every exported kind runs in onnxruntime as in
PyTorch, on batches of other sizes than the traced one (the Transformer's cache step on pasts of other lengths); a
language model decodes step by step through ONNX, its state fed back, as genlab does (the Transformer restarting its
window past the context, as its sidecar says); the CLI writes the graph and its sidecar atomically and fails in one
line; the examples/ scripts run an export without genlab."""

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra: pip install 'genlab[onnx]'")
pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra: pip install 'genlab[onnx]'")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import genlab  # noqa: E402
from genlab.cli import main  # noqa: E402
from genlab.errors import ConfigError  # noqa: E402
from genlab.generation import generate  # noqa: E402
from genlab.models.gan.adversarial import GAN, GANConfig  # noqa: E402
from genlab.models.lm.transformer import TransformerConfig, TransformerLM  # noqa: E402
from genlab.models.vae.vae import VAE, VAEConfig  # noqa: E402
from genlab.onnx_export import export_onnx, sidecar_path, transformer_step  # noqa: E402
from genlab.tasks.images import IMAGE_GEN  # noqa: E402
from genlab.text_encoders import pool  # noqa: E402
from tests.helpers import TINY_TEXT, train_tiny_lms  # noqa: E402
from tests.test_diffusion import randomize_zero_init, short_run, tiny_model  # noqa: E402
from tests.test_image_task import _env, assert_one_line_error, cli  # noqa: E402, F401 (_env: autouse fixture)
from tests.test_text_to_image import CAPTIONS, randomize, scratch_spec  # noqa: E402
from tests.test_vae import SHAPES, make_tiny_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECURRENT = ["rnn", "lstm", "gru"]
LMS = [*RECURRENT, "transformer"]
TOL = 1e-4
PROMPTS = CAPTIONS + [""]  # five prompts of different lengths (padding), the empty one among them
ARTIFACTS = {"channels": 1, "image_size": 16, "num_classes": 4, "class_names": SHAPES}


def example(name: str):
    """A script of examples/ as a module (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_onnx(path: Path, **inputs: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


def export_with_cli(*args: object) -> list[tuple[Path, Path]]:
    """`genlab export ARGS` in this process (module fixtures cannot use the `cli` helper's capsys); returns the
    renames it made, (temporary file, destination) pairs."""
    renames: list[tuple[Path, Path]] = []
    replace = os.replace

    def record(src: str, dst: str) -> None:
        renames.append((Path(src), Path(dst)))
        replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", record)
        mp.setattr(sys, "argv", ["genlab", "export", *map(str, args)])
        try:
            main()
        except SystemExit as e:
            assert not e.code, e.code
    return renames


def close(got: np.ndarray, want: torch.Tensor) -> None:
    diff = float(np.abs(got - want.detach().numpy()).max())
    assert diff <= TOL, diff


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                          env=env, timeout=300)


# --- language models: trained briefly, exported through the CLI ---

@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[tuple[Path, Path]]]]:
    """Each LM trained on a tiny corpus and exported by `genlab export RUN --format onnx` in this process, with the
    renames the export made. The Transformer has two blocks, so two key-value caches to keep apart."""
    trained = train_tiny_lms(tmp_path_factory.mktemp("lm"), LMS, max_steps=100,
                             per_model={"transformer": {"n_layer": 2}})
    return {name: (out, export_with_cli(out, "--format", "onnx")) for name, (out, _) in trained.items()}


@pytest.mark.parametrize("name", LMS)
def test_cli_writes_graph_and_sidecar_atomically(lm_runs: dict, name: str) -> None:
    run, renames = lm_runs[name]
    graph, side = run / "model.onnx", run / "model.onnx.json"
    # Each file was written beside its destination under a temporary name, then renamed into place.
    assert [dst for _, dst in renames] == [graph, side]
    assert all(src.parent == run and src.name.startswith(f".{dst.name}.") for src, dst in renames)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    meta = json.loads(side.read_text())
    assert meta["model"] == name and meta["kind"] == "language_model_step" and meta["file"] == "model.onnx"
    assert meta["check"]["max_abs_diff"] <= TOL
    # The sidecar describes the graph as it is: names, dtypes, shapes with the dynamic axes by name.
    proto = onnx.load(str(graph))
    dtypes = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool"}
    for specs, values in ((meta["inputs"], proto.graph.input), (meta["outputs"], proto.graph.output)):
        assert [s["name"] for s in specs] == [v.name for v in values]
        for s, v in zip(specs, values, strict=True):
            assert dtypes[v.type.tensor_type.elem_type] == s["dtype"]
            assert [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] == s["shape"]
    assert all(axis in meta["axes"] for s in meta["inputs"] for axis in s["shape"] if isinstance(axis, str))


@pytest.mark.parametrize("name", RECURRENT)
def test_lm_step_equals_pytorch_on_other_batch_sizes(lm_runs: dict, name: str) -> None:
    run, _ = lm_runs[name]
    model = genlab.load(run, device="cpu")
    meta = json.loads((run / "model.onnx.json").read_text())
    shapes = {s["name"]: s["shape"] for s in meta["inputs"]}
    for batch in (1, 5):
        sizes = {"batch": batch, "tokens": 4}
        feed = {"tokens": torch.randint(0, model.config.vocab_size, [sizes.get(d, d) for d in shapes["tokens"]])}
        feed |= {s["input"]: torch.randn([sizes.get(d, d) for d in shapes[s["input"]]]) for s in meta["state"]}
        with torch.no_grad():
            logits, state = model(feed["tokens"], tuple(feed[s["input"]] for s in meta["state"]))
        for got, want in zip(run_onnx(run / "model.onnx", **feed), [logits, *state], strict=True):
            close(got, want)


def test_transformer_cache_step_equals_pytorch(lm_runs: dict) -> None:
    """New tokens after random keys and values of 0, some or context − 1 earlier tokens, on other batch sizes and
    lengths than the traced ones: the logits and every block's keys and values of all tokens are PyTorch's. Past
    length 0 is the full-window computation (genlab's step without a cache)."""
    run, _ = lm_runs["transformer"]
    model = genlab.load(run, device="cpu")
    c = model.config
    meta = json.loads((run / "model.onnx.json").read_text())
    assert [s["input"] for s in meta["state"]] == ["past_key_0", "past_value_0", "past_key_1", "past_value_1"]
    for batch, past, new in [(1, 0, c.context_length), (5, 0, 3), (4, 7, 5), (3, c.context_length - 1, 1)]:
        tokens = torch.randint(0, c.vocab_size, (batch, new))
        pasts = {s["input"]: torch.randn(batch, c.n_head, past, c.n_embd // c.n_head) for s in meta["state"]}
        with torch.no_grad():
            h, presents = model._run(tokens, tuple(pasts.values()))
            logits = model.head(h)
            if past == 0:
                close(logits.numpy(), model(tokens)[0])
        got = run_onnx(run / "model.onnx", tokens=tokens, **pasts)
        assert got[1].shape == (batch, c.n_head, past + new, c.n_embd // c.n_head)
        for g, want in zip(got, [logits, *presents], strict=True):
            close(g, want)


@pytest.mark.parametrize("long_prompt", [False, True])
def test_transformer_greedy_decode_through_onnx_equals_genlab(lm_runs: dict, long_prompt: bool) -> None:
    """The sidecar's cache protocol, followed with onnxruntime alone, decodes greedily as genlab's `generate`, token
    for token, for three contexts' worth of tokens: steps with the cache while the stream fits the context, then a
    window recomputed from position 0 at each step; a prompt longer than the context restarts at once."""
    run, _ = lm_runs["transformer"]
    model = genlab.load(run, device="cpu")
    meta = json.loads((run / "model.onnx.json").read_text())
    ctx = meta["context_length"]
    gen = torch.Generator().manual_seed(0)
    prompt = [meta["start_id"], *torch.randint(0, meta["vocab_size"], (ctx + 3 if long_prompt else 4,),
                                               generator=gen).tolist()]
    want = list(generate(model, prompt, 3 * ctx, temperature=0))
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    shapes = {s["name"]: s["shape"] for s in meta["inputs"]}
    empty = {s["input"]: np.zeros([{"batch": 1, "past": 0}.get(d, d) for d in shapes[s["input"]]], np.float32)
             for s in meta["state"]}
    seen, new, pasts, got, restarts = list(prompt), list(prompt), empty, [], []
    while len(got) < len(want):
        restarts.append(pasts["past_key_0"].shape[2] + len(new) > ctx)
        if restarts[-1]:
            new, pasts = seen[-ctx:], empty
        out = dict(zip(outputs, session.run(None, {"tokens": np.array([new]), **pasts}), strict=True))
        pasts = {s["input"]: out[s["output"]] for s in meta["state"]}
        new = [int(out["logits"][0, -1].argmax())]
        seen, got = seen + new, got + new
    assert got == want
    # The prompt and then one step per token up to the context's last position ran with the cache; the rest restarted.
    assert restarts.count(False) == max(ctx - len(prompt) + 1, 0) and restarts[-1]


@pytest.mark.parametrize("name", LMS)
def test_lm_decodes_through_onnx_as_genlab(lm_runs: dict, name: str) -> None:
    """A prompt, then one token at a time for longer than the context, the state fed back each step: ONNX's logits
    follow genlab's (its key-value cache and sliding window for the Transformer, hidden states for the others)."""
    run, _ = lm_runs[name]
    model = genlab.load(run, device="cpu")
    lm = example("onnx_lm").OnnxLanguageModel(run / "model.onnx")
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.config.vocab_size, (3, 5 + 30), generator=gen)  # past the 16-token context
    state, onnx_state = None, lm.initial_state(3)
    for chunk in [tokens[:, :5], *tokens[:, 5:].split(1, dim=1)]:
        with torch.no_grad():
            logits, state = model(chunk, state)
        onnx_logits, onnx_state = lm.feed(onnx_state, chunk.numpy())
        close(onnx_logits, logits[:, -1])


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_example_generates_genlab_greedy_text(lm_runs: dict, name: str) -> None:
    run, _ = lm_runs[name]
    expected = genlab.sample(run, prompt="em", max_new_tokens=40, temperature=0.0, out=io.StringIO())
    r = run_example("onnx_lm.py", str(run / "model.onnx"), "--prompt", "em", "--max-new-tokens", "40",
                    "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "em" + expected + "\n" and expected.strip()
    assert not r.stderr  # onnxruntime agrees with the graph's shapes (it warns at each call otherwise)
    r = run_example("onnx_lm.py", str(run / "model.onnx"), "--num-samples", "3", "--max-new-tokens", "20",
                    "--top-k", "5", "--seed", "0")
    assert r.returncode == 0 and r.stdout.count("--- sample") == 3, r.stderr


# --- image generators ---

@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny conditional diffusion run (EMA weights lagging the trained ones), exported elsewhere with --out."""
    root = tmp_path_factory.mktemp("diffusion")
    run = short_run(make_tiny_npz(root / "tiny.npz"), root / "run", max_steps=10)
    out = root / "exports" / "unet.onnx"
    export_with_cli(run, "--format", "onnx", "--out", out)
    return run, out


def test_diffusion_step_uses_ema_weights(diffusion_run: tuple[Path, Path]) -> None:
    run, path = diffusion_run
    assert sidecar_path(path).is_file() and not (run / "model.onnx").exists()
    model = genlab.load(run, device="cpu")
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["kind"] == "diffusion_step" and meta["null_label"] == 4 and meta["prediction"] == "v"
    assert len(meta["schedule"]["alphas_cumprod"]) == 100
    x, t = torch.randn(5, 1, 16, 16), torch.tensor([0, 10, 50, 99, 7])
    labels = torch.tensor([0, 1, 2, 3, 4])  # 4: the null label
    with torch.no_grad():
        want, trained = model.ema(x, t, labels), model.denoiser(x, t, labels)
    close(run_onnx(path, x_t=x, t=t, label=labels)[0], want)
    assert (want - trained).abs().max() > 10 * TOL  # so the check above tells the weights apart


def test_diffusion_step_with_patches_folded_into_channels(tmp_path: Path) -> None:
    run = short_run(make_tiny_npz(tmp_path / "tiny.npz"), tmp_path / "run", patch_size=2)
    path = tmp_path / "unet.onnx"
    export_with_cli(run, "--format", "onnx", "--out", path)
    model = genlab.load(run, device="cpu")
    x, t, labels = torch.randn(3, 1, 16, 16), torch.tensor([0, 50, 99]), torch.tensor([0, 3, 4])
    with torch.no_grad():
        want = model.ema(x, t, labels)
    assert want.abs().max() > 10 * TOL  # trained past the zero-initialised head: the check can fail
    close(run_onnx(path, x_t=x, t=t, label=labels)[0], want)


def test_example_samples_diffusion_as_genlab_ddim(diffusion_run: tuple[Path, Path], tmp_path: Path) -> None:
    """The example's numpy DDIM loop over the exported step gives genlab's deterministic DDIM images."""
    run, path = diffusion_run
    model = genlab.load(run, device="cpu")
    mod = example("onnx_images")
    onnx_model = mod.OnnxImageModel(path)
    z = torch.randn(3, 16 * 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 3])
    want = model.decode(z, labels)  # DDIM, η = 0, the run's steps and guidance
    got = mod.ddim(onnx_model, z.reshape(3, 1, 16, 16).numpy(), {"label": labels.numpy()}, onnx_model.null_condition(3),
                   model.config.sample_steps, model.config.guidance)
    close(got, want)
    png = tmp_path / "sevens.png"
    r = run_example("onnx_images.py", str(path), "--label", "square", "--num-samples", "4", "--steps", "3",
                    "--out", str(png))
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(png).size == (2 + 2 * 18, 2 + 2 * 18)  # 2 × 2 images of 16 pixels, 2 between


def _export(model: torch.nn.Module, path: Path) -> dict:
    side = export_onnx(IMAGE_GEN.onnx_graph(model, ARTIFACTS), path, model.registry_name, {})
    return json.loads(side.read_text())


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_vae_decoder(arch: str, tmp_path: Path) -> None:
    """A class-conditional conv VAE takes labels; a text-conditioned MLP VAE the pooled states of the prompt."""
    text = {"text_encoder": "scratch", "text_spec": scratch_spec()} if arch == "mlp" else {"conditional": True}
    model = randomize(VAE(VAEConfig(in_channels=1, resolution=16, n_classes=4, arch=arch, latent_dim=4, hidden=16,
                                    conv_channels=4, **text))).eval()
    meta = _export(model, tmp_path / "vae.onnx")
    assert meta["kind"] == "vae_decoder" and meta["pixel_range"] == "unit"
    z = torch.randn(5, 4)
    if arch == "conv":
        labels = torch.tensor([0, 1, 2, 3, 1])
        close(run_onnx(tmp_path / "vae.onnx", z=z, label=labels)[0], model.decode(z, labels))
    else:
        states, mask = model.text.states(PROMPTS)
        got = run_onnx(tmp_path / "vae.onnx", z=z, text_embedding=pool(states, mask).detach())[0]
        close(got, model.decode(z, prompts=PROMPTS))
        assert meta["text_encoder"]["kind"] == "scratch" and not meta["text_encoder"]["exported"]


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_gan_generator_uses_ema_weights(arch: str, tmp_path: Path) -> None:
    """A class-conditional DCGAN takes labels; a text-conditioned MLP GAN the pooled states of the prompt. Both
    export the EMA generator, which sampling uses."""
    text = {"text_encoder": "scratch", "text_spec": scratch_spec()} if arch == "mlp" else {"conditional": True}
    model = randomize(GAN(GANConfig(channels=1, image_size=16, num_classes=4, arch=arch, latent_dim=4, g_width=8,
                                    d_width=8, **text))).eval()
    meta = _export(model, tmp_path / "gan.onnx")
    assert meta["kind"] == "gan_generator" and "EMA" in meta["description"] and meta["pixel_range"] == "symmetric"
    z = torch.randn(5, 4)
    if arch == "dcgan":
        labels = torch.tensor([3, 1, 2, 0, 1])
        got, want = run_onnx(tmp_path / "gan.onnx", z=z, label=labels)[0], model.decode(z, labels)
        with torch.no_grad():
            trained = model.G(z, labels)
    else:
        states, mask = model.G_ema.text.states(PROMPTS)
        got = run_onnx(tmp_path / "gan.onnx", z=z, text_embedding=pool(states, mask).detach())[0]
        want = model.decode(z, prompts=PROMPTS)
        with torch.no_grad():
            trained = model.G(z, PROMPTS)
    close(got, want)
    assert (want - trained).abs().max() > 10 * TOL


@pytest.mark.parametrize("cross_attention", [True, False])
def test_text_diffusion_step(cross_attention: bool, tmp_path: Path) -> None:
    """With cross-attention the step takes the prompt's token states and mask (padded: prompts differ in length);
    without, their masked mean. The sidecar holds the empty prompt's, the null condition of guidance."""
    model = randomize_zero_init(tiny_model(num_classes=0, text_encoder="scratch", text_spec=scratch_spec(),
                                           cross_attention=cross_attention))
    meta = _export(model, tmp_path / "unet.onnx")
    x, t = torch.randn(5, 1, 16, 16), torch.tensor([999, 500, 3, 0, 250])
    states, mask = model.ema.text.states(PROMPTS)
    condition = {"text_states": states.detach(), "text_mask": mask} if cross_attention else \
        {"text_embedding": pool(states, mask).detach()}
    with torch.no_grad():
        want = model.ema(x, t, prompts=PROMPTS)
    close(run_onnx(tmp_path / "unet.onnx", x_t=x, t=t, **condition)[0], want)
    empty = {k: torch.tensor(v) for k, v in meta["empty_prompt"].items()}
    with torch.no_grad():
        want = model.ema(x[:1], t[:1], prompts=[""])
    close(run_onnx(tmp_path / "unet.onnx", x_t=x[:1], t=t[:1], **empty)[0], want)


# --- errors ---

def test_errors_are_one_line(lm_runs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture) -> None:
    run, _ = lm_runs["lstm"]
    code, _, err = cli(["export", run, "--format", "torchscript"], monkeypatch, capsys)
    assert_one_line_error(code, err, "'torchscript'", "onnx")
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    code, _, err = cli(["train", "ngram", "--data", corpus, "--order", "2", "--out", tmp_path / "kn"], monkeypatch,
                       capsys)
    assert code == 0, err
    code, _, err = cli(["export", tmp_path / "kn", "--format", "onnx"], monkeypatch, capsys)
    assert_one_line_error(code, err, "arpa")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    code, _, err = cli(["export", run, "--format", "onnx", "--out", tmp_path / "x.onnx"], monkeypatch, capsys)
    assert_one_line_error(code, err, "pip install 'genlab[onnx]'")
    assert not (tmp_path / "x.onnx").exists()


def test_transformer_context_too_short_for_the_check() -> None:
    model = TransformerLM(TransformerConfig(vocab_size=5, context_length=5, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ConfigError, match="at least 6 tokens; this run's is 5"):
        transformer_step(model, None)


def test_failed_check_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export whose onnxruntime outputs differ from PyTorch's (an exporter bug) is refused before any write."""
    import genlab.onnx_export

    model = randomize(VAE(VAEConfig(in_channels=1, resolution=16, latent_dim=4, hidden=16))).eval()
    path = tmp_path / "vae.onnx"
    path.write_bytes(b"old")
    monkeypatch.setattr(genlab.onnx_export, "max_abs_diff", lambda *args: 0.5)
    with pytest.raises(RuntimeError, match="differ from PyTorch's by 0.5"):
        _export(model, path)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["vae.onnx"]
