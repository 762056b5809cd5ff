"""The `classifier` trainer: a backbone plus a linear head trained with a logits loss, for liveness.

Score convention: the model's ``score`` output is P(live), so higher = more likely live. The
decision threshold is chosen at the validation EER of the best epoch and applied unchanged to test
and to exported models (stored in their metadata).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs
import numpy as np
import torch
from torchvision.utils import make_grid

import faceauth
from faceauth import distributed
from faceauth import metrics as fa_metrics
from faceauth.components import Trainer
from faceauth.data import LIVE, Splits, reraise_worker_errors
from faceauth.errors import DataError, RecipeError
from faceauth.export import Bundle, model_metadata
from faceauth.report import ReportTarget, SplitScores, write_liveness_report
from faceauth.plugins.trainers.loop import (LoopOptions, TrainingLoop, higher_is_better, image_loader,
                                            lower_is_better, to_device)
from faceauth.plugins.trainers.transforms import (AugmentOptions, denormalise, eval_transform, spoof_transform,
                                                  train_transform)
from faceauth.runner import FitResult, Run


@attrs.frozen
class ClassifierOptions(LoopOptions):
    monitor: Literal["acer", "hter", "eer", "auc", "loss"] = "acer"
    balance: Literal["none", "sampler"] = "none"  # sampler: draw each class equally often (or use loss.class_weights)
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


def inputs_of(batch: dict[str, Any]) -> torch.Tensor:
    """A batch's model input: clips [N, T, 3, H, W] when samples are clips, else images [N, 3, H, W]."""
    return batch["frames"] if "frames" in batch else batch["image"]


def check_input_kind(backbone: torch.nn.Module, dataset: Any, run: Run, section: str) -> None:
    """A RecipeError when the samples are clips and the backbone takes images, or the other way round."""
    if dataset is None or len(dataset) == 0:
        return
    clips, temporal = "frames" in dataset[0], bool(getattr(backbone, "temporal", False))
    name = run.recipe.backbone.name
    if temporal and not clips:
        raise RecipeError(f"{section}.name: backbone '{name}' takes clips of frames, but {section} gives single "
                          f"images; set {section}.clip_length (casia_fasd, replay_attack) or use a clip dataset "
                          f"(video_folder, demo_clips)")
    if clips and not temporal:
        raise RecipeError(f"{section}.clip_length: {section} gives clips of frames, but backbone '{name}' takes "
                          f"single images; remove {section}.clip_length or use a temporal backbone (e.g. lstm)")


def build_backbone(run: Run) -> torch.nn.Module:
    backbone = run.build("backbone")
    for attribute in ("num_features", "preprocess"):
        if not hasattr(backbone, attribute):
            raise faceauth.PluginError(f"backbone '{run.recipe.backbone.name}' has no '{attribute}' attribute "
                                       f"(see faceauth.components.Backbone)")
    return backbone


def per_video(predictions: dict[str, np.ndarray], key: str = "score") -> dict[str, np.ndarray]:
    """Clip scores averaged per source video: the field's video-level decision."""
    videos, first, inverse = np.unique(predictions["video"], return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=predictions[key], minlength=len(videos))
    counts = np.bincount(inverse, minlength=len(videos))
    return {"score": sums / counts, "label": predictions["label"][first],
            "attack_type": predictions["attack_type"][first]}


def measure(predictions: dict[str, np.ndarray], threshold: float | None, key: str = "score") -> dict[str, float]:
    """Liveness metrics of `predictions[key]`; per video when the samples name their video."""
    if "video" in predictions:
        predictions = per_video(predictions, key)
        key = "score"
    is_live = predictions["label"] == LIVE
    attack_types = [t if t else "attack" for t in predictions["attack_type"]]
    return fa_metrics.liveness_metrics(predictions[key], is_live, attack_types, threshold=threshold)


def report_split(name: str, predictions: dict[str, np.ndarray], figures: dict[str, float]) -> SplitScores:
    """A split's per-sample predictions and the unit its metrics were computed on (videos when named)."""
    videos = "video" in predictions and len(np.unique(predictions["video"])) < len(predictions["video"])
    return SplitScores(name, predictions, per_video(predictions) if videos else predictions, figures,
                       "video" if videos else "sample")


