"""Typed configs: dataclasses with documented fields, built from dicts with unknown keys rejected.

Precedence is defaults < config file (JSON or YAML) < command-line `--key value` overrides.
"""

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from genlab.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """A search range of `genlab tune`: numbers from low to high (integers when `integer`), on a log scale when
    `log` (for rates and scales that matter by their order of magnitude)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def describe(self) -> dict[str, Any]:
        return {"type": "int" if self.integer else "float", "low": self.low, "high": self.high, "log": self.log}


@dataclasses.dataclass(frozen=True)
class Choice:
    """A search range of `genlab tune`: one of a few values."""

    choices: tuple

    def describe(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}


def option(default: Any, help: str, search: Range | Choice | None = None) -> Any:
    """A dataclass field with a one-line help text, shown by `genlab models show NAME`, and the range that
    `genlab tune` searches by default (None: not searched unless a search-space file names it)."""
    metadata = {"help": help, "search": search}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(type, optional) for annotations such as `int`, `float | None`, `Optional[str]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _coerce(value: Any, tp: Any, name: str) -> Any:
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"option {name!r} cannot be empty")
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if typing.get_origin(base) is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name!r} expects {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `values`, converting strings and rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option(s) in {where}: {', '.join(unknown)}; valid options: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], k) for k, v in values.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def describe(cls: type, defaults: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(name, default, help) for every option of a config dataclass; `defaults` replace field defaults."""
    defaults = defaults or {}
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("derived"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, repr(defaults.get(f.name, default)), f.metadata.get("help", "")))
    return rows


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict of sections (model, data, train)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping with sections model/data/train")
    unknown = set(data) - {"model", "data", "train"}
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {sorted(unknown)}; use model, data, train")
    return data


def split_overrides(
    overrides: dict[str, Any], sections: dict[str, type]
) -> dict[str, dict[str, Any]]:
    """Assign each `--key value` override to the one config section that has that field."""
    out: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in overrides.items():
        # Fields the data decides (metadata "derived") take no override, even when another section has an
        # option of the same name (a GAN's image_size is set from the data's --image-size).
        owners = [name for name, cls in sections.items()
                  if key in {f.name for f in dataclasses.fields(cls) if not f.metadata.get("derived")}]
        if not owners:
            valid = sorted({f.name for cls in sections.values() for f in dataclasses.fields(cls)})
            raise ConfigError(f"unknown option --{key.replace('_', '-')}; valid options: "
                              + ", ".join("--" + v.replace("_", "-") for v in valid))
        for owner in owners:
            out[owner][key] = value
    return out


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int) -> None:
    """Decoding options of every language model (neural and n-gram), checked before the first token."""
    if temperature < 0:
        raise ConfigError("--temperature must be ≥ 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ConfigError("--top-k must be at least 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError("--top-p must be in (0, 1]")
    if max_new_tokens < 0:
        raise ConfigError("--max-new-tokens must be ≥ 0")
