"""The epoch loop every trainer may build on (the built-in ones do): steps, validation, checkpoints, resume, stops.

A trainer supplies a `Task`: what is trained (`model`, plus `head` for parameters that live outside
it, such as a margin loss's class centres), how a batch becomes a loss, and how validation and test
are measured. The loop owns everything else. A checkpoint records the position inside the epoch and
every random draw comes from saved states or per-sample seeds, so a run continued from any
checkpoint on CPU ends with the same weights as one that was never stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import attrs
import torch

import faceauth
from faceauth.errors import TrainingError
from faceauth.io import console
from faceauth.training import checkpoint, distributed
from faceauth.training.loaders import reraise_worker_errors
from faceauth.training.optim import build_optimizer, build_scheduler
from faceauth.training.run import FitResult, Run

__all__ = ["LoopOptions", "TIE_BREAKS", "Task", "TrainingLoop", "amp_dtype", "higher_is_better", "improves",
           "lower_is_better", "optimizer_step", "seed_from", "unscale_gradients"]


@attrs.frozen
class LoopOptions:
    """The trainer options every built-in trainer shares."""

    epochs: int = attrs.field(default=10, validator=faceauth.schema.positive)
    batch_size: int = attrs.field(default=32, validator=faceauth.schema.positive)
    num_workers: int = attrs.field(default=2, validator=faceauth.schema.non_negative)
    max_steps: int | None = attrs.field(default=None, validator=faceauth.schema.positive)
    grad_clip: float | None = attrs.field(default=None, validator=faceauth.schema.positive)
    amp: bool = True  # mixed precision, used only on CUDA
    # auto: bfloat16 where the GPU supports it, else float16 (which runs with a gradient scaler)
    amp_dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    compile: bool = False  # torch.compile the training step (pays back on GPUs, not on a small CPU)
    channels_last: bool = True
    log_every: int = attrs.field(default=10, validator=faceauth.schema.positive)
    progress: bool = True


def seed_from(run: Run) -> None:
    """Seed PyTorch from ``recipe.seed`` (and, with ``recipe.deterministic``, ask for deterministic kernels).
    A trainer calls it first in ``fit``, before it builds its model, so the initial weights follow the seed."""
    torch.manual_seed(run.recipe.seed)
    if run.recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


class Task(Protocol):
    """What a trainer gives `TrainingLoop`: what is trained and how it is measured; the loop owns the rest.

    Batches from `train_loader` are dicts with at least ``label`` (a tensor: the loop counts samples with it).
    An optional ``checkpoint_extras() -> dict`` adds entries to every checkpoint (e.g. the class names);
    its ``threshold_rule`` entry, when present, goes into the run's figures.
    """

    name: str  # stored in checkpoints: "liveness", "embedding", ...
    model: torch.nn.Module
    head: torch.nn.Module | None
    train_loader: Any
    monitor: tuple[str, Callable[[float, float], bool]]  # (validation key, is_better(new, old))

    def set_epoch(self, epoch: int, position: int) -> None: ...  # order of `epoch`, skipping `position` batches
    def loss(self, batch: dict[str, Any]) -> torch.Tensor: ...
    def validate(self, step: int) -> dict[str, float]: ...  # includes "threshold" when the task chooses one
    def test(self, step: int, threshold: float | None) -> dict[str, dict[str, float]]: ...  # {split label: figures}
    def log_samples(self) -> None: ...


class _TaskLoss(torch.nn.Module):
    """The task's model and head as one module whose forward is the loss, so DDP can wrap it."""

    def __init__(self, task: Task):
        super().__init__()
        self.task = task
        self.model = task.model
        self.head = task.head

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.task.loss(batch)


