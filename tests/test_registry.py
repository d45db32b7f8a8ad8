"""The model registry: its name → module table matches what the modules register, and count-based models
start without PyTorch (the n-gram path is timed against KenLM's lmplz as a whole process)."""

import importlib
import subprocess
import sys

import pytest

from genlab.errors import ConfigError
from genlab.registry import MODEL_MODULES, MODELS, get_model_class, model_names


def test_table_matches_registrations():
    for module in set(MODEL_MODULES.values()):
        importlib.import_module(module)
    assert set(MODELS) == set(MODEL_MODULES)
    for name, module in MODEL_MODULES.items():
        assert MODELS[name].__module__ == module
        assert get_model_class(name) is MODELS[name]
    assert model_names() == sorted(MODEL_MODULES)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ConfigError, match="known models: diffusion, gan"):
        get_model_class("gpt5")


NGRAM_WITHOUT_TORCH = """
import sys
from genlab.cli import main
sys.argv = ["genlab", "train", "ngram", "--order", "3", "--data", sys.argv[1], "--out", sys.argv[2]]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded[:5]
print("ok")
"""


def test_ngram_training_never_imports_torch(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    out = subprocess.run([sys.executable, "-c", NGRAM_WITHOUT_TORCH, str(corpus), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
    assert (tmp_path / "run" / "ngram.safetensors").is_file()
