"""The fusion trainer: its component models come in as model inputs, its MLP trains in the toolkit's loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from faceauth.deploy.models import expect_same_component
from faceauth.errors import DataError
from faceauth.metrics.joint import licit_eer_threshold, scored_figures, threshold_at_far
from faceauth.plugins.trainers.fusion.components import component_inputs, open_components
from faceauth.plugins.trainers.fusion.data import Prepared, attempt_splits, prepare, split_data
from faceauth.plugins.trainers.fusion.models import FusionMLP
from faceauth.plugins.trainers.fusion.options import FusionOptions
from faceauth.plugins.trainers.fusion.task import TASK, FusionTask
from faceauth.training.checkpoint import expect_task
from faceauth.training.export import Bundle, model_metadata
from faceauth.training.loop import TrainingLoop, seed_from
from faceauth.training.run import FitResult, ModelInput, Run

__all__ = ["FusionTrainer"]


class FusionTrainer:
    def __init__(self, options: FusionOptions):
        self.options = options

    def model_inputs(self, recipe: Any) -> list[ModelInput]:
        """The component models: ``trainer.embedding_models`` and ``trainer.liveness_models``, or the small ones
        `trainer.train_components` trains (see `faceauth.plugins.trainers.fusion.components`)."""
        return component_inputs(recipe, self.options)

    def build_model(self, num_features: int) -> FusionMLP:
        return FusionMLP(num_features, self.options.hidden, self.options.dropout)

    # training ---------------------------------------------------------------------------------------
    def fit(self, run: Run) -> FitResult:
        setup = prepare(run, self.options)
        if run.resume is not None:
            _check_same_components(run.resume, setup)
        seed_from(run)
        model = self.build_model(len(setup.names))
        model.standardise_on(setup.data["train"].features)
        task = FusionTask(run, self.options, setup, model.to(run.device))
        fit = TrainingLoop(run, self.options, task).fit()
        return FitResult(model=fit.model, metrics=self._metrics(fit.metrics, setup))

    def _metrics(self, figures: dict[str, Any], setup: Prepared) -> dict[str, Any]:
        """The loop's figures with the fusion's: `val` and `test` the fused model's (as every trainer's), the
        baselines' under ``baselines: {split: {model: {metric: value}}}``, the features and components, the AND
        thresholds."""
        result = {**figures, "target_far": self.options.target_far, "features": setup.names,
                  "components": setup.records, "and_thresholds": dict(zip(setup.names, setup.gates))}
        baselines: dict[str, dict[str, dict[str, float]]] = {}
        for split in ("val", "test"):
            flat = result.get(split) or {}
            for key in [key for key in flat if "/" in key]:  # measured (not a paused run's best validation figures)
                name, _, metric = key.partition("/")
                baselines.setdefault(split, {}).setdefault(name, {})[metric] = flat.pop(key)
        if baselines:
            result["baselines"] = baselines
        return result

    def load_model(self, run: Run, payload: dict[str, Any]) -> FusionMLP:
        expect_task(payload, TASK, "load a fusion model")
        model = FusionMLP(payload["num_features"], payload["hidden"], payload["dropout"])
        model.load_state_dict(payload["model"])
        model.threshold, model.features = payload.get("threshold"), list(payload["features"])
        model.components = list(payload["components"])
        return model.eval()

    @staticmethod
    def torch_scorer(model: FusionMLP) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return model.eval()(x.float().cpu()).numpy()

        score.components = getattr(model, "components", None)  # type: ignore[attr-defined]
        return score

    # evaluation and export --------------------------------------------------------------------------
    def evaluate(self, run: Run, score_fn: Callable[[torch.Tensor], np.ndarray], split: str,
                 threshold: float | None) -> dict[str, float]:
        """The fused model's figures on one split (what faceauth-eval reports), at `threshold`.

        As in training, `threshold` (None: the one at `target_far` on validation) is applied, and
        ``hter_at_eer`` / ``sfar_at_eer`` use the validation EER threshold. The component models are
        those kept beside the model (`Run.inputs`), checked against the checkpoint's record.
        """
        splits = attempt_splits(run)
        if splits.get(split) is None:
            raise DataError(f"data: the dataset has no '{split}' split")
        components = open_components(run.inputs)
        for component, record in zip(components, getattr(score_fn, "components", None) or ()):
            expect_same_component(component.path, component.sha256, record)

        def scored(name: str) -> tuple[Any, np.ndarray]:
            part = split_data(run, self.options, splits.get(name), name, components)
            return part, np.asarray(score_fn(torch.from_numpy(part.features)), np.float64).reshape(-1)

        val, val_scores = scored("val")
        part, scores = (val, val_scores) if split == "val" else scored(split)
        if threshold is None:
            threshold = threshold_at_far(val_scores, val.kinds, self.options.target_far)
        return scored_figures(scores, part.kinds, part.attack_types, threshold,
                              licit_eer_threshold(val_scores, val.kinds))

    def export_bundle(self, run: Run, model: FusionMLP) -> Bundle:
        model = model.to("cpu").eval()
        threshold = getattr(model, "threshold", None)
        features = list(getattr(model, "features", []))
        # faceauth.crop is the attempts' crop: where deployment takes the quality features
        metadata = model_metadata(
            run, task=TASK, threshold=threshold,
            score="P(accept): the probe is the enrolled person and live; accept when score >= threshold",
            input="features [batch, F] in the order of faceauth.features", features=json.dumps(features),
            components=json.dumps([{k: c[k] for k in ("role", "file", "sha256", "threshold")}
                                   for c in getattr(model, "components", [])]),
            template="re-normalised mean of the unit enrolment embeddings; match = cosine with the probe")
        generator = torch.Generator().manual_seed(0)
        width = len(features) or int(model.mean.shape[0])
        return Bundle(module=model, example_inputs=(torch.randn(2, width, generator=generator),),
                      input_names=("features",), output_names=("score",),
                      dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}}, metadata=metadata,
                      check_inputs=((torch.randn(7, width, generator=generator),),
                                    (torch.randn(1, width, generator=generator),)))


def _check_same_components(payload: dict[str, Any], setup: Prepared) -> None:
    """A resumed run scores with the component models it started with (the runner keeps them beside it)."""
    for component, record in zip(setup.components, payload.get("components", [])):
        expect_same_component(component.path, component.sha256, record)