def _found_inf_flags(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    # GradScaler has no public accessor for the inf/NaN flags `unscale_` recorded; `step` (skip or
    # not) and `update` (the next scale) both read these tensors, so changing them in place
    # changes both decisions.
    return list(scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values())


def unscale_gradients(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Unscale the gradients when `scaler` is enabled; under torchrun, a step that overflowed on any
    rank is skipped on every rank (`distributed.agree_on_overflow`), so the weights and scales stay alike."""
    if not scaler.is_enabled():
        return
    scaler.unscale_(optimizer)
    distributed.agree_on_overflow(_found_inf_flags(scaler, optimizer), device)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of `trainer.amp_dtype` on a CUDA `device`: ``auto`` is bfloat16 where the GPU
    supports it (no gradient scaler needed) and float16 elsewhere."""
    bf16 = torch.cuda.is_bf16_supported()
    if setting == "bfloat16" and not bf16:
        raise faceauth.RecipeError(f"trainer.amp_dtype: bfloat16 is not supported by {torch.cuda.get_device_name(device)}; "
                                   f"use float16 (or auto)")
    if setting == "auto":
        return torch.bfloat16 if bf16 else torch.float16
    return getattr(torch, setting)


def optimizer_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, scheduler: Any) -> bool:
    """One optimizer step through `scaler`, then one schedule step, unless the scaler skipped the update
    (a float16 gradient overflow): the schedule then counts the updates actually made, and torch
    never sees the schedule stepped before the optimizer. True when the weights were updated."""
    if not scaler.is_enabled():
        optimizer.step()
        scheduler.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    stepped = scaler.get_scale() >= scale  # the scale only shrinks after an overflow, when the step was skipped
    if stepped:
        scheduler.step()
    return stepped


def lower_is_better(new: float, old: float) -> bool:
    return new < old


def higher_is_better(new: float, old: float) -> bool:
    return new > old


# Ties on the monitored value (a small validation set that separates perfectly early ties every
# later epoch) go to the higher validation AUC, then the lower validation loss, so the selection
# does not keep an undertrained epoch. A full tie keeps the earlier epoch.
TIE_BREAKS: tuple[tuple[str, Callable[[float, float], bool]], ...] = (("auc", higher_is_better),
                                                                       ("loss", lower_is_better))


def improves(candidate: dict[str, float], best: dict[str, float],
             criteria: Sequence[tuple[str, Callable[[float, float], bool]]]) -> bool:
    """Whether `candidate` beats `best` on the first of `criteria` (key, is_better) where they differ."""
    for key, is_better in criteria:
        new, old = candidate.get(key), best.get(key)
        if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)):
            continue
        if math.isclose(new, old, rel_tol=1e-9, abs_tol=1e-12):
            continue
        return is_better(new, old)
    return False


