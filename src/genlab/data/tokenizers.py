"""Character, word and BPE tokenizers, each saved as JSON beside the model.

All three share one interface: `encode(text) -> list[int]`, `decode(ids) -> str`, `vocab_size`,
`unknown_chars(text)`, `to_dict()`; `train_tokenizer` builds one from training text and `tokenizer_from_dict`
reloads it. `start_ids` gives the token that begins every sequence a language model sees.
"""

import json
from collections import Counter

from genlab.errors import CheckpointError, ConfigError

UNK, EOS = "<unk>", "<eos>"
UNK_ID = 0  # <unk> in the char and word vocabularies (byte-level BPE has none)


class CharTokenizer:
    """One token per Unicode character; characters unseen in training map to <unk> (id 0)."""

    kind = "char"

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.index = {t: i for i, t in enumerate(vocab)}

    @classmethod
    def train(cls, text: str, lowercase: bool = False, max_vocab: int | None = None) -> "CharTokenizer":
        return cls([UNK] + sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        get = self.index.get
        return [get(c, UNK_ID) for c in text]

    def unknown_chars(self, text: str) -> int:
        """Characters of `text` that encode to <unk>."""
        return sum(c not in self.index for c in text)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] if i else "\ufffd" for i in ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        return cls(d["vocab"])


class WordTokenizer:
    """Whitespace-separated words; each line ends in <eos>; words beyond `max_vocab` map to <unk>."""

    kind = "word"

    def __init__(self, vocab: list[str], lowercase: bool):
        self.vocab, self.lowercase = vocab, lowercase
        self.index = {t: i for i, t in enumerate(vocab)}
        self.eos = self.index[EOS]

    @classmethod
    def train(cls, text: str, lowercase: bool = False, max_vocab: int | None = None) -> "WordTokenizer":
        counts = Counter((text.lower() if lowercase else text).split())
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        # Most frequent first, ties alphabetical, so the vocabulary is deterministic.
        words = sorted(counts, key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            words = words[: max(max_vocab - 2, 0)]
        return cls([UNK, EOS] + words, lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        get, ids = self.index.get, []
        lines = text.split("\n")
        for i, line in enumerate(lines):
            ids.extend(get(w, UNK_ID) for w in line.split())
            if i < len(lines) - 1:
                ids.append(self.eos)
        return ids

    def unknown_chars(self, text: str) -> int:
        """Characters of `text` in words that encode to <unk>."""
        words = (text.lower() if self.lowercase else text).split()
        return sum(len(w) for w in words if w not in self.index)

    def decode(self, ids: list[int]) -> str:
        out, line = [], []
        for i in ids:
            if i == self.eos:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(self.vocab[i])
        return "".join(out) + " ".join(line)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vocab": self.vocab, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: dict) -> "WordTokenizer":
        return cls(d["vocab"], d["lowercase"])


class BPETokenizer:
    """Byte-level BPE (Hugging Face `tokenizers`), so any text encodes without <unk>."""

    kind = "bpe"

    def __init__(self, hf_tokenizer, lowercase: bool):
        self.hf, self.lowercase = hf_tokenizer, lowercase

    @classmethod
    def train(cls, text: str, lowercase: bool = False, max_vocab: int | None = None) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=max_vocab or 2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        lines = (text.lower() if lowercase else text).splitlines(keepends=True)
        tok.train_from_iterator(lines, trainer=trainer)
        return cls(tok, lowercase)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        # Encode line by line: the pre-tokenizer's cost grows with the length of one input string.
        ids: list[int] = []
        for enc in self.hf.encode_batch(text.splitlines(keepends=True)):
            ids.extend(enc.ids)
        return ids

    def unknown_chars(self, text: str) -> int:
        return 0  # every byte has a token

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lowercase": self.lowercase, "hf": json.loads(self.hf.to_str())}

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(json.dumps(d["hf"])), d["lowercase"])


TOKENIZERS: dict[str, type] = {t.kind: t for t in (CharTokenizer, WordTokenizer, BPETokenizer)}
Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer


def train_tokenizer(kind: str, text: str, lowercase: bool = False, max_vocab: int | None = None) -> Tokenizer:
    if kind not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {kind!r}; use one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind].train(text, lowercase=lowercase, max_vocab=max_vocab)


def start_ids(tokenizer: Tokenizer) -> list[int]:
    """The line separator's token: a language model's text starts with it, so the first real token is predicted."""
    return tokenizer.encode("\n")[-1:]


def tokenizer_from_dict(d: dict) -> Tokenizer:
    try:
        return TOKENIZERS[d["kind"]].from_dict(d)
    except Exception as e:  # any malformed JSON structure
        raise CheckpointError(f"tokenizer file is corrupt: {e}") from None

