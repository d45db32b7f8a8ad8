"""Export to ONNX: a trained network as one ONNX graph that onnxruntime runs without genlab or PyTorch, and a JSON
sidecar (`MODEL.onnx.json`) that says what goes in, what comes out and how to use it.

    rnn, lstm, gru  one decoding step:  tokens (B, T), h [, c] (B, layers, hidden) -> logits (B, T, V), next_h
                                        [, next_c]  (rnn: T = 1)
    transformer     one cached step:    tokens (B, T), past keys and values (B, heads, P, hs) per block -> logits
                                        (B, T, V), present keys and values (B, heads, P+T, hs); the caller keeps
                                        the last tokens to restart the window past the context
    vae             the decoder:        z (B, Z) [, condition] -> images (B, C, H, W) in [0, 1]
    gan             the generator:      z (B, Z) [, condition] -> images (B, C, H, W) in [-1, 1]  (EMA weights)
    diffusion       one U-Net step:     x_t (B, C, H, W), t (B,) [, condition] -> the prediction (ε, v or x₀)
                                        (EMA weights); the sampler's loop stays outside, the noise schedule is in
                                        the sidecar

A condition is an input: a class index, or what the run's text encoder makes of a prompt (its token states and
mask, or their masked mean). Text encoders are not exported; the sidecar names the encoder and holds the empty
prompt's condition (the null condition of classifier-free guidance).

The graph comes from `torch.onnx.export(dynamo=True)`: torch.export traces the network and onnxscript translates
it (PyTorch's maintained exporter; the TorchScript one is deprecated). The axes the sidecar names (batch, tokens,
past, text_tokens) are dynamic. Every export is checked before it is written: onnxruntime runs it on random inputs
whose dynamic axes differ from the traced ones; the largest difference from PyTorch's outputs goes in the sidecar,
and over MAX_DIFF the export is refused (an exporter bug, not a rounding error).
"""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genlab import __version__
from genlab.checkpoint import atomic_write_bytes, atomic_write_json
from genlab.errors import ConfigError
from genlab.nn.conditioning import Condition, TextConditioner
from genlab.text_encoders.base import pool

