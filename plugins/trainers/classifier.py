"""The `classifier` trainer: supervised training of a backbone plus a linear head, for liveness.

Score convention: the model's ``score`` output is P(live), so higher = more likely live. The
decision threshold is chosen at the validation EER of the best epoch and applied unchanged to test
and to exported models (stored in their metadata).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import attrs
import numpy as np
import torch
from torch.utils.data import DataLoader

import faceauth
from faceauth import metrics as fa_metrics
from faceauth.components import Trainer
from faceauth.data import LIVE, EpochSampler, Splits, Transformed, reraise_worker_errors
from faceauth.errors import DataError, RecipeError, TrainingError
from faceauth.export import Bundle
from faceauth.optim import build_optimizer, build_scheduler
from faceauth.plugins.trainers.transforms import AugmentOptions, denormalise, eval_transform, train_transform
from faceauth.runner import FitResult, Run

# How each monitored validation figure is compared: lower is better except AUC.
MONITORS = {"acer": min, "hter": min, "eer": min, "loss": min, "auc": max}


@attrs.frozen
class ClassifierOptions:
    epochs: int = attrs.field(default=10, validator=faceauth.schema.positive)
    batch_size: int = attrs.field(default=32, validator=faceauth.schema.positive)
    num_workers: int = attrs.field(default=2, validator=faceauth.schema.non_negative)
    max_steps: int | None = attrs.field(default=None, validator=faceauth.schema.positive)
    grad_clip: float | None = attrs.field(default=None, validator=faceauth.schema.positive)
    amp: bool = True  # mixed precision, used only on CUDA
    channels_last: bool = True
    monitor: Literal["acer", "hter", "eer", "auc", "loss"] = "acer"
    log_every: int = attrs.field(default=10, validator=faceauth.schema.positive)
    progress: bool = True
    augment: AugmentOptions = AugmentOptions()


class Classifier(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class LivenessScore(torch.nn.Module):
    """The exported form: normalised images in, P(live) and the logits out."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return torch.softmax(logits, dim=1)[:, LIVE], logits


def _check_backbone(backbone: Any, name: str) -> None:
    for attribute in ("num_features", "preprocess"):
        if not hasattr(backbone, attribute):
            raise faceauth.PluginError(f"backbone '{name}' has no '{attribute}' attribute (see faceauth.components.Backbone)")


class ClassifierTrainer:
    def __init__(self, options: ClassifierOptions):
        self.options = options

    # model ------------------------------------------------------------------------------------
    def build_model(self, run: Run, num_classes: int) -> Classifier:
        backbone = run.build("backbone")
        _check_backbone(backbone, run.recipe.backbone.name)
        return Classifier(backbone, num_classes)

    def load_model(self, run: Run, payload: dict[str, Any]) -> Classifier:
        if payload.get("task") != "liveness":
            raise faceauth.CheckpointError(
                f"{payload.get('path')}: a {payload.get('task', 'unknown')} checkpoint; expected a liveness classifier")
        model = self.build_model(run, len(payload["classes"]))
        model.load_state_dict(payload["model"])
        return model.eval()

    # data -------------------------------------------------------------------------------------
    def _loader(self, dataset: Any, transform: Callable, *, seed: int, shuffle: bool) -> DataLoader:
        sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle)
        return DataLoader(
            Transformed(dataset, transform), batch_size=self.options.batch_size, sampler=sampler,
            num_workers=self.options.num_workers, drop_last=shuffle and len(dataset) > self.options.batch_size,
            pin_memory=torch.cuda.is_available(), persistent_workers=self.options.num_workers > 0,
            generator=torch.Generator().manual_seed(seed))

    def _inputs(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        x = batch["frames"] if "frames" in batch else batch["image"]
        x = x.to(device, non_blocking=True)
        if self.options.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def predict(self, score: Callable[[torch.Tensor], np.ndarray], loader: DataLoader,
                device: torch.device) -> dict[str, np.ndarray]:
        scores, labels, attacks = [], [], []
        for batch in reraise_worker_errors(loader):
            scores.append(score(self._inputs(batch, device)))
            labels.append(batch["label"].numpy())
            attacks.extend(batch.get("attack_type", [""] * len(batch["label"])))
        return {"score": np.concatenate(scores), "label": np.concatenate(labels), "attack_type": np.array(attacks)}

    @staticmethod
    def torch_scorer(model: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return torch.softmax(model(x).float(), dim=1)[:, LIVE].cpu().numpy()

        return score

    @staticmethod
    def measure(predictions: dict[str, np.ndarray], threshold: float | None) -> dict[str, float]:
        is_live = predictions["label"] == LIVE
        attack_types = [t if t else "attack" for t in predictions["attack_type"]]
        return fa_metrics.liveness_metrics(predictions["score"], is_live, attack_types, threshold=threshold)

    def evaluate(self, run: Run, score: Callable[[torch.Tensor], np.ndarray], split: str,
                 threshold: float | None) -> dict[str, float]:
        """Metrics of `score` on one split of the recipe's dataset (used by faceauth-eval)."""
        splits: Splits = run.build("data")
        dataset = splits.get(split)
        if dataset is None:
            raise DataError(f"data: the dataset has no '{split}' split")
        preprocess = self._preprocess_of(run)
        loader = self._loader(dataset, eval_transform(preprocess), seed=run.recipe.seed, shuffle=False)
        return self.measure(self.predict(score, loader, torch.device("cpu")), threshold)

    def _preprocess_of(self, run: Run) -> Any:
        backbone = run.build("backbone")
        _check_backbone(backbone, run.recipe.backbone.name)
        return backbone.preprocess

    # training ---------------------------------------------------------------------------------
    def fit(self, run: Run) -> FitResult:
        from faceauth.plugins.trainers.loop import TrainingLoop

        return TrainingLoop(self, run).fit()

    # export -----------------------------------------------------------------------------------
    def export_bundle(self, run: Run, model: Classifier) -> Bundle:
        model = model.to("cpu").eval()
        preprocess = model.backbone.preprocess
        h, w = preprocess.input_size
        threshold = getattr(model, "threshold", None)
        metadata = {
            **{f"preprocess.{k}": v for k, v in preprocess.as_metadata().items()},
            "faceauth.task": "liveness",
            "faceauth.score": "P(live): higher = more likely live; accept as live when score >= threshold",
            "faceauth.threshold": f"{threshold:.9g}" if threshold is not None else "",
            "faceauth.classes": ",".join(getattr(model, "classes", ("live", "spoof"))),
            "faceauth.recipe": json.dumps(run.recipe.to_dict()),
            "faceauth.versions": json.dumps(run.versions()),
        }
        example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        return Bundle(module=LivenessScore(model), example_inputs=(example,), input_names=("input",),
                      output_names=("score", "logits"),
                      dynamic_axes={"input": {0: "batch"}, "score": {0: "batch"}, "logits": {0: "batch"}},
                      metadata=metadata,
                      check_inputs=((torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1)),),))


def build(options: ClassifierOptions) -> ClassifierTrainer:
    return ClassifierTrainer(options)


@faceauth.hookimpl
def faceauth_trainers() -> list[Trainer]:
    return [Trainer(name="classifier", build=build, options=ClassifierOptions,
                    description="backbone + linear head with a logits loss; liveness metrics; P(live) export")]
