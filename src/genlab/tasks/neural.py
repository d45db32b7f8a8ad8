"""The families trained by gradient steps (text LMs, image models): data → `Prepared` → the shared Trainer."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from genlab import __version__
from genlab.checkpoint import RunDir
from genlab.config import to_dict
from genlab.distributed import setup, teardown
from genlab.trainer import TrainConfig, Trainer


@dataclass
class Prepared:
    """A family's data, ready for the trainer."""

    shapes: dict[str, int]  # model config fields the data decides (vocabulary size, image size, ...)
    train_batch: Callable[[int], Any]  # step -> batch for this process
    val_data: Any  # passed to model.evaluate
    info: dict[str, Any]  # facts recorded in config.json (source, split sizes and fractions)
    artifacts: Any = None  # saved beside the weights (tokenizer, class names)
    save_artifacts: Callable[[Any], None] = field(default=lambda run: None)


class NeuralTask:
    """Base of the families trained by gradient steps: runs `prepare` and the shared Trainer."""

    DataConfig: type

    def config_sections(self, model_cls: type) -> dict[str, type]:
        return {"model": model_cls.Config, "data": self.DataConfig, "train": TrainConfig}

    def prepare(self, data_cfg: Any, model_cls: type, train_cfg: TrainConfig, dist: Any,
                run: RunDir | None = None, model_cfg: Any = None) -> Prepared:
        raise NotImplementedError

    def train(self, name: str, model_cls: type, cfg: dict[str, Any], run: RunDir, overwrite: bool,
              resume: bool, on_validation: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
        train_cfg: TrainConfig = cfg["train"]
        dist = setup(train_cfg.device)
        finished = False
        try:
            torch.manual_seed(train_cfg.seed)
            prepared = self.prepare(cfg["data"], model_cls, train_cfg, dist, run if resume else None, cfg["model"])
            model_cfg = dataclasses.replace(cfg["model"], **prepared.shapes)
            torch.manual_seed(train_cfg.seed)  # the same initial weights whatever data preparation drew
            model = model_cls(model_cfg)
            if not resume and callable(getattr(model, "load_pretrained", None)):
                model.load_pretrained()  # e.g. a language model's weights as its frozen text encoder
            torch.manual_seed(train_cfg.seed + dist.rank)  # each process its own dropout noise
            trainer = Trainer(model, prepared.train_batch, prepared.val_data, train_cfg, dist, run, on_validation)
            if resume:
                trainer.load_checkpoint(run)
                if dist.is_main:
                    run.truncate_metrics(trainer.step)
            elif dist.is_main:
                run.prepare_new(overwrite)
                run.write_config({
                    "genlab_version": __version__,
                    "model": name,
                    "model_config": to_dict(model_cfg),
                    "data": to_dict(cfg["data"]),
                    "train": to_dict(train_cfg),
                    "data_info": prepared.info,
                })
                prepared.save_artifacts(run)
            summary = trainer.fit()
            finished = True
        finally:
            trainer = None  # its DDP wrappers hold the process group: drop them before leaving it
            teardown(finished)
        state = "interrupted at" if summary["interrupted"] else "finished after"
        message = (f"{state} {summary['steps']} steps ({summary['train_seconds']:.0f} s); best validation loss "
                   f"{summary['best_val']:.4f}; run directory: {run.path}")
        if summary["interrupted"]:
            message += f"\nresume with: genlab train {name} --out {run.path} --resume"
        return summary | {"run_dir": str(run.path), "is_main": dist.is_main, "message": message}

    # --- what `genlab tune` minimises ---

    def tune_objective_name(self, model_name: str) -> str:
        return "best validation loss (the trainer's periodic validation)"

    def tune_objective(self, run: RunDir, summary: dict[str, Any]) -> float:
        """The value of a finished trial: its best validation loss."""
        return summary["best_val"]

    def export(self, model: Any, path: Any, fmt: str) -> None:
        """Write `model` as `path` in format `fmt`: "onnx" is the graph of the family's
        `onnx_graph(model, artifacts)`, beside it a sidecar `path`.json (genlab.onnx_export)."""
        from genlab.errors import ConfigError

        if fmt != "onnx":
            raise ConfigError(f"unknown export format {fmt!r} for {model.registry_name!r} runs: neural runs export to "
                              "onnx (--format onnx), n-gram runs to arpa")
        from genlab.onnx_export import export_onnx

        export_onnx(self.onnx_graph(model, model.artifacts), path, model.registry_name,
                    model.run_config["model_config"])
