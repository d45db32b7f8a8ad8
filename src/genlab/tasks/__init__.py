"""Tasks join a model family to its data: what a batch is, what is saved beside the weights, how to
sample and how to evaluate. The training loop (genlab.trainer) and the run orchestration (genlab.api)
never ask which family they hold; they call the family's task.

    task.DataConfig                                   options of the family's data (a dataclass)
    task.prepare(data_cfg, model_cls, train_cfg, dist, run=None) -> Prepared
    task.load_artifacts(run) -> artifacts             e.g. the tokenizer
    task.sample(model, artifacts, config, **options)  writes to the terminal or files
    task.evaluate(model, artifacts, config, data, split) -> report dict
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Prepared:
    """A family's data, ready for the trainer."""

    shapes: dict[str, int]  # model config fields the data decides (vocabulary size, image size, ...)
    train_batch: Callable[[int], Any]  # step -> batch for this process
    val_data: Any  # passed to model.evaluate
    info: dict[str, Any]  # facts recorded in config.json (source, split sizes and fractions)
    artifacts: Any = None  # saved beside the weights (tokenizer, class names)
    save_artifacts: Callable[[Any], None] = field(default=lambda run: None)
