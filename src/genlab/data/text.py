"""Text corpora: built-in sets, files and folders, deterministic train/validation/test splits.

A corpus is split either by line (one item per line: names, sentences; lines are shuffled with a fixed
seed, then cut by the fractions) or by contiguous blocks (running text: the first part trains, the next
validates, the last tests, as nanoGPT does for Tiny Shakespeare). A folder holding files named
`*train*.txt`, `*valid*.txt` and `*test*.txt` (Penn Treebank's layout) keeps its own splits.
"""

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from genlab.config import option
from genlab.errors import ConfigError, DataError

SPLIT_SEED = 0  # fixed so that a corpus splits the same way whatever the training seed


@dataclass
class TextSourceConfig:
    """Where text comes from, how it is split and tokenized (shared by neural and n-gram models)."""

    data: str = option("names", "a .txt file, a folder of .txt files, or a built-in name (see `genlab data list`)")
    tokenizer: str = option("char", "char, word or bpe")
    lowercase: bool = option(False, "word/bpe tokenizers: lower-case the text first")
    max_vocab: int | None = option(None, "word: keep the most frequent words, others become <unk>; "
                                         "bpe: vocabulary size (default 2000)")
    split: str = option("auto", "line, block, or auto (by line when the text has no blank lines)")
    valid_fraction: float = option(0.1, "fraction of the corpus held out for validation")
    test_fraction: float = option(0.1, "fraction of the corpus held out for testing")

    def validate(self) -> None:
        if self.split not in ("auto", "line", "block"):
            raise ConfigError(f"--split must be line, block or auto, not {self.split!r}")
        if not (0 <= self.valid_fraction < 1 and 0 <= self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise ConfigError("--valid-fraction and --test-fraction must be in [0, 1) and sum to less than 1")


@dataclass
class TextDataConfig(TextSourceConfig):
    seq_len: int = option(64, "tokens per training window (the Transformer's context length)")

    def validate(self) -> None:
        super().validate()
        if self.seq_len < 1:
            raise ConfigError("--seq-len must be at least 1")


@dataclass
class TextCorpus:
    name: str
    train: str
    valid: str
    test: str
    split: str  # line, block, or given (the folder had its own split files)
    fractions: dict[str, float]

    def part(self, split: str) -> str:
        if split not in ("train", "valid", "test"):
            raise ConfigError(f"unknown split {split!r}; use train, valid or test")
        return getattr(self, split)

    def describe(self) -> dict:
        return {
            "source": self.name,
            "split": self.split,
            "fractions": self.fractions,
            "characters": {s: len(self.part(s)) for s in ("train", "valid", "test")},
        }


# --- built-in data sets ---

def _census_names() -> str:
    """US census first and last names from the `names` package, one per line, lower-cased."""
    try:
        folder = resources.files("names")
    except ModuleNotFoundError:
        raise DataError("the built-in 'names' data set needs the `names` package: pip install names") from None
    seen: dict[str, None] = {}
    for fname in ("dist.female.first", "dist.male.first", "dist.all.last"):
        for line in (folder / fname).read_text(encoding="ascii").splitlines():
            if line.strip():
                seen.setdefault(line.split()[0].lower(), None)
    return "\n".join(seen) + "\n"


BUILTIN_TEXT: dict[str, tuple[Callable[[], str], str]] = {
    "names": (_census_names, "US census first and last names (package `names`), one per line, lower-cased"),
}


# --- reading files ---

def read_text_file(path: Path) -> str:
    """Read a UTF-8 text file, refusing empty, binary and non-UTF-8 files with a clear message."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"data file is empty: {path}")
    if b"\x00" in data[:65536]:
        raise DataError(f"{path} looks like a binary file (it holds NUL bytes); genlab expects UTF-8 text")
    try:
        return data.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it, e.g. with iconv"
        ) from None


def _split_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for split, key in (("train", "train"), ("valid", "valid"), ("test", "test")):
        matches = sorted(p for p in folder.glob("*.txt") if key in p.name)
        if len(matches) == 1:
            found[split] = matches[0]
    return found if len(found) == 3 else None


def _split_lines(text: str, valid_fraction: float, test_fraction: float) -> tuple[str, str, str]:
    lines = [line for line in text.split("\n") if line.strip()]
    random.Random(SPLIT_SEED).shuffle(lines)
    n_valid, n_test = int(len(lines) * valid_fraction), int(len(lines) * test_fraction)
    n_train = len(lines) - n_valid - n_test
    parts = lines[:n_train], lines[n_train:n_train + n_valid], lines[n_train + n_valid:]
    return tuple("".join(line + "\n" for line in part) for part in parts)  # type: ignore[return-value]


def _split_blocks(text: str, valid_fraction: float, test_fraction: float) -> tuple[str, str, str]:
    n = len(text)
    a = int(n * (1 - valid_fraction - test_fraction))
    b = int(n * (1 - test_fraction))
    return text[:a], text[a:b], text[b:]


def load_corpus(cfg: TextSourceConfig) -> TextCorpus:
    """Load `cfg.data` and split it as configured."""
    source = cfg.data
    path = Path(source).expanduser()
    fractions = {"valid": cfg.valid_fraction, "test": cfg.test_fraction}
    if source in BUILTIN_TEXT and not path.exists():
        text = BUILTIN_TEXT[source][0]()
    elif path.is_dir():
        given = _split_files(path)
        if given:
            parts = {s: read_text_file(p) for s, p in given.items()}
            return TextCorpus(str(path), parts["train"], parts["valid"], parts["test"], "given", {})
        files = sorted(path.glob("*.txt"))
        if not files:
            raise DataError(f"folder {path} holds no .txt files")
        text = "".join(t if t.endswith("\n") else t + "\n" for t in (read_text_file(f) for f in files))
    elif path.exists() or "/" in source or source.endswith(".txt"):
        text = read_text_file(path)
    else:
        raise DataError(f"no such file, folder or built-in data set: {source!r} (built-in: {', '.join(BUILTIN_TEXT)})")
    mode = cfg.split
    if mode == "auto":
        mode = "block" if "\n\n" in text.strip() else "line"
    splitter = _split_lines if mode == "line" else _split_blocks
    train, valid, test = splitter(text, cfg.valid_fraction, cfg.test_fraction)
    if not train.strip():
        raise DataError(f"{source}: the training split is empty; the corpus is too small to split")
    return TextCorpus(source, train, valid, test, mode, fractions)


def evaluation_text(cfg: TextSourceConfig, data: str | None, split: str) -> tuple[str, str]:
    """(source, text) to evaluate on: a file given with --data is scored whole; otherwise `split` of the
    corpus (the training corpus, or a --data folder or built-in set, split the same way)."""
    if data is not None and Path(data).expanduser().is_file():
        return data, read_text_file(Path(data).expanduser())
    source = data if data is not None else cfg.data
    corpus = load_corpus(dataclasses.replace(cfg, data=source))
    text = corpus.part(split)
    if not text.strip():
        raise DataError(f"the {split} split of {source} is empty; choose another --split")
    return f"{source} ({split} split)", text
