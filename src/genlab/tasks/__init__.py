"""Tasks join a model family to its data: what a batch is, what is saved beside the weights, how to
sample and how to evaluate. The training loop (genlab.trainer) and the run orchestration (genlab.api)
never ask which family they hold; they call the family's task.

    task.DataConfig                                   options of the family's data (a dataclass)
    task.config_sections(model_cls) -> {name: dataclass}   the option sections (model, data[, train])
    task.train(name, model_cls, configs, run, overwrite, resume) -> summary
    task.prepare(data_cfg, model_cls, train_cfg, dist, run=None, model_cfg=None) -> Prepared
    task.load_artifacts(run, config) -> artifacts     e.g. the tokenizer (run is None for a bare model file)
    task.sample(model, artifacts, config, **options)  writes to the terminal or files
    task.evaluate(model, artifacts, config, data, split) -> report dict
"""

import importlib
from typing import Any

# Task name (a model's `task_name`, set by @register) -> "module:object" of the task serving that family.
# Imported on first use: the n-gram task never loads PyTorch.
TASKS = {"text": "genlab.tasks.text:TEXT_LM", "ngram": "genlab.tasks.ngram:NGRAM_TASK",
         "images": "genlab.tasks.images:IMAGE_GEN"}


def task_for(model: Any) -> Any:
    """The task of a registered model class or instance."""
    module, name = TASKS[model.task_name].split(":")
    return getattr(importlib.import_module(module), name)
