"""The `classifier` trainer: a backbone plus a linear head trained with a logits loss, for liveness.

Score convention: the model's ``score`` output is the log-odds of live, ``logit_live - logit_spoof``
(``log P(live) / P(spoof)``; higher = more likely live, 0 = even). Unlike the softmax P(live), it
keeps its order where float32 probabilities saturate to 1.0. The decision threshold, in the same
unit, is chosen on validation at the best epoch by ``trainer.threshold`` (``eer``, ``apcer=x`` or
``bpcer=x``) and applied unchanged to test and to exported models (``faceauth.threshold`` and
``faceauth.threshold_rule`` in their metadata).

Model selection: the best epoch is the one with the best ``trainer.monitor`` on validation
(``loss`` is the validation loss of the recipe's criterion); ties go to the higher validation AUC,
then the lower validation loss (`faceauth.training.loop`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Literal

import attrs
import numpy as np
import torch

import faceauth
from faceauth.data import LIVE, Splits, live_log_odds
from faceauth.errors import DataError, RecipeError
from faceauth.io.images import utf8_text
from faceauth.metrics import threshold_rule_option
from faceauth.metrics.report import ReportTarget
from faceauth.plugins.trainers.auxiliary import (
    AuxiliaryOptions,
    FourierHead,
    PixelMapHead,
    fourier_loss,
    has_feature_map,
    pixel_map_loss,
)
from faceauth.plugins.trainers.liveness_scores import (
    inputs_of,
    measure,
    predict,
    report_split,
    sample_grid,
    side_figures,
    torch_frame_scorer,
    write_report,
)
from faceauth.plugins.trainers.texture import LbpScore, TextureOptions, texture_branch
from faceauth.training import checkpoint, distributed
from faceauth.training.export import Bundle, model_metadata
from faceauth.training.loaders import image_loader, reraise_worker_errors, to_device
from faceauth.training.loop import LoopOptions, TrainingLoop, higher_is_better, lower_is_better, seed_from
from faceauth.training.run import FitResult, Run
from faceauth.training.transforms import AugmentOptions, eval_transform, spoof_transform, train_transform

log = logging.getLogger(__name__)


@attrs.frozen
class ClassifierOptions(LoopOptions):
    monitor: Literal["acer", "hter", "eer", "auc", "loss"] = "acer"
    threshold: str = attrs.field(default="eer", validator=threshold_rule_option)  # eer | apcer=<rate> | bpcer=<rate>
    # image: each input image standardised on its own (per channel), inside the model and its export,
    # so a global brightness, contrast or colour gain cannot be a cue
    input_norm: Literal["dataset", "image"] = "dataset"
    pixel_supervision: AuxiliaryOptions = AuxiliaryOptions()  # weight > 0: DeepPixBiS-style map loss
    fourier: AuxiliaryOptions = AuxiliaryOptions()  # weight > 0: the log-spectrum target
    balance: Literal["none", "sampler"] = "none"  # sampler: draw each class equally often (or use loss.class_weights)
    augment: AugmentOptions = AugmentOptions()
    texture: TextureOptions = TextureOptions()  # weight > 0: + weight x the LBP baseline's log-odds


def standardise_images(x: torch.Tensor) -> torch.Tensor:
    """Each image [..., C, H, W] less its own per-channel mean, over its own per-channel std."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + 1e-5)


