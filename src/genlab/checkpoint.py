"""Run directories: everything needed to load, resume, evaluate and sample, with atomic writes.

    RUN/config.json            model name, model/data/train configs, data facts (split sizes, fractions)
    RUN/tokenizer.json         the tokenizer (text models)
    RUN/model.safetensors      best weights by validation loss (what `genlab.load` returns)
    RUN/checkpoint.safetensors last weights + optimizer + RNG + carried state, for --resume
    RUN/metrics.jsonl          one JSON object per log line

Weights are safetensors and configs JSON: nothing in a run directory is ever unpickled.
PyTorch is imported only by the tensor functions, so count-based runs (n-grams) start without it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from genlab.errors import CheckpointError, RunExistsError

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
TOKENIZER = "tokenizer.json"


# --- atomic file writes ---

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_file(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes a temporary file beside `path`, which is then fsynced and renamed over `path`:
    readers see the old file or the new one, never half (for writers that stream, e.g. safetensors' save_file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see atomic_write_file)."""
    atomic_write_file(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save as st_save

    # Cloning breaks storage sharing (tied weights), which safetensors refuses to serialise.
    flat = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file, turning any corruption into a CheckpointError."""
    from safetensors.torch import load as st_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing file: {path}")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        from safetensors import safe_open  # metadata needs the file API

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e}); retrain or restore it") from None
    return tensors, metadata


def load_weights_into(module: torch.nn.Module, path: Path) -> None:
    tensors, _ = load_tensors(path)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path} does not fit this model (written by a different model or config): {first}"
        ) from None


def load_neural(cls: type, run: RunDir, config: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """Build `cls` from a run's saved config and load its best weights, on `device`, in eval mode."""
    from genlab.config import from_dict
    from genlab.errors import ConfigError

    try:
        model_cfg = from_dict(cls.Config, config["model_config"], f"{run.path}/config.json")
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{run.path}/config.json does not describe a {config['model']} model: {e}") from None
    model = cls(model_cfg)
    load_weights_into(model, run.file(WEIGHTS))
    return model.to(device).eval()


# --- run directory ---

class RunDir:
    """A training run's directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def prepare_new(self, overwrite: bool) -> None:
        """Create an empty run directory, refusing to clobber an existing one unless asked."""
        if self.path.exists() and not self.path.is_dir():
            raise RunExistsError(f"{self.path} exists and is not a directory")
        if self.exists():
            if not overwrite:
                raise RunExistsError(
                    f"run directory {self.path} already exists; "
                    "pass --overwrite to replace it or --resume to continue it"
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def read_config(self) -> dict[str, Any]:
        path = self.file(CONFIG)
        if not self.path.is_dir():
            raise CheckpointError(f"no run directory or model file at {self.path}")
        if not path.is_file():
            raise CheckpointError(f"{self.path} is not a genlab run directory (no {CONFIG})")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is corrupt: {e}") from None
        if not isinstance(config, dict) or "model" not in config:
            raise CheckpointError(f"{path} is not a genlab run config (no 'model' entry)")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.file(CONFIG), config)

    # metrics.jsonl is append-only during a run; resume cuts it back to the checkpoint's step.
    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.file(METRICS), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.file(METRICS)
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        return records

    def truncate_metrics(self, last_step: int) -> None:
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step]
        atomic_write_text(self.file(METRICS), "".join(json.dumps(r) + "\n" for r in kept))
