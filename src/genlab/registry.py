"""Name → model class. The CLI, `genlab.load` and the contract tests all read this one table.

A model registers itself with `@register("lstm", task="text")`; its class has a `Config` dataclass attribute
whose fields are the model's options. `task` names the family's task (genlab.tasks.TASKS), which the layers
above look up with `genlab.tasks.task_for`: a model never imports its task.
"""

import importlib
from collections.abc import Callable
from typing import Any

from genlab.errors import ConfigError

MODELS: dict[str, type] = {}

# Name -> the module whose @register defines it. Only the asked-for model's module is imported, so an n-gram
# run never loads PyTorch (a second of start-up); tests check this table against what the modules register.
MODEL_MODULES = {
    "diffusion": "genlab.models.diffusion.ddpm",
    "gan": "genlab.models.gan.adversarial",
    "gru": "genlab.models.lm.rnn",
    "lstm": "genlab.models.lm.rnn",
    "ngram": "genlab.models.ngram.model",
    "rnn": "genlab.models.lm.rnn",
    "transformer": "genlab.models.lm.transformer",
    "vae": "genlab.models.vae.vae",
}


def register(name: str, task: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in MODELS:
            raise RuntimeError(f"model name {name!r} registered twice")
        MODELS[name] = cls
        cls.registry_name = name
        cls.task_name = task
        return cls

    return add


def get_model_class(name: str) -> Any:
    if name not in MODEL_MODULES:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_MODULES))}")
    importlib.import_module(MODEL_MODULES[name])
    return MODELS[name]


def model_names() -> list[str]:
    return sorted(MODEL_MODULES)
