"""The epoch loop of the built-in trainers: steps, validation, checkpoints, resume, stops.

A checkpoint records the position inside the epoch, and every random draw comes from saved states
or per-sample seeds, so a run continued from any checkpoint on CPU ends with the same weights as one
that was never stopped.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torchvision.utils import make_grid
from tqdm import tqdm

from faceauth import checkpoint
from faceauth.data import LIVE, reraise_worker_errors
from faceauth.errors import RecipeError, TrainingError
from faceauth.optim import build_optimizer, build_scheduler
from faceauth.plugins.trainers.transforms import denormalise, eval_transform, train_transform
from faceauth.runner import FitResult, Run


class TrainingLoop:
    def __init__(self, trainer: Any, run: Run):
        self.trainer, self.run, self.options = trainer, run, trainer.options
        recipe = run.recipe
        torch.manual_seed(recipe.seed)
        if recipe.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.splits = run.build("data")
        self.classes = tuple(self.splits.classes)
        self.model = trainer.build_model(run, len(self.classes)).to(run.device)
        if self.options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        loss_component = run.component("loss")
        if loss_component.consumes != "logits":
            raise RecipeError(f"loss.name: '{recipe.loss.name}' consumes {loss_component.consumes}; "
                              f"the classifier trainer needs a loss on logits (e.g. cross_entropy)")
        self.criterion = run.build("loss", num_classes=len(self.classes),
                                   num_features=self.model.backbone.num_features).to(run.device)
        preprocess = self.model.backbone.preprocess
        self.preprocess = preprocess
        self.train_loader = trainer._loader(self.splits.train, train_transform(preprocess, self.options.augment),
                                            seed=recipe.seed, shuffle=True)
        self.val_loader = trainer._loader(self.splits.val, eval_transform(preprocess), seed=recipe.seed, shuffle=False)
        self.steps_per_epoch = len(self.train_loader)
        self.optimizer = build_optimizer(self.model.parameters(), recipe.optimizer)
        self.scheduler = build_scheduler(self.optimizer, recipe.scheduler, recipe.optimizer.lr,
                                         self.steps_per_epoch, self.options.epochs)
        self.use_amp = self.options.amp and run.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch, self.position, self.global_step = 0, 0, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.best: dict[str, Any] = {"value": None, "epoch": None, "threshold": None, "metrics": {}}
        if run.resume is not None:
            self._restore(run.resume)

    # state ------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "task": "liveness", "classes": list(self.classes),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "position": self.position, "global_step": self.global_step,
            "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "best": self.best, "threshold": self.best["threshold"], "rng": checkpoint.rng_state(),
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.epoch, self.position, self.global_step = payload["epoch"], payload["position"], payload["global_step"]
        self.loss_sum, self.loss_count = payload["loss_sum"], payload["loss_count"]
        self.best = payload["best"]
        checkpoint.set_rng_state(payload["rng"])

    def _save(self, tag: str) -> None:
        self.run.save_checkpoint(tag, self._state())

    # loop -------------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        run, options = self.run, self.options
        run.emit("train_start")
        if self.global_step == 0:
            self._log_samples()
        while self.epoch < options.epochs:
            run.epoch = self.epoch
            if not self._train_epoch():
                self._save("last")
                return self._finish(stopped=True)
            epoch_metrics = self._end_epoch()
            run.emit("epoch_end", epoch=self.epoch, metrics=epoch_metrics)
            self.epoch, self.position, self.loss_sum, self.loss_count = self.epoch + 1, 0, 0.0, 0
            self._save("last")
            if run.stop_reason is not None:
                return self._finish(stopped=True)
        return self._finish(stopped=False)

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when a stop was requested midway."""
        run, options = self.run, self.options
        self.model.train()
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch, start=self.position * options.batch_size)
        bar = tqdm(total=self.steps_per_epoch, initial=self.position, desc=f"epoch {self.epoch + 1}/{options.epochs}",
                   unit="step", disable=not options.progress, leave=False, dynamic_ncols=True)
        started, seen = time.perf_counter(), 0
        for batch in reraise_worker_errors(self.train_loader):
            if self.position >= self.steps_per_epoch:
                break
            loss = self._step(batch)
            seen += len(batch["label"])
            self.position += 1
            self.global_step += 1
            throughput = seen / max(1e-9, time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{throughput:.1f}")
            bar.update(1)
            if self.global_step % options.log_every == 0:
                run.log({"train/loss_step": loss, "train/lr": self.scheduler.get_last_lr()[0]}, self.global_step)
            if options.max_steps is not None and self.global_step >= options.max_steps:
                run.request_stop(f"max_steps={options.max_steps} reached")
            if run.stop_reason is not None and self.position < self.steps_per_epoch:
                bar.close()
                return False
        bar.close()
        self.images_per_second = seen / max(1e-9, time.perf_counter() - started)
        return True

    def _step(self, batch: dict[str, Any]) -> float:
        x = self.trainer._inputs(batch, self.run.device)
        y = batch["label"].to(self.run.device, non_blocking=True)
        with torch.autocast(device_type=self.run.device.type, enabled=self.use_amp):
            loss = self.criterion(self.model(x), y)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"the training loss became {value} at epoch {self.epoch + 1}, step {self.position + 1}; "
                f"the last good checkpoint is kept in {self.run.dir / 'checkpoints'} (try a lower optimizer.lr)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.options.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.loss_sum += value
        self.loss_count += 1
        return value

    # evaluation -------------------------------------------------------------------------------
    def _validate(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        self.model.eval()
        predictions = self.trainer.predict(self.trainer.torch_scorer(self.model), self.val_loader, self.run.device)
        return self.trainer.measure(predictions, threshold=None), predictions

    def _end_epoch(self) -> dict[str, float]:
        from faceauth.plugins.trainers.classifier import MONITORS

        run, step = self.run, self.epoch + 1
        val, predictions = self._validate()
        figures = {"train/loss": self.loss_sum / max(1, self.loss_count),
                   "train/lr": self.scheduler.get_last_lr()[0],
                   "train/images_per_second": getattr(self, "images_per_second", 0.0),
                   **{f"val/{k}": v for k, v in val.items()}}
        run.log(figures, step)
        run.writer.add_pr_curve("val/pr_live", predictions["label"] == LIVE, predictions["score"], step)
        monitor = self.options.monitor
        value = val[monitor] if monitor != "loss" else figures["train/loss"]
        better = MONITORS[monitor]
        if self.best["value"] is None or better(value, self.best["value"]) != self.best["value"]:
            self.best = {"value": value, "epoch": step, "threshold": val["threshold"], "metrics": val}
            self._save("best")
        return figures

    def _finish(self, stopped: bool) -> FitResult:
        run = self.run
        result: dict[str, Any] = {"epochs_completed": self.epoch, "global_step": self.global_step,
                                  "best_epoch": self.best["epoch"], "monitor": f"val/{self.options.monitor}",
                                  "threshold": self.best["threshold"], "val": self.best["metrics"]}
        model = self.model
        if not stopped and self.best["epoch"] is not None:
            best = checkpoint.load(run.dir / "checkpoints" / "best.pt", map_location=run.device)
            model.load_state_dict(best["model"])
            test = self.splits.test
            if test is not None:
                loader = self.trainer._loader(test, eval_transform(self.preprocess), seed=run.recipe.seed, shuffle=False)
                model.eval()
                predictions = self.trainer.predict(self.trainer.torch_scorer(model), loader, run.device)
                result["test"] = self.trainer.measure(predictions, threshold=self.best["threshold"])
                run.log({f"test/{k}": v for k, v in result["test"].items()}, self.epoch)
        model.threshold = self.best["threshold"]
        model.classes = self.classes
        run.emit("train_end", metrics=result)
        run.writer.flush()
        return FitResult(model=model, metrics=result)

    def _log_samples(self, count: int = 16) -> None:
        """Once per run: a grid of training inputs, framed green (live) or red (spoof)."""
        dataset = self.train_loader.dataset
        picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).astype(int)
        images, labels = [], []
        for index in picks:
            sample = dataset[(int(index), int(index))]
            image = torch.nn.functional.pad(denormalise(sample["image"][None], self.preprocess)[0], (3, 3, 3, 3))
            colour = (0.1, 0.8, 0.1) if sample["label"] == LIVE else (0.9, 0.1, 0.1)
            for channel, value in enumerate(colour):
                plane = image[channel]
                plane[:3, :], plane[-3:, :], plane[:, :3], plane[:, -3:] = value, value, value, value
            images.append(image)
            labels.append(self.classes[sample["label"]] + (f":{sample.get('attack_type')}" if sample.get("attack_type") else ""))
        self.run.writer.add_image("train/samples", make_grid(torch.stack(images), nrow=8), 0)
        self.run.writer.add_text("train/sample_labels", ", ".join(labels), 0)