class Classifier(torch.nn.Module):
    """Backbone + linear head; with `pixel_map` / `fourier`, auxiliary heads on the backbone's feature
    map that only `forward_train` uses (see `faceauth.plugins.trainers.auxiliary`).

    With `texture` (the fitted LBP baseline), ``texture_weight`` x its log-odds is added to the live logit:
    the output's log-odds is the sum of both models'. `forward_train` sees the network's logits only."""

    def __init__(self, backbone: torch.nn.Module, num_classes: int, *, input_norm: str = "dataset",
                 pixel_map: bool = False, fourier: bool = False, texture: LbpScore | None = None,
                 texture_weight: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.num_features, num_classes)
        self.standardise = input_norm == "image"
        channels = getattr(backbone, "map_channels", 0)
        self.pixel_head = PixelMapHead(channels) if pixel_map else None
        self.fourier_head = FourierHead(channels) if fourier else None
        self.texture, self.texture_weight = texture, texture_weight
        self.register_buffer("live", torch.nn.functional.one_hot(torch.tensor(LIVE), num_classes).float(),
                             persistent=False)

    def network_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(standardise_images(x) if self.standardise else x))

    def fuse(self, network_logits: torch.Tensor, texture_score: torch.Tensor) -> torch.Tensor:
        return network_logits + (self.texture_weight * texture_score).unsqueeze(1) * self.live

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network_logits(x)
        return logits if self.texture is None else self.fuse(logits, self.texture(x))

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, {"pixel": map logits [N, h, w], "fourier": spectrum [N, h, w]}) of the heads present."""
        if self.pixel_head is None and self.fourier_head is None:
            return self.network_logits(x), {}
        features, feature_map = self.backbone.forward_map(standardise_images(x) if self.standardise else x)
        aux = {}
        if self.pixel_head is not None:
            aux["pixel"] = self.pixel_head(feature_map)
        if self.fourier_head is not None:
            aux["fourier"] = self.fourier_head(feature_map)
        return self.head(features), aux


class LivenessScore(torch.nn.Module):
    """The exported form: normalised images in, the log-odds of live and the logits out."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return live_log_odds(logits.float()), logits


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


