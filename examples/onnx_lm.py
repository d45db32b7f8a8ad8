"""Generate text with a genlab language model exported to ONNX, without genlab or PyTorch: numpy, onnxruntime and,
for BPE runs, tokenizers.

    genlab export runs/names --format onnx     # writes runs/names/model.onnx and its sidecar model.onnx.json
    python examples/onnx_lm.py runs/names/model.onnx --prompt ma --num-samples 5 --temperature 0.8 --seed 0

The sidecar says what the graph takes and returns. Each call gets the state tensors and returns them updated: a
recurrent model's (rnn, lstm, gru) hidden states, a Transformer's key-value cache. A Transformer's last tokens are
kept here too: once a stream outgrows the context, each step recomputes them from position 0 (the sidecar's
`cache`), as genlab does.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


class Tokenizer:
    """genlab's char, word and bpe tokenizers, rebuilt from the sidecar's `tokenizer`."""

    def __init__(self, spec: dict):
        self.kind, self.lowercase = spec["kind"], spec.get("lowercase", False)
        if self.kind == "bpe":
            from tokenizers import Tokenizer as HFTokenizer

            self.hf = HFTokenizer.from_str(json.dumps(spec["hf"]))
        else:
            self.vocab = spec["vocab"]
            self.index = {t: i for i, t in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        text = text.lower() if self.lowercase else text
        if self.kind == "char":
            return [self.index.get(c, 0) for c in text]  # 0: unknown
        if self.kind == "word":
            ids: list[int] = []
            for i, line in enumerate(text.split("\n")):
                ids += ([self.index["<eos>"]] if i else []) + [self.index.get(w, 0) for w in line.split()]
            return ids
        return [i for line in text.splitlines(keepends=True) for i in self.hf.encode(line).ids]

    def decode(self, ids: list[int]) -> str:
        if self.kind == "char":
            return "".join(self.vocab[i] if i else "\ufffd" for i in ids)
        if self.kind == "word":
            lines, line = [], []
            for i in ids:
                if self.vocab[i] == "<eos>":
                    lines, line = lines + [" ".join(line)], []
                else:
                    line.append(self.vocab[i])
            return "\n".join(lines + [" ".join(line)])
        return self.hf.decode(ids)


class OnnxLanguageModel:
    """The exported step and its state: `feed` runs new tokens and returns the logits after the last one."""

    def __init__(self, path: str | Path):
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.meta = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.context = self.meta.get("context_length")  # a Transformer's window; None for recurrent models
        self.per_call = self.meta["inputs"][0]["shape"][1]  # tokens per call: "tokens" (any number) or a count

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        """A new stream's state: zero hidden states, or a Transformer's empty window and the keys and values of no
        tokens (past length 0)."""
        shapes = {s["name"]: s["shape"][1:] for s in self.meta["inputs"]}
        state = {s["input"]: np.zeros((batch, *[0 if d == "past" else d for d in shapes[s["input"]]]), np.float32)
                 for s in self.meta["state"]}
        if self.context is not None:
            state["window"] = np.zeros((batch, 0), np.int64)
        return state

    def feed(self, state: dict[str, np.ndarray], tokens: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits (B, V) after the last of `tokens` (B, T), and the state after all of them."""
        state = dict(state)
        window = state.pop("window", None)
        if window is not None:  # a Transformer: its keys and values are those of the window's tokens
            past = window.shape[1]
            window = np.concatenate([window, tokens], axis=1)[:, -self.context:]
            if past + tokens.shape[1] > self.context:
                # Past the context the window slides and every token's (learned) position changes: recompute the
                # window from position 0.
                tokens, state = window, {k: v[:, :, :0] for k, v in state.items()}
        # An Elman RNN's graph takes one token per call; the others take any number.
        for chunk in [tokens] if self.per_call == "tokens" else np.split(tokens, tokens.shape[1], axis=1):
            out = dict(zip(self.outputs, self.session.run(None, {"tokens": chunk, **state}), strict=True))
            state = {s["input"]: out[s["output"]] for s in self.meta["state"]}
        if window is not None:
            state["window"] = window
        return out["logits"][:, -1], state


def sample(lm: OnnxLanguageModel, prompt_ids: list[int], num_samples: int, max_new_tokens: int,
           temperature: float, top_k: int | None, rng: np.random.Generator) -> np.ndarray:
    """(num_samples, max_new_tokens) token ids continuing the prompt, every stream in one batch."""
    state = lm.initial_state(num_samples)
    logits, state = lm.feed(state, np.tile(np.array([prompt_ids], np.int64), (num_samples, 1)))
    out = np.zeros((num_samples, max_new_tokens), np.int64)
    for i in range(max_new_tokens):
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            z = logits.astype(np.float64) / temperature
            if top_k is not None and top_k < z.shape[-1]:
                z[z < np.sort(z, axis=-1)[:, -top_k, None]] = -np.inf
            p = np.exp(z - z.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            nxt = np.array([rng.choice(len(row), p=row) for row in p])
        out[:, i] = nxt
        logits, state = lm.feed(state, nxt[:, None])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the exported model.onnx (its sidecar model.onnx.json beside it)")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    lm = OnnxLanguageModel(args.model)
    tokenizer = Tokenizer(lm.meta["tokenizer"])
    prompt_ids = [lm.meta["start_id"]] + tokenizer.encode(args.prompt)  # genlab's texts begin with a line break
    ids = sample(lm, prompt_ids, args.num_samples, args.max_new_tokens, args.temperature, args.top_k,
                 np.random.default_rng(args.seed))
    for i, row in enumerate(ids):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + tokenizer.decode(row.tolist()))


if __name__ == "__main__":
    main()