def write_report(run: Run, splits: list[SplitScores], threshold: float | None, rule: str, model: str,
                 writer: Any, step: int = 0, directory: Any = None) -> None:
    """`faceauth.report.write_liveness_report` into the run directory (or `directory`)."""
    data = {key: run.recipe.to_dict().get(key) for key in ("data", "test_data") if run.recipe.to_dict().get(key)}
    write_liveness_report(directory or run.dir, splits, model=model, data=data, threshold=threshold,
                          threshold_rule=rule, started=run.started, components=run.versions()["components"],
                          score="higher = more likely live", writer=writer, step=step)


class LivenessTask:
    name = "liveness"

    def __init__(self, run: Run, options: ClassifierOptions, trainer: ClassifierTrainer):
        self.run, self.options, self.trainer = run, options, trainer
        self.splits: Splits = run.build("data")
        self.classes = tuple(self.splits.classes)
        self.model = trainer.build_model(run, len(self.classes)).to(run.device)
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.head = None
        loss = run.component("loss")
        if loss.consumes != "logits":
            raise RecipeError(f"loss.name: '{run.recipe.loss.name}' consumes {loss.consumes}; the classifier "
                              f"trainer needs a loss on logits (e.g. cross_entropy)")
        self.criterion = run.build("loss", num_classes=len(self.classes),
                                   num_features=self.model.backbone.num_features).to(run.device)
        self.preprocess = self.model.backbone.preprocess
        check_input_kind(self.model.backbone, self.splits.train, run, "data")
        seed = run.recipe.seed
        self.train_loader = image_loader(self.splits.train, train_transform(self.preprocess, options.augment),
                                         batch_size=options.batch_size, num_workers=options.num_workers,
                                         seed=seed, shuffle=True, weights=self._balance_weights(),
                                         spoof_transform=spoof_transform(options.augment))
        self.val_loader = trainer.eval_loader(self.splits.val, self.preprocess, seed)
        self.monitor = (options.monitor, higher_is_better if options.monitor == "auc" else lower_is_better)

    def _balance_weights(self) -> np.ndarray | None:
        if self.options.balance == "none":
            return None
        labels = getattr(self.splits.train, "labels", None)
        if labels is None:
            raise RecipeError("trainer.balance: 'sampler' needs a dataset that lists its labels; "
                              "the training dataset does not (use loss.class_weights instead)")
        labels = np.asarray(labels)
        counts = np.bincount(labels, minlength=len(self.classes)).astype(np.float64)
        return 1.0 / counts[labels]

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    def set_epoch(self, epoch: int, position: int) -> None:
        self.train_loader.sampler.set_epoch(epoch, start=position * self.train_loader.batch_size)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        x = to_device(inputs_of(batch), self.run.device, self.options.channels_last)
        return self.criterion(self.model(x), batch["label"].to(self.run.device, non_blocking=True))

    def _predict(self, loader: Any) -> dict[str, np.ndarray]:
        frame_scorer = getattr(self.model.backbone, "frame_scorer", None)
        baseline = self.trainer.torch_frame_scorer(frame_scorer) if frame_scorer is not None else None
        return self.trainer.predict(self.trainer.torch_scorer(self.model), loader, self.run.device, baseline)

    def _with_baseline(self, predictions: dict[str, np.ndarray], figures: dict[str, float],
                       threshold: float | None) -> dict[str, float]:
        """The frame-level baseline's figures beside the model's, as ``frame_baseline/<metric>``."""
        if "frame_score" not in predictions:
            return figures
        baseline = measure(predictions, threshold, key="frame_score")
        return {**figures, **{f"frame_baseline/{k}": v for k, v in baseline.items()}}

    def validate(self, step: int) -> dict[str, float]:
        predictions = self._predict(self.val_loader)
        self.run.writer.add_pr_curve("val/pr_live", predictions["label"] == LIVE, predictions["score"], step)
        figures = self._with_baseline(predictions, measure(predictions, threshold=None), None)
        self.baseline_threshold = figures.get("frame_baseline/threshold")
        return figures

    def test(self, step: int, threshold: float | None) -> dict[str, dict[str, float]]:
        """The test split, and the test split of `test_data` (cross-dataset) when the recipe has one."""
        sets = {"test": self.splits.test}
        if self.run.recipe.test_data is not None:
            cross = self.run.build("test_data")
            if cross.test is None:
                raise DataError("test_data: the dataset has no test split")
            check_input_kind(self.model.backbone, cross.test, self.run, "test_data")
            sets["cross_test"] = cross.test
        results, reports = {}, []
        for label, dataset in sets.items():
            if dataset is not None:
                predictions = self._predict(self.trainer.eval_loader(dataset, self.preprocess, self.run.recipe.seed))
                results[label] = self._with_baseline(predictions, measure(predictions, threshold=threshold),
                                                     getattr(self, "baseline_threshold", None))
                reports.append(report_split(label, predictions, results[label]))
        if reports and distributed.is_main():
            rule = self.checkpoint_extras().get("threshold_rule", "eer on val")
            write_report(self.run, reports, threshold, rule, "checkpoints/best.pt", self.run.writer, step)
        return results

    def log_samples(self, count: int = 16) -> None:
        """Once per run: a grid of training inputs, framed green (live) or red (spoof), and their labels."""
        dataset = self.train_loader.dataset
        picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).astype(int)
        images, labels = [], []
        for index in picks:
            sample = dataset[(int(index), int(index))]
            first = sample["frames"][0] if "frames" in sample else sample["image"]  # a clip shows its first frame
            image = torch.nn.functional.pad(denormalise(first[None], self.preprocess)[0], (3, 3, 3, 3))
            colour = (0.1, 0.8, 0.1) if sample["label"] == LIVE else (0.9, 0.1, 0.1)
            for channel, value in enumerate(colour):
                plane = image[channel]
                plane[:3, :], plane[-3:, :], plane[:, :3], plane[:, -3:] = value, value, value, value
            images.append(image)
            labels.append(self.classes[sample["label"]] + (f":{sample['attack_type']}" if sample.get("attack_type") else ""))
        self.run.writer.add_image("train/samples", make_grid(torch.stack(images), nrow=8), 0)
        self.run.writer.add_text("train/sample_labels", ", ".join(labels), 0)


