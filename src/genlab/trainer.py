"""The one training loop, shared by every trainable model.

The loop owns what is common: device, seeds, DistributedDataParallel, the warm-up + cosine learning-rate
schedule, gradient clipping, periodic validation, progress bar, metrics log, checkpoints, --resume and
Ctrl-C. A model owns what is its own through a small duck-typed contract (as makemore shares one loop
across its models):

    model.networks() -> {name: nn.Module}                 modules to wrap in DDP (default {"model": model})
    model.configure_optimizers(cfg) -> {name: Optimizer}  (default: one AdamW over everything)
    model.train_step(batch, ctx) -> {metric: float}       calls ctx.optimize(name, loss) once per update
    model.evaluate(split_data, max_batches) -> {"loss": float, ...}   validation, lower loss is better

`ctx.run_dir` is the run directory on the main process (None elsewhere), for models that write pictures
while they train. A non-finite loss stops training with TrainingError; the last checkpoint is kept.
`ctx.carry` is a dict of tensors a model keeps across steps (an RNN's hidden state for truncated BPTT);
it is saved in checkpoints so a resumed run continues exactly.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from genlab.checkpoint import CHECKPOINT, WEIGHTS, RunDir, load_neural, load_tensors, save_tensors
from genlab.config import Range, option
from genlab.cpu import flush_denormals
from genlab.distributed import DistInfo, all_reduce_max, all_reduce_mean, pick_device
from genlab.errors import CheckpointError, ConfigError, TrainingError
from genlab.malloc import keep_freed_memory
from genlab.progress import progress_bar


@dataclass
class TrainConfig:
    max_steps: int = option(2000, "optimizer updates to run")
    max_seconds: float | None = option(None, "also stop after this many seconds of training; the schedule follows time")
    batch_size: int = option(32, "global batch size, divided among torchrun processes")
    lr: float = option(3e-3, "peak learning rate (AdamW)", Range(1e-4, 1e-2, log=True))
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak (cosine decay)")
    warmup_steps: int = option(100, "linear learning-rate warm-up steps")
    weight_decay: float = option(0.01, "AdamW weight decay on matrices (not on biases, norms, embeddings)",
                                 Range(1e-3, 0.3, log=True))
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.99, "AdamW beta2")
    grad_clip: float = option(1.0, "clip the global gradient norm to this; 0 disables")
    eval_interval: int = option(250, "validate and checkpoint every this many steps")
    eval_seconds: float | None = option(None, "also validate and checkpoint every this many seconds of training "
                                              "(e.g. what a time-budgeted tuning trial needs for its pruner)")
    eval_batches: int = option(50, "validation batches per periodic evaluation (`genlab eval` uses all)")
    log_interval: int = option(10, "steps between metric log lines")
    seed: int = option(1337, "random seed for initialisation, data order and dropout")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda, cuda:1, ...")
    tensorboard: bool = option(False, "also write TensorBoard event files to RUN/tb")
    precision: str = option("auto", "autocast of models that use it: auto (bf16 on CUDA where supported, else "
                                    "fp16 there; fp32 on the CPU), bf16, fp16 (CUDA, with loss scaling) or fp32")

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "eval_interval", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0:
            raise ConfigError("--lr must be positive")
        for name in ("max_seconds", "eval_seconds"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for full precision."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device (on the CPU use bf16 or fp32)")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def lr_multiplier(progress: float, step: int, cfg: TrainConfig) -> float:
    """Linear warm-up for `warmup_steps`, then cosine decay to `min_lr_ratio` at progress 1."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def default_optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (as nanoGPT): biases, norms and 1-D params are not decayed.

    The fused kernel (one pass over all parameters) where PyTorch has it: on the CPU the default is a Python loop
    of ~10 small ops per parameter tensor, a few percent of a small model's step."""
    decay = [p for p in params if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in params if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in decay + no_decay) or None
    return torch.optim.AdamW(groups, lr=lr or cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


class Trainable:
    """Defaults of the trainer contract; models mix this in and override what they need."""

    item_name = "samples"  # what the progress bar counts per second
    train_defaults: dict[str, Any] = {}  # TrainConfig values this family needs by default (a GAN's lr, ...)

    def networks(self) -> dict[str, nn.Module]:
        return {"model": self}  # type: ignore[dict-item]

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"model": default_optimizer(list(self.parameters()), cfg)}  # type: ignore[attr-defined]

    @classmethod
    def from_run(cls, run: Any, config: dict[str, Any], device: torch.device | str = "auto") -> nn.Module:
        """The model saved in `run`, on `device` ("auto": CUDA when present), in eval mode (see genlab.load)."""
        return load_neural(cls, run, config, pick_device(device) if isinstance(device, str) else device)


