"""The example plugin's trainer, built on faceauth's training toolkit: a linear probe for liveness.

The recipe's backbone is frozen (its weights typically come from ``backbone.pretrained``) and only a
linear live/spoof head on its features is trained: a quick measure of how much liveness a pretrained
network's features already hold. Everything but the task itself comes from `faceauth.training`: the
epoch loop with its checkpoints, exact resume and model selection (`TrainingLoop`), the seeded loaders
and transforms, the export bundle and the metadata. Its score is the log-odds of live, as the built-in
classifier's, so faceauth-eval, faceauth-predict and the reports read its models alike.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np
import torch

from faceauth.data import LIVE, live_log_odds
from faceauth.errors import DataError, RecipeError
from faceauth.metrics import liveness_metrics
from faceauth.training.checkpoint import expect_task
from faceauth.training.export import Bundle, model_metadata
from faceauth.training.loaders import image_loader, reraise_worker_errors, to_device
from faceauth.training.loop import LoopOptions, TrainingLoop, higher_is_better, lower_is_better, seed_from
from faceauth.training.run import FitResult, Run
from faceauth.training.transforms import AugmentOptions, eval_transform, train_transform

TASK = "linear_probe"


@attrs.frozen
class ProbeOptions(LoopOptions):
    monitor: Literal["acer", "auc", "loss"] = "acer"
    augment: AugmentOptions = AugmentOptions()


class Probe(torch.nn.Module):
    """A frozen backbone and a trainable linear head; logits out. The backbone stays in eval mode."""

    def __init__(self, backbone: torch.nn.Module, num_classes: int = 2):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.head = torch.nn.Linear(backbone.num_features, num_classes)

    def train(self, mode: bool = True) -> Probe:
        super().train(mode)
        self.backbone.eval()  # frozen: no batch-norm statistics move either
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ProbeScore(torch.nn.Module):
    """The exported form: images in, the log-odds of live out."""

    def __init__(self, probe: Probe):
        super().__init__()
        self.probe = probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return live_log_odds(self.probe(x).float())


class ProbeTask:
    """The `faceauth.training.loop.Task` of a linear probe."""

    name = TASK

    def __init__(self, run: Run, options: ProbeOptions, trainer: ProbeTrainer):
        self.run, self.options, self.trainer = run, options, trainer
        self.splits = run.build("data")
        self.model = trainer.build_model(run).to(run.device)
        self.head = None
        if run.component("loss").consumes != "logits":
            raise RecipeError(f"loss.name: '{run.recipe.loss.name}' does not take logits; a linear probe needs a "
                              f"loss on logits (e.g. cross_entropy)")
        self.criterion = run.build("loss", num_classes=2,
                                   num_features=self.model.backbone.num_features).to(run.device)
        preprocess = self.model.backbone.preprocess
        self.train_loader = image_loader(self.splits.train, train_transform(preprocess, options.augment),
                                         batch_size=options.batch_size, num_workers=options.num_workers,
                                         seed=run.recipe.seed, shuffle=True)
        self.monitor = (options.monitor, higher_is_better if options.monitor == "auc" else lower_is_better)

    def set_epoch(self, epoch: int, position: int) -> None:
        self.train_loader.sampler.set_epoch(epoch, start=position * self.train_loader.batch_size)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        x = to_device(batch["image"], self.run.device, self.options.channels_last)
        return self.criterion(self.model(x), batch["label"].to(self.run.device))

    def _figures(self, split: str, threshold: float | None) -> dict[str, float]:
        dataset = self.splits.get(split)
        if dataset is None:
            raise DataError(f"data: the dataset has no {split} split")
        return self.trainer.measure(self.trainer.torch_scorer(self.model), dataset, self.model.backbone.preprocess,
                                    self.run.recipe.seed, threshold)

    def validate(self, step: int) -> dict[str, float]:
        return self._figures("val", None)

    def test(self, step: int, threshold: float | None) -> dict[str, dict[str, float]]:
        return {"test": self._figures("test", threshold)} if self.splits.test is not None else {}

    def log_samples(self) -> None:
        """The built-in trainers show a grid of inputs in TensorBoard here; a probe shows nothing."""


class ProbeTrainer:
    """Implements `faceauth.training.protocol.ModelTrainer`."""

    def __init__(self, options: ProbeOptions):
        self.options = options

    def build_model(self, run: Run) -> Probe:
        return Probe(run.build("backbone"))

    def fit(self, run: Run) -> FitResult:
        seed_from(run)
        return TrainingLoop(run, self.options, ProbeTask(run, self.options, self)).fit()

    def load_model(self, run: Run, payload: dict[str, Any]) -> Probe:
        expect_task(payload, TASK, "load a linear probe")
        model = self.build_model(run)
        model.load_state_dict(payload["model"])
        model.threshold = payload.get("threshold")
        return model.eval()

    @staticmethod
    def torch_scorer(model: Probe) -> Any:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return live_log_odds(model.eval()(x.to(next(model.parameters()).device)).float()).cpu().numpy()

        return score

    def measure(self, score: Any, dataset: Any, preprocess: Any, seed: int, threshold: float | None) -> dict[str, float]:
        """Liveness figures of `score` on `dataset` at `threshold` (None: the EER threshold of these scores)."""
        loader = image_loader(dataset, eval_transform(preprocess), batch_size=self.options.batch_size,
                              num_workers=self.options.num_workers, seed=seed, shuffle=False)
        scores, labels, attacks = [], [], []
        for batch in reraise_worker_errors(loader):
            scores.append(score(batch["image"]))
            labels.append(batch["label"].numpy())
            attacks += [a or "attack" for a in batch.get("attack_type", [""] * len(batch["label"]))]
        is_live = np.concatenate(labels) == LIVE
        return liveness_metrics(np.concatenate(scores), is_live, attacks, threshold=threshold)

    def evaluate(self, run: Run, score: Any, split: str, threshold: float | None) -> dict[str, float]:
        dataset = run.build("data").get(split)
        if dataset is None:
            raise DataError(f"data: the dataset has no '{split}' split")
        return self.measure(score, dataset, run.preprocess(), run.recipe.seed, threshold)

    def export_bundle(self, run: Run, model: Probe) -> Bundle:
        model = model.to("cpu").eval()
        preprocess = model.backbone.preprocess
        h, w = preprocess.input_size
        metadata = model_metadata(run, preprocess, task="liveness", threshold=getattr(model, "threshold", None),
                                  score="log-odds of live (linear probe): accept as live when score >= threshold")
        generator = torch.Generator().manual_seed(0)
        return Bundle(module=ProbeScore(model), example_inputs=(torch.randn(2, 3, h, w, generator=generator),),
                      input_names=("input",), output_names=("score",),
                      dynamic_axes={"input": {0: "batch"}, "score": {0: "batch"}}, metadata=metadata,
                      check_inputs=((torch.randn(3, 3, h, w, generator=generator),),))


def build(options: ProbeOptions) -> ProbeTrainer:
    return ProbeTrainer(options)
