"""The fusion MLP's training as a `faceauth.training.loop.Task`: minibatches of attempt features, validation
at the target FAR, and the final measurement of every model (mlp, logistic, and, match) on val and test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from faceauth.deploy.features import EMBEDDING
from faceauth.metrics.joint import (
    ATTEMPT_KINDS,
    decision_figures,
    det_figure,
    licit_eer_threshold,
    scored_figures,
    threshold_at_far,
)
from faceauth.plugins.trainers.fusion.data import Prepared, SplitData
from faceauth.plugins.trainers.fusion.models import MODELS, FusionMLP, and_accepts, mlp_scores
from faceauth.plugins.trainers.fusion.options import FusionOptions
from faceauth.training.loop import lower_is_better
from faceauth.training.run import Run
from faceauth.training.samplers import EpochSampler

__all__ = ["TASK", "FeatureRows", "FusionTask", "measure"]

TASK = "fusion"


class FeatureRows(Dataset):
    """Attempt features and labels, indexed by the ``(index, seed)`` pairs of `EpochSampler`."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features, self.labels = torch.from_numpy(features), torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index = key[0]
        return {"features": self.features[index], "label": self.labels[index]}


class FusionTask:
    """The fused MLP on `setup`'s features; the loop owns steps, checkpoints, resume and best-epoch selection
    (lowest validation loss)."""

    name = TASK
    head = None
    monitor = ("loss", lower_is_better)

    def __init__(self, run: Run, options: FusionOptions, setup: Prepared, model: FusionMLP):
        self.run, self.options, self.setup, self.model = run, options, setup, model
        train = setup.data["train"]
        self.train_loader = DataLoader(FeatureRows(train.features, train.labels), batch_size=options.batch_size,
                                       sampler=EpochSampler(len(train.labels), seed=run.recipe.seed, shuffle=True),
                                       num_workers=0, generator=torch.Generator().manual_seed(run.recipe.seed))
        self.criterion = torch.nn.BCEWithLogitsLoss()

    def checkpoint_extras(self) -> dict[str, Any]:
        return self.setup.extras(self.options)

    def set_epoch(self, epoch: int, position: int) -> None:
        self.train_loader.sampler.set_epoch(epoch, start=position * self.options.batch_size)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = self.run.device
        return self.criterion(self.model.logits(batch["features"].to(device)), batch["label"].to(device))

    def validate(self, step: int) -> dict[str, float]:
        """The MLP's validation loss and figures at the threshold of the target FAR on validation."""
        val = self.setup.data["val"]
        with torch.no_grad():
            logits = self.model.logits(torch.from_numpy(val.features).to(self.run.device)).cpu()
            loss = float(self.criterion(logits, torch.from_numpy(val.labels)))
        scores = torch.sigmoid(logits).numpy().astype(np.float64)
        threshold = threshold_at_far(scores, val.kinds, self.options.target_far)
        return {"loss": loss, **scored_figures(scores, val.kinds, val.attack_types, threshold)}

    def test(self, step: int, threshold: float | None) -> dict[str, dict[str, float]]:
        """Every model on val and test, each at its threshold of the target FAR on validation (the MLP's is the
        best epoch's): the fused model's figures as every trainer's (``<metric>``, with the split's attempt
        counts), the baselines' as ``<model>/<metric>``; DET curves to TensorBoard."""
        setup, val = self.setup, self.setup.data["val"]
        matchers = [i for i, c in enumerate(setup.components) if c.role == EMBEDDING]
        scorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "mlp": lambda f: mlp_scores(self.model, f), "logistic": setup.logistic,
            "match": lambda f: f[:, matchers].mean(axis=1)}
        thresholds = {name: threshold_at_far(scorer(val.features), val.kinds, self.options.target_far)
                      for name, scorer in scorers.items()}
        if threshold is not None:
            thresholds["mlp"] = threshold
        eer_thresholds = {name: licit_eer_threshold(scorer(val.features), val.kinds) for name, scorer in scorers.items()}
        results = {}
        for split in ("val", "test"):
            if split in setup.data:
                figures, curves = measure(setup.data[split], scorers, thresholds, eer_thresholds, setup.gates)
                self.run.writer.add_figure(f"{split}/det", det_figure(curves, split), step)
                results[split] = {**figures.pop("mlp"), **{f"{name}/{key}": value for name, values in figures.items()
                                                           for key, value in values.items()}}
        return results

    def log_samples(self) -> None:
        """Nothing to show: the inputs are feature rows."""


def measure(part: SplitData, scorers: dict[str, Callable[[np.ndarray], np.ndarray]], thresholds: dict[str, float],
            eer_thresholds: dict[str, float], gates: list[float]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Each model's figures on one split (`faceauth.metrics.joint`; the attempt counts with the fused model's)
    and its DET curve data."""
    figures, curves = {}, {}
    for name in MODELS:
        if name == "and":
            accepted = and_accepts(part.features, gates)
            figures[name] = decision_figures(accepted, part.kinds, part.attack_types)
            curves[name] = {"kinds": part.kinds, "accepted": accepted}
        else:
            scores = scorers[name](part.features)
            figures[name] = scored_figures(scores, part.kinds, part.attack_types, thresholds[name],
                                           eer_thresholds[name])
            curves[name] = {"kinds": part.kinds, "scores": scores, "accepted": scores >= thresholds[name]}
    figures["mlp"]["num_attempts"] = float(len(part.kinds))
    for kind in ATTEMPT_KINDS:
        figures["mlp"][f"num_{kind}"] = float(np.sum(part.kinds == kind))
    return figures, curves