class LivenessTask:
    name = "liveness"

    def __init__(self, run: Run, options: ClassifierOptions, trainer: ClassifierTrainer):
        self.run, self.options, self.trainer = run, options, trainer
        self.warned_separable = False  # said once per run (see validate)
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
        if self.model.texture is not None and run.resume is None:  # fitted once, on the training split as
            # evaluation sees it; a resumed run takes the fitted buffers from its checkpoint
            self.model.texture.fit(trainer.eval_loader(self.splits.train, self.preprocess, seed), run.device,
                                   options.texture, seed, progress=options.progress)

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
        return {"classes": list(self.classes), "threshold_rule": f"{self.options.threshold} on val"}

    def set_epoch(self, epoch: int, position: int) -> None:
        self.train_loader.sampler.set_epoch(epoch, start=position * self.train_loader.batch_size)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        x = to_device(inputs_of(batch), self.run.device, self.options.channels_last)
        labels = batch["label"].to(self.run.device, non_blocking=True)
        logits, aux = self.model.forward_train(x)
        loss = self.criterion(logits, labels)
        if "pixel" in aux:
            loss = loss + self.options.pixel_supervision.weight * pixel_map_loss(aux["pixel"], labels)
        if "fourier" in aux:
            loss = loss + self.options.fourier.weight * fourier_loss(aux["fourier"], x)
        return loss

    def _predict(self, loader: Any) -> dict[str, np.ndarray]:
        frame_scorer = getattr(self.model.backbone, "frame_scorer", None)
        baseline = torch_frame_scorer(frame_scorer) if frame_scorer is not None else None

        @torch.no_grad()
        def score_and_logits(x: torch.Tensor) -> tuple[np.ndarray, ...]:
            if self.model.texture is None:
                logits = self.model(x).float()
                return live_log_odds(logits).cpu().numpy(), logits.cpu().numpy()
            network, texture = self.model.network_logits(x).float(), self.model.texture(x)  # each branch alone too
            logits = self.model.fuse(network, texture)
            return (live_log_odds(logits).cpu().numpy(), logits.cpu().numpy(),
                    {"network_score": live_log_odds(network).cpu().numpy(), "texture_score": texture.cpu().numpy()})

        return predict(score_and_logits, loader, self.run.device, channels_last=self.options.channels_last,
                       progress=self.options.progress, frame_score=baseline)

    @torch.no_grad()
    def validation_loss(self, predictions: dict[str, np.ndarray]) -> float:
        """The recipe's criterion on the validation split (every sample, one batch of logits)."""
        device = self.run.device
        logits = torch.from_numpy(predictions["logits"]).to(device)
        return float(self.criterion(logits, torch.from_numpy(predictions["label"]).long().to(device)))

    def validate(self, step: int) -> dict[str, float]:
        predictions = self._predict(self.val_loader)
        # The PR curve wants probabilities: P(live) = sigmoid(log-odds), for this figure only.
        probability = 1.0 / (1.0 + np.exp(-np.clip(predictions["score"], -80.0, 80.0)))
        self.run.writer.add_pr_curve("val/pr_live", predictions["label"] == LIVE, probability, step)
        rule = self.options.threshold
        figures = {**measure(predictions, threshold=None, rule=rule), **side_figures(predictions, None, rule)}
        figures["loss"] = self.validation_loss(predictions)
        if figures.get("auc") == 1.0 and not self.warned_separable:
            self.warned_separable = True
            log.warning("validation separates live from spoof perfectly (AUC 1.0) at epoch %d: the %s threshold sits "
                        "at an arbitrary point of the gap and may not transfer to test; validate on a held-out "
                        "session or capture condition where the dataset has one (NUAA: data.validation=session)",
                        step, rule)
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
        thresholds = self._side_thresholds()
        for label, dataset in sets.items():
            if dataset is not None:
                predictions = self._predict(self.trainer.eval_loader(dataset, self.preprocess, self.run.recipe.seed))
                results[label] = {**measure(predictions, threshold=threshold), **side_figures(predictions, thresholds)}
                reports.append(report_split(label, predictions, results[label]))
        if reports and distributed.is_main():
            rule = self.checkpoint_extras().get("threshold_rule", "eer on val")
            write_report(self.run, reports, threshold, rule, str(checkpoint.RUN_CHECKPOINT), self.run.writer, step)
        return results

    def _side_thresholds(self) -> dict[str, float]:
        """The thresholds of the side scores (frame baseline, fused branches), chosen on validation by this
        model (the best epoch's, which `test` scores with)."""
        if self.model.texture is None and getattr(self.model.backbone, "frame_scorer", None) is None:
            return {}
        figures = side_figures(self._predict(self.val_loader), None, self.options.threshold)
        return {key.removesuffix("/threshold"): value for key, value in figures.items() if key.endswith("/threshold")}

    def log_samples(self, count: int = 16) -> None:
        """Once per run: a grid of training inputs, framed green (live) or red (spoof), and their labels."""
        image, labels = sample_grid(self.train_loader.dataset, self.classes, self.preprocess, count)
        self.run.writer.add_image("train/samples", image, 0)
        self.run.writer.add_text("train/sample_labels", utf8_text(", ".join(labels)), 0)  # folder names need not be UTF-8


def stored_threshold(payload: dict[str, Any]) -> tuple[float | None, str]:
    """A checkpoint's (threshold, rule) in log-odds; checkpoints from before the log-odds score
    (no ``threshold_rule``) stored P(live), which maps to log-odds one to one."""
    threshold, rule = payload.get("threshold"), payload.get("threshold_rule")
    if rule is None and threshold is not None:
        p = min(max(float(threshold), 1e-7), 1.0 - 2.0 ** -24)  # float32 P(live) cannot resolve beyond these
        threshold, rule = math.log(p) - math.log1p(-p), "eer on val (converted from P(live))"
    return threshold, rule or "eer on val"


