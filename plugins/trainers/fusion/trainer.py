"""The fusion trainer: its component models come in as model inputs, its MLP trains in the toolkit's loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from faceauth.errors import CheckpointError, DataError
from faceauth.faces import crop_geometry
from faceauth.training.checkpoint import expect_task
from faceauth.metrics.joint import licit_eer_threshold, scored_figures, threshold_at_far
from faceauth.training.export import Bundle
from faceauth.training.loop import TrainingLoop
from faceauth.training.run import FitResult, ModelInput, Run

from faceauth.plugins.trainers.fusion.components import component_inputs, open_components
from faceauth.plugins.trainers.fusion.data import Prepared, attempt_splits, prepare, split_data
from faceauth.plugins.trainers.fusion.models import FusionMLP
from faceauth.plugins.trainers.fusion.options import FusionOptions
from faceauth.plugins.trainers.fusion.task import TASK, FusionTask

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
        torch.manual_seed(run.recipe.seed)
        model = self.build_model(len(setup.names))
        model.standardise_on(setup.data["train"].features)
        task = FusionTask(run, self.options, setup, model.to(run.device))
        fit = TrainingLoop(run, self.options.loop_options(), task).fit()
        return FitResult(model=fit.model, metrics=self._metrics(fit.metrics, setup))

    def _metrics(self, figures: dict[str, Any], setup: Prepared) -> dict[str, Any]:
        """The loop's figures with the fusion's: each split's as ``{model: {metric: value}}``, the features and
        components, the AND thresholds."""
        result = {**figures, "target_far": self.options.target_far, "features": setup.names,
                  "components": setup.records, "and_thresholds": dict(zip(setup.names, setup.gates))}
        for split in ("val", "test"):
            flat = result.get(split) or {}
            if any("/" in key for key in flat):  # measured (not a paused run's best validation figures)
                nested: dict[str, dict[str, float]] = {}
                for key, value in flat.items():
                    name, _, metric = key.partition("/")
                    nested.setdefault(name, {})[metric] = value
                result[split] = nested
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
            if component.sha256 != record["sha256"]:
                raise CheckpointError(f"{component.path}: changed since the fusion model was trained with it")

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
        metadata = {
            "faceauth.task": TASK,
            "faceauth.score": "P(accept): the probe is the enrolled person and live; accept when score >= threshold",
            "faceauth.threshold": f"{threshold:.9g}" if threshold is not None else "",
            "faceauth.input": "features [batch, F] in the order of faceauth.features",
            "faceauth.features": json.dumps(features),
            "faceauth.components": json.dumps([{k: c[k] for k in ("role", "file", "sha256", "threshold")}
                                               for c in getattr(model, "components", [])]),
            "faceauth.template": "re-normalised mean of the unit enrolment embeddings; match = cosine with the probe",
            "faceauth.recipe": json.dumps(run.recipe.to_dict()),
            "faceauth.versions": json.dumps(run.versions()),
        }
        crop = crop_geometry(run.recipe.to_dict())  # the attempts' crop: where deployment takes the quality features
        if crop is not None:
            metadata["faceauth.crop"] = crop.to_json()
        generator = torch.Generator().manual_seed(0)
        width = len(features) or int(model.mean.shape[0])
        return Bundle(module=model, example_inputs=(torch.randn(2, width, generator=generator),),
                      input_names=("features",), output_names=("score",),
                      dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}}, metadata=metadata,
                      check_inputs=((torch.randn(7, width, generator=generator),),
                                    (torch.randn(1, width, generator=generator),)))


def _check_same_components(payload: dict[str, Any], setup: Prepared) -> None:
    """A resumed run scores with the component models it started with."""
    before = {c.get("file"): c.get("sha256") for c in payload.get("components", [])}
    now = {c["file"]: c["sha256"] for c in setup.records}
    changed = sorted(name for name in set(before) | set(now) if before.get(name) != now.get(name))
    if changed:
        raise CheckpointError(f"{payload.get('path')}: the run's component model {changed[0]} is not the one it "
                              f"started with (missing or changed); start a new run")