INSTALL = "pip install 'genlab[onnx]'"
TRACE_SIZE, CHECK_SIZE = 2, 3  # every dynamic axis, traced (≥ 2: torch.export fixes sizes 0 and 1) and checked
MAX_DIFF = 1e-3  # the check's limit on |onnxruntime − PyTorch|: float32 rounding stays far below it


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the graph, as the sidecar describes it."""

    name: str
    shape: tuple[int | str, ...]  # a string names a dynamic axis
    dtype: str  # numpy's name: float32, int64, bool
    description: str
    high: int = 0  # int64 inputs: values lie in [0, high)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "description": self.description}


@dataclass
class OnnxGraph:
    """A network to export: `module(*inputs)` returns the outputs, both in the order of their specs (a forward
    that takes `*inputs` is how the exporter is told every input's dynamic axes)."""

    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    axes: dict[str, str]  # each dynamic axis and what it counts
    info: dict[str, Any]  # the sidecar's account of the model: kind, description, tokenizer, pixel range, ...


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def random_inputs(specs: list[TensorSpec], size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs whose dynamic axes all have `size`: standard normal floats, int64 in [0, high), masks whose
    first position is set (a prompt has at least one token)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec in specs:
        shape = [size if isinstance(d, str) else d for d in spec.shape]
        if spec.dtype == "int64":
            out.append(torch.randint(0, spec.high, shape, generator=gen))
        elif spec.dtype == "bool":
            mask = torch.rand(shape, generator=gen) < 0.7
            mask[..., 0] = True
            out.append(mask)
        else:
            out.append(torch.randn(shape, generator=gen))
    return tuple(out)


def export_onnx(graph: OnnxGraph, path: str | Path, model_name: str, model_config: dict[str, Any]) -> Path:
    """Trace `graph`, check it with onnxruntime, then write `path` and its sidecar (each atomically, the sidecar
    last); returns the sidecar's path. The module is moved to the CPU and put in eval mode."""
    onnx, ort = _require_onnx()
    path = Path(path)
    module = graph.module.cpu().eval()
    dims = {name: torch.export.Dim(name) for name in graph.axes}
    dynamic = tuple({i: dims[d] for i, d in enumerate(spec.shape) if isinstance(d, str)} for spec in graph.inputs)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(module, random_inputs(graph.inputs, TRACE_SIZE), dynamo=True, verbose=False,
                                    input_names=[s.name for s in graph.inputs],
                                    output_names=[s.name for s in graph.outputs],
                                    dynamic_shapes={"inputs": dynamic})
    proto = program.model_proto
    _name_axes(proto, graph.inputs + graph.outputs)
    data = proto.SerializeToString()
    diff = max_abs_diff(module, data, graph.inputs, CHECK_SIZE)
    if not diff <= MAX_DIFF:  # NaN too
        raise RuntimeError(f"the exported graph's outputs differ from PyTorch's by {diff:.3g} in onnxruntime; "
                           f"{path} was not written")
    check = {"onnxruntime": ort.__version__, "axis_size": CHECK_SIZE, "max_abs_diff": diff}
    atomic_write_bytes(path, data)
    sidecar = {
        "format": "genlab onnx export", "version": 1, "file": path.name, "model": model_name,
        "kind": graph.info["kind"], "description": graph.info["description"],
        "inputs": [s.describe() for s in graph.inputs],
        "outputs": [s.describe() for s in graph.outputs],
        "axes": graph.axes,
        **graph.info,
        "opset": max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")),
        "exported_with": {"genlab": __version__, "torch": torch.__version__, "onnx": onnx.__version__},
        "check": check,
        "model_config": model_config,
    }
    atomic_write_json(sidecar_path(path), sidecar)
    return sidecar_path(path)


def max_abs_diff(module: nn.Module, data: bytes, specs: list[TensorSpec], size: int, seed: int = 1) -> float:
    """The largest |onnxruntime − PyTorch| over every output, on random inputs whose dynamic axes have `size`."""
    import onnxruntime as ort

    inputs = random_inputs(specs, size, seed)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    got = session.run(None, {s.name: x.numpy() for s, x in zip(specs, inputs, strict=True)})
    with torch.no_grad():
        want = module(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    return max(float(np.abs(g.astype(np.float64) - w.double().numpy()).max(initial=0.0))
               for g, w in zip(got, want, strict=True))


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401 - what torch.onnx's exporter translates with
    except ImportError as e:
        raise ConfigError(f"ONNX export needs the onnx extra ({e.name} is not installed): {INSTALL}") from None
    return onnx, onnxruntime


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporter's internals warn and log about themselves (deprecations, absent torchvision ops): nothing the
    # user can act on, and the CLI would print each as a warning line.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _name_axes(proto: Any, specs: list[TensorSpec]) -> None:
    """Write each input's and output's shape into the graph as the sidecar gives it, and drop the intermediate shapes
    (onnxruntime infers them): the exporter may leave a traced size where an axis is dynamic (after an LSTM), which
    onnxruntime then warns about at every call."""
    del proto.graph.value_info[:]
    values = {v.name: v for v in [*proto.graph.input, *proto.graph.output]}
    for spec in specs:
        dims = values[spec.name].type.tensor_type.shape.dim
        for dim, size in zip(dims, spec.shape, strict=True):
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


# --- language models: one decoding step ---

class LanguageModelStep(nn.Module):
    """forward(tokens, *state) -> (logits, *next_state): a language model's step with its state flattened."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, state = self.model(inputs[0], inputs[1:])
        return (logits, *state)


class TransformerCacheStep(nn.Module):
    """forward(tokens, k_0, v_0, ..., k_{L-1}, v_{L-1}) -> (logits, k_0, v_0, ...): the Transformer's new tokens at
    positions P..P+T-1 after every block's cached keys and values (B, n_head, P, hs) of P earlier tokens (P = 0: none,
    the window from its start), and the keys and values of all P+T."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # The model's cached step itself, without the window bookkeeping of its forward: the caller keeps the
        # tokens and decides when the window restarts (the sidecar's `cache`).
        h, kv = self.model._run(inputs[0], inputs[1:])
        return (self.model.head(h), *kv)


def language_model_step(model: nn.Module, tokenizer: Any) -> OnnxGraph:
    """The decoding step of a neural language model, with its tokenizer in the sidecar."""
    build = LM_STEPS.get(model.registry_name)
    if build is None:
        raise ConfigError(f"{model.registry_name!r} runs do not export to ONNX; language models that do: "
                          f"{', '.join(LM_STEPS)}")
    return build(model, tokenizer)


def recurrent_step(model: nn.Module, tokenizer: Any) -> OnnxGraph:
    """rnn, lstm, gru: the state is the hidden state of every layer (and an LSTM's cell state), batch first."""
    c = model.config
    names = ("h", "c") if model.cell is nn.LSTM else ("h",)
    what = {"h": "hidden state", "c": "cell state"}
    shape = ("batch", c.n_layer, c.n_hidden)
    state = [TensorSpec(n, shape, "float32", f"{what[n]} of each layer before the new tokens") for n in names]
    nxt = [TensorSpec(f"next_{n}", shape, "float32", f"{what[n]} of each layer after them") for n in names]
    info = {"description": f"one decoding step of a {model.registry_name.upper()} language model: the new tokens "
                           "of each stream and its state in; logits and the next state out",
            "state": [{"input": n, "output": f"next_{n}", "initial": "zeros"} for n in names]}
    # LSTM and GRU become ONNX's LSTM and GRU operators; an Elman RNN's loop is unrolled at the traced length, so
    # its graph takes one token per call.
    elman = model.cell is nn.RNN
    if elman:
        info["description"] += " (one token per call)"
    return _lm_graph(model, tokenizer, LanguageModelStep(model), state, nxt, info, length=1 if elman else "tokens")


def transformer_step(model: nn.Module, tokenizer: Any) -> OnnxGraph:
    """transformer: one step with the key-value cache. The state is every block's keys and values, whose length (the
    `past` axis) grows with each call until the window restarts; the caller keeps the last tokens for that."""
    c = model.config
    ctx, hs = c.context_length, c.n_embd // c.n_head
    if ctx < 2 * CHECK_SIZE:  # the check feeds CHECK_SIZE new tokens after CHECK_SIZE past ones
        raise ConfigError(f"a Transformer exports to ONNX with a context of at least {2 * CHECK_SIZE} tokens; this "
                          f"run's is {ctx} (--seq-len)")
    pairs = [(f"{kind}_{i}", f"block {i}'s attention {kind}s") for i in range(c.n_layer) for kind in ("key", "value")]
    state = [TensorSpec(f"past_{n}", ("batch", c.n_head, "past", hs), "float32",
                        f"{what} of the tokens before the new ones") for n, what in pairs]
    nxt = [TensorSpec(f"present_{n}", ("batch", c.n_head, "past + tokens", hs), "float32",
                      f"{what} of those tokens and the new ones") for n, what in pairs]
    info = {"description": f"one decoding step of the Transformer language model (context {ctx} tokens) with its "
                           "key-value cache: the new tokens of each stream and every block's keys and values of "
                           "the tokens before them in; logits and the keys and values of all the tokens out",
            "context_length": ctx,
            "state": [{"input": f"past_{n}", "output": f"present_{n}", "initial": "empty (past length 0)"}
                      for n, _ in pairs],
            "cache": f"the new tokens sit at positions past..past + tokens - 1, which must stay below {ctx}. Start "
                     "each stream with past length 0 (every past_* of shape (batch, n_head, 0, head_size)) and feed "
                     "the start token and the prompt. Then feed each new token with the present_* outputs as the "
                     f"past_* inputs while past + tokens <= {ctx}. When that would exceed the context, recompute: "
                     f"past length 0 and the stream's last <= {ctx} tokens, the new ones included (positions are "
                     "learned and absolute, so once the window slides every key and value changes). The next "
                     "token's logits are the last position's. genlab does exactly this, so the outputs are the same"}
    return _lm_graph(model, tokenizer, TransformerCacheStep(model), state, nxt, info,
                     axes={"past": f"tokens before the new ones whose keys and values are given (0 at the start); "
                                   f"past + tokens <= {ctx}"})


LM_STEPS = {"rnn": recurrent_step, "lstm": recurrent_step, "gru": recurrent_step, "transformer": transformer_step}


def _lm_graph(model: nn.Module, tokenizer: Any, module: nn.Module, state: list[TensorSpec],
              next_state: list[TensorSpec], info: dict[str, Any], length: int | str = "tokens",
              axes: dict[str, str] | None = None) -> OnnxGraph:
    """A step graph: tokens and the state in, logits and the next state out (the state's pairs in `info`);
    `length`: the tokens per call, fixed or a dynamic axis; `axes`: the state's dynamic axes."""
    from genlab.data.tokenizers import start_ids

    v = model.config.vocab_size
    tokens = TensorSpec("tokens", ("batch", length), "int64", "token ids of each stream", high=v)
    logits = TensorSpec("logits", ("batch", length, v), "float32",
                        "next-token logits after each token (softmax gives probabilities)")
    axes = {"batch": "independent streams (any number)", **(axes or {})}
    if isinstance(length, str):
        axes[length] = "tokens fed in this call (any number)"
    return OnnxGraph(module, [tokens, *state], [logits, *next_state], axes, {
        "kind": "language_model_step",
        **info,
        "vocab_size": v,
        "start_id": start_ids(tokenizer)[0],
        "start": "every text the model saw began with the line break's token `start_id`: feed it before a prompt",
        "tokenizer": tokenizer.to_dict(),
        "tokenizer_note": "char: one id per character of `vocab`, 0 = unknown; word: whitespace words of `vocab`, "
                          "a line break is `<eos>`, 0 = `<unk>`; bpe: `hf` is a Hugging Face tokenizers JSON "
                          "(Tokenizer.from_str); `lowercase`: lower-case text before encoding",
    })


# --- image generators ---

class VAEDecoder(nn.Module):
    """z, condition -> mean images; the condition a class index (one-hot, as the VAE's) or a pooled text
    embedding."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        self.pooled = vae.text.pooled if vae.text is not None else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        z, *condition = inputs
        if self.pooled is None:
            return self.vae.decode(z, *condition)
        return torch.sigmoid(self.vae.decoder(z, self.pooled(condition[0])))


class GANGenerator(nn.Module):
    """z, condition -> images from the sampling generator (EMA weights when the run has them)."""

    def __init__(self, gan: nn.Module):
        super().__init__()
        self.net = gan.G_ema if gan.G_ema is not None else gan.G
        self.pooled = self.net.text.pooled if self.net.text is not None else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        z, *condition = inputs
        if self.pooled is None:
            return self.net(z, *condition)
        return torch.tanh(self.net.body(torch.cat([z, self.pooled(condition[0])], dim=1)))


class DiffusionStep(nn.Module):
    """x_t, t, condition -> the sampling denoiser's output (EMA weights when the run has them)."""

    def __init__(self, diffusion: nn.Module):
        super().__init__()
        self.net = diffusion.sampling_net

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x, t, *condition = inputs
        text = self.net.text
        if text is None:
            return self.net(x, t, *condition)
        if text.tokens is None:
            return self.net(x, t, cond=Condition(text.pooled(condition[0])))
        return self.net(x, t, cond=text.from_states(*condition))


def image_generator(model: nn.Module, artifacts: dict[str, Any]) -> OnnxGraph:
    """The network of an image model that makes images (or, for diffusion, one step towards them)."""
    build = IMAGE_GRAPHS.get(model.registry_name)
    if build is None:
        raise ConfigError(f"{model.registry_name!r} runs do not export to ONNX; image models that do: "
                          f"{', '.join(IMAGE_GRAPHS)}")
    return build(model, artifacts)


def vae_decoder(model: nn.Module, artifacts: dict[str, Any]) -> OnnxGraph:
    c = model.config
    inputs = [TensorSpec("z", ("batch", c.latent_dim), "float32", "latents; z ~ N(0, I) samples the prior")]
    inputs += _condition_inputs(model.conditional, c.n_classes, model.text, pooled_only=True)
    return _image_graph(model, artifacts, "vae_decoder", VAEDecoder(model), inputs,
                        "the VAE's decoder: latents to mean images E[x|z] (not noisy draws)",
                        _text_info(model.text, pooled_only=True))


def gan_generator(model: nn.Module, artifacts: dict[str, Any]) -> OnnxGraph:
    c = model.config
    module = GANGenerator(model)
    inputs = [TensorSpec("z", ("batch", c.latent_dim), "float32", "noise; z ~ N(0, I)")]
    inputs += _condition_inputs(model.conditional, c.num_classes, module.net.text, pooled_only=True)
    weights = "EMA" if model.G_ema is not None else "trained"
    return _image_graph(model, artifacts, "gan_generator", module, inputs, f"the GAN's generator ({weights} weights)",
                        _text_info(module.net.text, pooled_only=True))


def diffusion_step(model: nn.Module, artifacts: dict[str, Any]) -> OnnxGraph:
    c = model.config
    module = DiffusionStep(model)
    text = module.net.text
    pooled_only = text is not None and text.tokens is None
    image = ("batch", c.channels, c.image_size, c.image_size)
    inputs = [TensorSpec("x_t", image, "float32", "noisy images at timestep t"),
              TensorSpec("t", ("batch",), "int64", f"timestep of each image, 0..{c.timesteps - 1}", high=c.timesteps)]
    # The label table's last row is the null label of classifier-free guidance.
    inputs += _condition_inputs(model.conditional, c.num_classes + 1, text, pooled_only)
    info = _text_info(text, pooled_only)
    if model.conditional:
        info["null_label"] = model.null_label
    info |= {
        "prediction": c.prediction,
        "prediction_note": "x_t = sqrt(a) * x0 + sqrt(1 - a) * eps with a = alphas_cumprod[t]; the output is eps "
                           "(epsilon), v = sqrt(a) * eps - sqrt(1 - a) * x0 (v) or x0 (x0)",
        "guidance": c.guidance,
        "guidance_note": "classifier-free guidance: (1 + w) * out(condition) - w * out(null condition), where the "
                         "null condition is null_label or the empty prompt",
        "sampling_defaults": {"sampler": c.sampler, "steps": c.sample_steps, "eta": c.eta},
        "schedule": {"name": c.noise_schedule, "timesteps": c.timesteps,
                     "alphas_cumprod": model.schedule.alphas_cumprod.tolist()},
    }
    weights = "EMA" if model.ema is not None else "trained"
    outputs = [TensorSpec("prediction", image, "float32", f"the U-Net's prediction of {c.prediction}")]
    return _image_graph(model, artifacts, "diffusion_step", module, inputs, "one denoising step of the diffusion "
                        f"model's U-Net ({weights} weights): a sampler calls it once per step", info, outputs)


IMAGE_GRAPHS = {"vae": vae_decoder, "gan": gan_generator, "diffusion": diffusion_step}


def _condition_inputs(conditional: bool, num_labels: int, text: TextConditioner | None,
                      pooled_only: bool) -> list[TensorSpec]:
    """The inputs that stand for a condition: a class index, or a prompt as its text encoder's token states and
    mask (or their masked mean)."""
    if conditional:
        return [TensorSpec("label", ("batch",), "int64", "class index of each image", high=num_labels)]
    if text is None:
        return []
    d = text.encoder.dim
    if pooled_only:
        return [TensorSpec("text_embedding", ("batch", d), "float32",
                           "the prompt's text-encoder token states averaged over its real tokens")]
    return [TensorSpec("text_states", ("batch", "text_tokens", d), "float32",
                       "the prompt's text-encoder token states (padding positions are ignored)"),
            TensorSpec("text_mask", ("batch", "text_tokens"), "bool",
                       "True at the prompt's real tokens (the first position always), False at padding")]


def _text_info(text: TextConditioner | None, pooled_only: bool) -> dict[str, Any]:
    """The sidecar's account of a (not exported) text encoder, and the empty prompt's condition inputs."""
    if text is None:
        return {}
    spec = text.spec
    with torch.no_grad():
        states, mask = text.states([""])
    empty = {"text_embedding": pool(states, mask)} if pooled_only else {"text_states": states, "text_mask": mask}
    how = {"minilm": "all-MiniLM-L6-v2's last hidden states of [CLS] prompt [SEP] (sentence-transformers' token "
                     "embeddings, before pooling and normalisation)",
           "scratch": "the small Transformer trained with this model (its weights are in the run's "
                      "model.safetensors): genlab computes them, TextConditioner.states(prompts)",
           "lm": "the hidden states of the genlab language model the run was trained with (LMTextEncoder)"}
    return {
        "text_encoder": {"kind": spec["kind"], "dim": spec["dim"], "max_tokens": spec["max_tokens"],
                         "exported": False, "states": how.get(spec["kind"], "")},
        "empty_prompt": {k: v.tolist() for k, v in empty.items()},
    }


def _image_graph(model: nn.Module, artifacts: dict[str, Any], kind: str, module: nn.Module,
                 inputs: list[TensorSpec], description: str, info: dict[str, Any],
                 outputs: list[TensorSpec] | None = None) -> OnnxGraph:
    """A graph whose output is images (unless `outputs` says otherwise), with the image facts in its sidecar."""
    shape = ("batch", artifacts["channels"], artifacts["image_size"], artifacts["image_size"])
    pixels, to_uint8 = {"unit": ("[0, 1]", "round(x * 255)"),
                        "symmetric": ("[-1, 1]", "round((x + 1) * 127.5)")}[model.pixel_range]
    axes = {"batch": "images (any number)"}
    if any("text_tokens" in s.shape for s in inputs):
        axes["text_tokens"] = "tokens of the longest prompt in the batch"
    images = [TensorSpec("images", shape, "float32", f"images in {pixels}")]
    return OnnxGraph(module, inputs, outputs or images, axes, {
        "kind": kind, "description": description, "image_shape": list(shape[1:]), "pixel_range": model.pixel_range,
        "to_uint8": f"{to_uint8}, clipped to 0..255", "class_names": artifacts.get("class_names"), **info})
