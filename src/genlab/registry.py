"""Name → model class. The CLI, `genlab.load` and the contract tests all read this one table.

A model registers itself with `@register("lstm", task="text")`; its class has a `Config` dataclass attribute
whose fields are the model's options. `task` names the family's task (genlab.tasks.TASKS), which the layers
above look up with `genlab.tasks.task_for`: a model never imports its task.
"""

from collections.abc import Callable
from typing import Any

from genlab.errors import ConfigError

MODELS: dict[str, type] = {}


def register(name: str, task: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in MODELS:
            raise RuntimeError(f"model name {name!r} registered twice")
        MODELS[name] = cls
        cls.registry_name = name
        cls.task_name = task
        return cls

    return add


def _import_models() -> None:
    # Importing the model package runs every @register; done lazily so `import genlab` stays light.
    import genlab.models  # noqa: F401


def get_model_class(name: str) -> Any:
    _import_models()
    if name not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model {name!r}; known models: {known}")
    return MODELS[name]


def model_names() -> list[str]:
    _import_models()
    return sorted(MODELS)