class TrainingLoop:
    def __init__(self, run: Run, options: LoopOptions, task: Task):
        self.run, self.options, self.task = run, options, task
        params = list(task.model.parameters()) + (list(task.head.parameters()) if task.head is not None else [])
        recipe = run.recipe
        # A head may hold parameters that differ between processes (Partial FC's shard of the class
        # centres, named by its `sharded_parameters()`): DDP must not average them, checkpoints hold
        # them and their optimizer state whole (`gather_shard`, `take_shard`) and gradient clipping
        # sums their norms over the processes.
        sharded = set(getattr(task.head, "sharded_parameters", tuple)())
        named = dict(task.head.named_parameters()) if sharded else {}
        self.sharded_ids = {id(named[name]) for name in sharded}
        self.sharded_slots = [i for i, p in enumerate(params) if id(p) in self.sharded_ids]  # optimizer state keys
        # Under torchrun the loss goes through DDP, which averages gradients over the processes.
        self.forward = _TaskLoss(task)
        if distributed.active():
            torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.forward, [f"head.{name}" for name in sharded])
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.forward, device_ids=[run.device.index] if run.device.type == "cuda" else None)
        self.steps_per_epoch = len(task.train_loader)
        if self.steps_per_epoch == 0:
            raise faceauth.DataError(f"trainer.batch_size={options.batch_size} is larger than the training set")
        self.optimizer = build_optimizer(params, recipe.optimizer)
        self.scheduler = build_scheduler(self.optimizer, recipe.scheduler, self.steps_per_epoch, options.epochs)
        self.use_amp = options.amp and run.device.type == "cuda"
        self.amp_dtype = amp_dtype(options.amp_dtype, run.device) if self.use_amp else torch.float32
        self.scaler = torch.amp.GradScaler(run.device.type, enabled=self.amp_dtype == torch.float16)
        if run.device.type == "cuda" and not recipe.deterministic:
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        if options.compile:
            self.forward = torch.compile(self.forward)
        self.epoch, self.position, self.global_step = 0, 0, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.images_per_second = 0.0
        self.best: dict[str, Any] = {"value": None, "epoch": None, "threshold": None, "metrics": {}}
        if run.resume is not None:
            self._restore(run.resume)

    # state ------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        task = self.task
        return {
            "task": task.name, "model": task.model.state_dict(),
            "head": task.head.state_dict() if task.head is not None else None,
            "optimizer": self._sharded_state(self.optimizer.state_dict(), "gather_shard"),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": self.epoch, "position": self.position,
            "global_step": self.global_step, "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "best": self.best, "threshold": self.best["threshold"], "rng": checkpoint.rng_state(),
            **getattr(task, "checkpoint_extras", dict)(),
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        checkpoint.expect_task(payload, self.task.name, "resume this run")
        with checkpoint.fitting(payload, "the model and training state"):
            self.task.model.load_state_dict(payload["model"])
            if self.task.head is not None:
                self.task.head.load_state_dict(payload["head"])
            self.optimizer.load_state_dict(self._sharded_state(payload["optimizer"], "take_shard"))
            self.scheduler.load_state_dict(payload["scheduler"])
            self.scaler.load_state_dict(payload["scaler"])
            self.epoch, self.position, self.global_step = payload["epoch"], payload["position"], payload["global_step"]
            self.loss_sum, self.loss_count = payload["loss_sum"], payload["loss_count"]
            self.best = payload["best"]
            checkpoint.set_rng_state(payload["rng"])

    def _sharded_state(self, state: dict[str, Any], convert: str) -> dict[str, Any]:
        """`state` (an optimizer's) with the per-class tensors of sharded parameters gathered whole or sliced."""
        if not self.sharded_slots:
            return state
        convert_fn = getattr(self.task.head, convert)
        slots = dict(state["state"])
        for i in self.sharded_slots:
            if i in slots:
                slots[i] = {k: convert_fn(v) if torch.is_tensor(v) and v.dim() > 0 else v for k, v in slots[i].items()}
        return {**state, "state": slots}

    def _save(self, tag: str) -> None:
        self.run.save_checkpoint(tag, self._state())

    # loop -------------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        run = self.run
        run.emit("train_start")
        if self.global_step == 0:
            self.task.log_samples()
        while self.epoch < self.options.epochs:
            run.epoch = self.epoch
            started = time.perf_counter()
            if not self._train_epoch():
                self._save("last")
                return self._finish(stopped=True)
            figures = self._end_epoch()
            run.record_epoch(self.epoch + 1, figures, best=self.best["epoch"] == self.epoch + 1,
                             seconds=time.perf_counter() - started, epochs=self.options.epochs)
            run.emit("epoch_end", epoch=self.epoch, metrics=figures)
            self.epoch, self.position, self.loss_sum, self.loss_count = self.epoch + 1, 0, 0.0, 0
            if self.improved:  # the best weights are the last ones: written once, under both names
                self._save("best")
                run.link_checkpoint("best", "last")
            else:
                self._save("last")
            if run.stop_reason is not None:  # a pause, or an early stop that finishes (tested, exported)
                return self._finish(stopped=run.paused)
        return self._finish(stopped=False)

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when a stop was requested midway."""
        run, options, task = self.run, self.options, self.task
        task.model.train()
        if task.head is not None:
            task.head.train()
        task.set_epoch(self.epoch, self.position)
        bar = console.step_progress(self.steps_per_epoch, self.position, f"epoch {self.epoch + 1}/{options.epochs}",
                                    enabled=options.progress and distributed.is_main())
        started, seen = time.perf_counter(), 0
        try:
            for batch in reraise_worker_errors(task.train_loader):
                if self.position >= self.steps_per_epoch:
                    break
                loss = self._step(batch)
                seen += len(batch["label"])
                self.position += 1
                self.global_step += 1
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{seen / max(1e-9, time.perf_counter() - started):.1f}")
                bar.update(1)
                if self.global_step % options.log_every == 0:
                    run.log({"train/loss_step": loss, "train/lr": self.scheduler.get_last_lr()[0]}, self.global_step)
                if options.max_steps is not None and self.global_step >= options.max_steps:
                    run.request_stop(f"max_steps={options.max_steps} reached", finish=False)
                self._agree_on_stop()
                if run.paused and self.position < self.steps_per_epoch:  # a finishing stop ends the epoch first
                    return False
        finally:
            bar.close()
        self.images_per_second = seen / max(1e-9, time.perf_counter() - started)
        return True

    def _agree_on_stop(self) -> None:
        """Under torchrun, a stop asked on any process (Ctrl-C) stops all of them at the same step."""
        if distributed.active():
            asked = [(r, f) for r, f in distributed.gather((self.run.stop_reason, self.run.stop_finishes)) if r is not None]
            for reason, finish in asked:
                self.run.request_stop(reason, finish=finish)

    def _step(self, batch: dict[str, Any]) -> float:
        with torch.autocast(device_type=self.run.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            loss = self.forward(batch)
        value = float(loss.detach())
        # Every process stops together, with the same message, when any one's loss is not finite.
        if distributed.any_rank(not math.isfinite(value), self.run.device):
            where = f"{value}" if not math.isfinite(value) else "NaN or infinite on another process"
            raise TrainingError(
                f"the training loss became {where} at epoch {self.epoch + 1}, step {self.position + 1}; "
                f"the last good checkpoint is kept in {self.run.dir / 'checkpoints'} (try a lower optimizer.lr)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        unscale_gradients(self.scaler, self.optimizer, self.run.device)
        if self.options.grad_clip is not None:
            self._clip_gradients()
        optimizer_step(self.scaler, self.optimizer, self.scheduler)
        self.loss_sum += value
        self.loss_count += 1
        return value

    def _clip_gradients(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if not (self.sharded_ids and distributed.active()):
            torch.nn.utils.clip_grad_norm_(params, self.options.grad_clip)
            return
        # Each process holds the gradients of its own shard: their squared norms add up over processes.
        squares = [(id(p), torch.linalg.vector_norm(p.grad, dtype=torch.float32).square())
                   for p in params if p.grad is not None]
        shards = sum((s for i, s in squares if i in self.sharded_ids), torch.zeros((), device=squares[0][1].device))
        torch.distributed.all_reduce(shards)
        total = (sum(s for i, s in squares if i not in self.sharded_ids) + shards).sqrt()
        coefficient = (self.options.grad_clip / (total + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_ does
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coefficient.to(p.grad.dtype))

    # evaluation -------------------------------------------------------------------------------
    def _end_epoch(self) -> dict[str, float]:
        step = self.epoch + 1
        self.task.model.eval()
        with console.phase(f"val {step}/{self.options.epochs}"):
            val = self.task.validate(step)
        sums = distributed.gather((self.loss_sum, self.loss_count, self.images_per_second))
        figures = {"train/loss": sum(s for s, _, _ in sums) / max(1, sum(c for _, c, _ in sums)),
                   "train/lr": self.scheduler.get_last_lr()[0],
                   "train/images_per_second": sum(ips for _, _, ips in sums),
                   **{f"val/{k}": v for k, v in val.items()}}
        self.run.log(figures, step)
        key, is_better = self.task.monitor
        # `loss` is the validation loss when the task computes one, else (no validation loss) the
        # training loss, and is named so in metrics.json.
        name, value = (f"val/{key}", val[key]) if key in val or key != "loss" else ("train/loss", figures["train/loss"])
        criteria = [(key, is_better), *((k, f) for k, f in TIE_BREAKS if k != key)]
        candidate = {**val, key: value}
        best = self.best.get("criteria") or {key: self.best["value"]}  # checkpoints from before tie-breaks
        self.improved = self.best["value"] is None or improves(candidate, best, criteria)
        if self.improved:  # saved with the epoch's last checkpoint, in fit
            self.best = {"value": value, "epoch": step, "threshold": val.get("threshold"), "metrics": val,
                         "monitor": name, "criteria": {k: candidate[k] for k, _ in criteria if k in candidate}}
        return figures

    def _finish(self, stopped: bool) -> FitResult:
        run, task = self.run, self.task
        result: dict[str, Any] = {"epochs_completed": self.epoch, "global_step": self.global_step,
                                  "best_epoch": self.best["epoch"],
                                  "monitor": self.best.get("monitor", f"val/{task.monitor[0]}"),
                                  "threshold": self.best["threshold"], "val": self.best["metrics"]}
        extras = getattr(task, "checkpoint_extras", dict)()
        if "threshold_rule" in extras:
            result["threshold_rule"] = extras["threshold_rule"]
        if not stopped and self.best["epoch"] is not None:
            distributed.barrier()
            best = checkpoint.load(run.dir / checkpoint.RUN_CHECKPOINT, map_location=run.device)
            task.model.load_state_dict(best["model"])
            task.model.eval()
            with console.phase("test"):
                tested = task.test(self.epoch, self.best["threshold"])
            for label, figures in tested.items():
                result[label] = figures
                run.log({f"{label}/{k}": v for k, v in figures.items()}, self.epoch)
        task.model.threshold = self.best["threshold"]
        for key, value in getattr(task, "checkpoint_extras", dict)().items():
            setattr(task.model, key, tuple(value) if isinstance(value, list) else value)
        run.emit("train_end", metrics=result)
        run.writer.flush()
        return FitResult(model=task.model, metrics=result)