class ClassifierTrainer:
    def __init__(self, options: ClassifierOptions):
        self.options = options

    def build_model(self, run: Run, num_classes: int) -> Classifier:
        backbone = run.build("backbone")
        options = self.options
        wanted = [key for key, aux in (("pixel_supervision", options.pixel_supervision), ("fourier", options.fourier))
                  if aux.weight > 0]
        if wanted and not has_feature_map(backbone):
            raise RecipeError(f"trainer.{wanted[0]}: needs a backbone that exposes its feature map (forward_map, "
                              f"map_channels), but backbone.name '{run.recipe.backbone.name}' has no feature map "
                              f"(use e.g. resnet18, or set trainer.{wanted[0]}.weight=0)")
        return Classifier(backbone, num_classes, input_norm=options.input_norm,
                          pixel_map=options.pixel_supervision.weight > 0, fourier=options.fourier.weight > 0,
                          texture=texture_branch(options.texture, backbone, run.recipe.backbone.name),
                          texture_weight=options.texture.weight)

    def load_model(self, run: Run, payload: dict[str, Any]) -> Classifier:
        checkpoint.expect_task(payload, LivenessTask.name, "load a liveness classifier")
        model = self.build_model(run, len(payload["classes"]))
        model.load_state_dict(payload["model"])
        model.classes = tuple(payload["classes"])
        model.threshold, model.threshold_rule = stored_threshold(payload)
        return model.eval()

    def eval_loader(self, dataset: Any, preprocess: Any, seed: int) -> Any:
        return image_loader(dataset, eval_transform(preprocess), batch_size=self.options.batch_size,
                            num_workers=self.options.num_workers, seed=seed, shuffle=False)

    @staticmethod
    def torch_scorer(model: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return live_log_odds(model(x).float()).cpu().numpy()

        return score

    def evaluate(self, run: Run, score: Callable[[torch.Tensor], np.ndarray], split: str,
                 threshold: float | None, report: ReportTarget | None = None) -> dict[str, float]:
        """Metrics of `score` on one split of the recipe's dataset (what faceauth-eval reports), and
        with `report` the liveness report of that split in `report.directory`."""
        dataset = run.build("data").get(split)
        if dataset is None:
            raise DataError(f"data: the dataset has no '{split}' split")
        loader = self.eval_loader(dataset, run.preprocess(), run.recipe.seed)
        predictions = predict(score, loader, torch.device("cpu"), channels_last=self.options.channels_last,
                              progress=self.options.progress)
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
        seed_from(run)
        return TrainingLoop(run, self.options, LivenessTask(run, self.options, self)).fit()

    def export_bundle(self, run: Run, model: Classifier) -> Bundle:
        model = model.to("cpu").eval()
        preprocess = model.backbone.preprocess
        h, w = preprocess.input_size
        metadata = model_metadata(
            run, preprocess, task="liveness", threshold=getattr(model, "threshold", None),
            score="log-odds of live, logit_live - logit_spoof: higher = more likely live, 0 = even; "
                  "accept as live when score >= threshold",
            classes=",".join(getattr(model, "classes", ("live", "spoof"))))
        metadata["faceauth.threshold_rule"] = getattr(model, "threshold_rule", None) or "eer on val"
        if model.texture is not None:
            metadata["faceauth.texture"] = f"score includes {model.texture_weight:g} x {model.texture.description()}"
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
            if getattr(built[0], name) is None:
                raise faceauth.ExportError(f"export.quantize: int8 is calibrated on the validation split and judged "
                                           f"on the test split, and data has no {name} split (use quantize: none)")
            return self.eval_loader(getattr(built[0], name), preprocess, run.recipe.seed)

        def calibration() -> Any:
            return ((inputs_of(batch).numpy(),) for batch in reraise_worker_errors(split("val")))

        def evaluate(score: Callable[[torch.Tensor], np.ndarray]) -> dict[str, float]:
            return measure(predict(score, split("test"), torch.device("cpu"), channels_last=self.options.channels_last,
                                   progress=self.options.progress), threshold)

        return {"calibration": calibration, "evaluate": evaluate, "parity_metric": "acer"}


def build(options: ClassifierOptions) -> ClassifierTrainer:
    return ClassifierTrainer(options)