class StepContext:
    """What a model's `train_step` sees: wrapped networks, an `optimize` call, carried state."""

    def __init__(self, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], cfg: TrainConfig,
                 run_dir: Path | None = None, device: torch.device | None = None):
        self.nets = nets
        self.device = device or torch.device("cpu")
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none.
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.run_dir = run_dir
        self.optimizers = optimizers
        self.cfg = cfg
        self.carry: dict[str, torch.Tensor] = {}
        self.step = 0
        self.grad_norms: dict[str, float] = {}

    def autocast(self) -> Any:
        """Mixed precision for the forward pass (--precision), a no-op in full precision. Models opt in by
        running their forward under it."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """One update of optimizer `name`: zero grads, backward, clip, step (with loss scaling under fp16)."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
        else:
            loss.backward()
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.grad_norms[name] = float(norm)
        if self.scaler is not None:
            self.scaler.step(opt)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            opt.step()


# --- checkpoint (de)serialisation: everything as tensors + JSON metadata, no pickle ---

def _optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim.{name}.{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _load_optimizer(name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[field] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


class Trainer:
    """Runs `cfg.max_steps` updates of `model` on `train_batch(step)`, validating on `val_data`."""

    def __init__(
        self,
        model: nn.Module,
        train_batch: Callable[[int], Any],
        val_data: Any,
        cfg: TrainConfig,
        dist: DistInfo,
        run: RunDir | None = None,
        on_validation: Callable[[int, float, float], None] | None = None,
    ):
        """`on_validation(step, loss, progress)` is called after each periodic validation (main process), with the
        fraction of the budget used (`progress()`): what `genlab tune` feeds its pruner; it may raise to stop
        training (a pruned trial)."""
        self.model = model.to(dist.device)
        self.on_validation = on_validation
        self.train_batch = train_batch
        self.val_data = val_data
        self.cfg = cfg
        self.dist = dist
        self.run = run if dist.is_main else None
        self.optimizers = model.configure_optimizers(cfg)
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["base_lr"] = g["lr"]
        nets = model.networks()
        if dist.enabled:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            nets = {k: DistributedDataParallel(v, device_ids=ids) for k, v in nets.items()}
        self.ctx = StepContext(nets, self.optimizers, cfg, self.run.path if self.run is not None else None,
                               dist.device)
        self.step = 0  # updates completed
        self.best_val = math.inf
        self.elapsed = 0.0  # training seconds before this process started (resume)
        self.tb = None

    # --- checkpoints ---

    def save_checkpoint(self) -> None:
        if self.run is None:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        groups = {}
        for name, opt in self.optimizers.items():
            t, groups[name] = _optimizer_tensors(name, opt)
            tensors.update(t)
        tensors.update({f"carry.{k}": v for k, v in self.ctx.carry.items()})
        if self.ctx.scaler is not None:
            tensors["amp.scale"] = self.ctx.scaler.get_scale() * torch.ones(())
            tensors["amp.growth_tracker"] = torch.tensor(self.ctx.scaler.state_dict()["_growth_tracker"])
        tensors["rng.cpu"] = torch.get_rng_state()
        if self.dist.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.dist.device)
        meta = {
            "format": "genlab-checkpoint-1",
            "step": str(self.step),
            "best_val": repr(self.best_val),
            "elapsed": repr(self.elapsed_now()),
            "optimizers": json.dumps(groups),
        }
        save_tensors(self.run.file(CHECKPOINT), tensors, meta)

    def load_checkpoint(self, run: RunDir) -> None:
        """Restore everything `save_checkpoint` wrote (every rank reads the same file)."""
        tensors, meta = load_tensors(run.file(CHECKPOINT))
        if meta.get("format") != "genlab-checkpoint-1":
            raise CheckpointError(f"{run.file(CHECKPOINT)} is not a genlab training checkpoint")
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint does not fit this model: {str(e).splitlines()[0]}") from None
        groups = json.loads(meta["optimizers"])
        for name, opt in self.optimizers.items():
            _load_optimizer(name, opt, {k: v.to(self.dist.device) for k, v in tensors.items()}, groups[name])
        self.ctx.carry = {k[6:]: v.to(self.dist.device) for k, v in tensors.items() if k.startswith("carry.")}
        if self.ctx.scaler is not None and "amp.scale" in tensors:
            self.ctx.scaler.load_state_dict({**self.ctx.scaler.state_dict(), "scale": float(tensors["amp.scale"]),
                                             "_growth_tracker": int(tensors["amp.growth_tracker"])})
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.dist.device)
        self.step = int(meta["step"])
        self.best_val = float(meta["best_val"])
        self.elapsed = float(meta["elapsed"])

    def save_best(self) -> None:
        if self.run is not None:
            save_tensors(self.run.file(WEIGHTS), self.model.state_dict(), {"step": str(self.step)})

    # --- logging ---

    def log(self, record: dict[str, Any]) -> None:
        if self.run is None:
            return
        self.run.append_metrics(record)
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{record['split']}/{k}", v, record["step"])

    def elapsed_now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    def local_progress(self) -> float:
        """Fraction of the budget used: steps, or time when --max-seconds is the tighter bound."""
        p = self.step / self.cfg.max_steps
        if self.cfg.max_seconds is not None:
            p = max(p, self.elapsed_now() / self.cfg.max_seconds)
        return p

    def progress(self) -> float:
        return all_reduce_max(self.local_progress(), self.dist)  # every rank must agree on lr and on when to stop

    def validation_due(self) -> bool:
        """--eval-seconds: has that much training time passed since the last timed validation (all ranks agree)?"""
        if self.cfg.eval_seconds is None:
            return False
        due = all_reduce_max(float(self.elapsed_now() >= self._next_eval_seconds), self.dist) > 0
        if due:
            self._next_eval_seconds = self.elapsed_now() + self.cfg.eval_seconds
        return due

    def validate(self) -> float:
        self.model.eval()
        with torch.no_grad():
            metrics = self.model.evaluate(self.val_data, self.cfg.eval_batches)
        self.model.train()
        self.log({"step": self.step, "split": "val", **metrics})
        return metrics["loss"]

    def end_of_interval(self) -> None:
        """Validate, keep the best weights, write the resumable checkpoint."""
        if self.dist.is_main:
            val = self.validate() if self.val_data is not None else -float(self.step)
            if val < self.best_val:
                self.best_val = val
                self.save_best()
        self.save_checkpoint()
        if self.on_validation is not None and self.dist.is_main and self.val_data is not None:
            self.on_validation(self.step, val, self.local_progress())

    # --- the loop ---

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.run is not None and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(str(self.run.file("tb")))
        keep_freed_memory()
        with flush_denormals():
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self._t0 = time.perf_counter()
        self.model.train()
        # Under a time budget the step count is not known in advance: the bar counts steps without a total.
        bar = progress_bar(total=cfg.max_steps if cfg.max_seconds is None else None, initial=self.step,
                   disable=not self.dist.is_main,
                   dynamic_ncols=True, mininterval=0.5, unit="step")
        item_name = getattr(self.model, "item_name", "samples")
        window: dict[str, float] = {}
        window_items, window_t = 0.0, time.perf_counter()
        interrupted = False
        validated_at = self.step if self.step % cfg.eval_interval == 0 else -1  # a resumed run's last validation
        self._next_eval_seconds = self.elapsed_now() + (cfg.eval_seconds or math.inf)
        try:
            while self.step < cfg.max_steps:
                progress = self.progress()
                if progress >= 1.0:
                    break
                mult = lr_multiplier(progress, self.step, cfg)
                for opt in self.optimizers.values():
                    for g in opt.param_groups:
                        g["lr"] = g["base_lr"] * mult
                self.ctx.step = self.step
                metrics = self.model.train_step(self.train_batch(self.step), self.ctx)
                bad = [k for k, v in metrics.items() if not math.isfinite(v)]
                if bad:
                    where = f"; the last good checkpoint is kept in {self.run.path}" if self.run is not None else ""
                    raise TrainingError(f"training diverged at step {self.step + 1}: {', '.join(bad)} is NaN or "
                                        f"infinite (try a lower --lr or --grad-clip){where}")
                self.step += 1
                window_items += metrics.pop("items", 0.0) * self.dist.world_size
                for k, v in {**metrics, **{f"grad_norm_{n}": g for n, g in self.ctx.grad_norms.items()}}.items():
                    window[k] = window.get(k, 0.0) + v
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                    n = cfg.log_interval if self.step % cfg.log_interval == 0 else self.step % cfg.log_interval
                    now = time.perf_counter()
                    rate = window_items / max(now - window_t, 1e-9)
                    means = {k: v / n for k, v in all_reduce_mean(window, self.dist).items()}
                    lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
                    self.log({"step": self.step, "split": "train", **means, "lr": lr,
                              f"{item_name}_per_s": rate, "elapsed_s": self.elapsed_now()})
                    bar.set_postfix({k.replace("grad_norm_", "|grad| "): f"{v:.4g}" for k, v in means.items()}
                                    | {f"{item_name}/s": f"{rate:,.0f}"}, refresh=False)
                    window, window_items, window_t = {}, 0.0, now
                bar.update(1)
                if self.step % cfg.eval_interval == 0 or self.validation_due():
                    self.end_of_interval()
                    validated_at = self.step
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        if interrupted:
            self.save_checkpoint()
        elif validated_at != self.step:
            self.end_of_interval()
        if self.tb is not None:
            self.tb.close()
        return {"steps": self.step, "best_val": self.best_val, "interrupted": interrupted,
                "train_seconds": self.elapsed_now()}