class ClassifierTrainer:
    def __init__(self, options: ClassifierOptions):
        self.options = options

    def build_model(self, run: Run, num_classes: int) -> Classifier:
        return Classifier(build_backbone(run), num_classes)

    def load_model(self, run: Run, payload: dict[str, Any]) -> Classifier:
        if payload.get("task") != LivenessTask.name:
            raise faceauth.CheckpointError(
                f"{payload.get('path')}: a {payload.get('task', 'unknown')} checkpoint; expected a liveness classifier")
        model = self.build_model(run, len(payload["classes"]))
        model.load_state_dict(payload["model"])
        model.threshold, model.classes = payload.get("threshold"), tuple(payload["classes"])
        return model.eval()

    def eval_loader(self, dataset: Any, preprocess: Any, seed: int) -> Any:
        return image_loader(dataset, eval_transform(preprocess), batch_size=self.options.batch_size,
                            num_workers=self.options.num_workers, seed=seed, shuffle=False)

    def predict(self, score: Callable[[torch.Tensor], np.ndarray], loader: Any, device: torch.device,
                frame_score: Callable[[torch.Tensor], np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Scores of every sample in order, with labels, attack types and (for clips) video ids.

        `frame_score`, when given, scores each frame of a clip alone (the frame-level baseline of a
        temporal model); its per-clip mean is returned as ``frame_score``.
        """
        out: dict[str, list[Any]] = {"score": [], "label": [], "attack_type": [], "video": [], "frame_score": []}
        for batch in reraise_worker_errors(loader):
            x = to_device(inputs_of(batch), device, self.options.channels_last)
            out["score"].append(score(x))
            out["label"].append(batch["label"].numpy())
            out["attack_type"].extend(batch.get("attack_type", [""] * len(batch["label"])))
            out["video"].extend(batch.get("video", []))
            if frame_score is not None:
                n, t = x.shape[:2]
                out["frame_score"].append(frame_score(x.flatten(0, 1)).reshape(n, t).mean(axis=1))
        # Under torchrun each process scored its share: every process gets all of them.
        parts = distributed.gather(out)
        result = {"score": np.concatenate([s for p in parts for s in p["score"]]),
                  "label": np.concatenate([s for p in parts for s in p["label"]]),
                  "attack_type": np.array([a for p in parts for a in p["attack_type"]])}
        if out["video"]:
            result["video"] = np.array([v for p in parts for v in p["video"]])
        if out["frame_score"]:
            result["frame_score"] = np.concatenate([s for p in parts for s in p["frame_score"]])
        return result

    @staticmethod
    def torch_frame_scorer(frame_scorer: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def score(frames: torch.Tensor) -> np.ndarray:
            return frame_scorer(frames).float().cpu().numpy()

        return score

    @staticmethod
    def torch_scorer(model: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return torch.softmax(model(x).float(), dim=1)[:, LIVE].cpu().numpy()

        return score

    def evaluate(self, run: Run, score: Callable[[torch.Tensor], np.ndarray], split: str,
                 threshold: float | None, report: ReportTarget | None = None) -> dict[str, float]:
        """Metrics of `score` on one split of the recipe's dataset (what faceauth-eval reports), and
        with `report` the liveness report of that split in `report.directory`."""
        dataset = run.build("data").get(split)
        if dataset is None:
            raise DataError(f"data: the dataset has no '{split}' split")
        loader = self.eval_loader(dataset, build_backbone(run).preprocess, run.recipe.seed)
        predictions = self.predict(score, loader, torch.device("cpu"))
        figures = measure(predictions, threshold)
        if report is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(report.directory))
            try:
                write_report(run, [report_split(split, predictions, figures)], threshold, report.threshold_rule,
                             report.model, writer, directory=report.directory)
            finally:
                writer.close()
        return figures

    def fit(self, run: Run) -> FitResult:
        torch.manual_seed(run.recipe.seed)
        if run.recipe.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        return TrainingLoop(run, self.options, LivenessTask(run, self.options, self)).fit()

    def export_bundle(self, run: Run, model: Classifier) -> Bundle:
        model = model.to("cpu").eval()
        preprocess = model.backbone.preprocess
        h, w = preprocess.input_size
        metadata = model_metadata(
            run, preprocess, task="liveness", threshold=getattr(model, "threshold", None),
            score="P(live): higher = more likely live; accept as live when score >= threshold",
            classes=",".join(getattr(model, "classes", ("live", "spoof"))))
        generator = torch.Generator().manual_seed(0)
        axes = {"input": {0: "batch"}, "score": {0: "batch"}, "logits": {0: "batch"}}
        if getattr(model.backbone, "temporal", False):
            # Clips: batch and sequence length both stay free; checked at three lengths.
            length = model.backbone.clip_length
            example = torch.randn(2, length, 3, h, w, generator=generator)
            checks = tuple((torch.randn(n, t, 3, h, w, generator=generator),) for n, t in ((1, 4), (3, 8), (2, 16)))
            axes["input"] = {0: "batch", 1: "time"}
            metadata["faceauth.input"] = "clips [batch, time, 3, H, W]; score per clip, average clips per video"
        else:
            example = torch.randn(2, 3, h, w, generator=generator)
            checks = ((torch.randn(3, 3, h, w, generator=generator),),)
            metadata["faceauth.input"] = "images [batch, 3, H, W]"
        return Bundle(module=LivenessScore(model), example_inputs=(example,), input_names=("input",),
                      output_names=("score", "logits"), dynamic_axes=axes, metadata=metadata, check_inputs=checks,
                      **self._int8_data(run, preprocess, getattr(model, "threshold", None)))

    def _int8_data(self, run: Run, preprocess: Any, threshold: float | None) -> dict[str, Any]:
        """What int8 export needs: validation inputs to calibrate on, and test ACER to judge it by.
        The data is built only when an exporter asks."""
        built: list[Splits] = []

        def split(name: str) -> Any:
            built[:] = built or [run.build("data")]
            return self.eval_loader(getattr(built[0], name), preprocess, run.recipe.seed)

        def calibration() -> Any:
            return ((inputs_of(batch).numpy(),) for batch in reraise_worker_errors(split("val")))

        def evaluate(score: Callable[[torch.Tensor], np.ndarray]) -> dict[str, float]:
            return measure(self.predict(score, split("test"), torch.device("cpu")), threshold)

        return {"calibration": calibration, "evaluate": evaluate, "parity_metric": "acer"}


def build(options: ClassifierOptions) -> ClassifierTrainer:
    return ClassifierTrainer(options)


def trainers() -> list[Trainer]:
    return [Trainer(name="classifier", build=build, options=ClassifierOptions,
                    description="backbone + linear head with a logits loss; liveness metrics; P(live) export")]
