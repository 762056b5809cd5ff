"""The `embedding` trainer: face-recognition embeddings trained with a margin or triplet loss.

The backbone's output is the embedding; the loss owns whatever else is trained (class centres of
ArcFace/CosFace). Validation and test are face-verification protocols (`faceauth.data.Verification`):
each image is embedded once (with its horizontal flip added when ``flip_test`` is on), pairs are
scored by cosine similarity, and the field's figures are reported: 10-fold accuracy, EER, AUC and
TAR at FAR = 1e-3 / 1e-4. The threshold is the validation 10-fold mean, applied unchanged to test.

Template protocols (`faceauth.data.TemplateVerification`: IJB-B, IJB-C) are measured the same way
but pool faces into templates first (`faceauth.plugins.trainers.templates`) and report the ROC
table, TAR at FAR = 1e-6 ... 1e-1. A recipe's ``test_data`` (one dataset section, e.g. ``ijb``) adds
its test protocol to the test step as ``test_<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs
import numpy as np
import torch
from torchvision.utils import make_grid

import faceauth
from faceauth import metrics as fa_metrics
from faceauth.data import Splits, TemplateVerification, Verification
from faceauth.errors import DataError, RecipeError
from faceauth.io import console
from faceauth.io.images import utf8_text
from faceauth.plugins.trainers.templates import template_metrics
from faceauth.training import checkpoint, distributed
from faceauth.training.export import Bundle, model_metadata
from faceauth.training.loaders import image_loader, reraise_worker_errors, to_device
from faceauth.training.loop import LoopOptions, TrainingLoop, higher_is_better, lower_is_better, seed_from
from faceauth.training.run import FitResult, Run
from faceauth.training.samplers import PKSampler
from faceauth.training.transforms import AugmentOptions, denormalise, eval_transform, train_transform


@attrs.frozen
class EmbeddingOptions(LoopOptions):
    sampler: Literal["random", "pk"] = "random"  # pk: P identities x K images per batch (triplet loss)
    identities_per_batch: int = attrs.field(default=8, validator=faceauth.schema.positive)
    images_per_identity: int = attrs.field(default=4, validator=faceauth.schema.positive)
    flip_test: bool = True
    monitor: Literal["accuracy", "eer", "auc", "loss"] = "accuracy"
    # Aligned face crops: flips and mild colour changes, no crops or rotations that break alignment.
    augment: AugmentOptions = AugmentOptions(crop_scale=1.0, rotation=0.0, color_jitter=0.1)


class EmbeddingModel(torch.nn.Module):
    """The exported form: normalised images in, (L2-normalised) embeddings out."""

    def __init__(self, backbone: torch.nn.Module, normalise: bool = True):
        super().__init__()
        self.backbone, self.normalise = backbone, normalise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.backbone(x)
        return torch.nn.functional.normalize(embedding, dim=1) if self.normalise else embedding


def cosine_scores(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", unit[pairs[:, 0]], unit[pairs[:, 1]])


def roc_figure(scores: np.ndarray, is_same: np.ndarray, title: str, far_min: float = 1e-4) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fpr, tpr, _ = fa_metrics.roc_points(scores, is_same)
    figure = Figure(figsize=(4, 4))
    axes = figure.add_subplot()
    axes.plot(np.maximum(fpr, far_min / 10), tpr)
    axes.set(xscale="log", xlim=(far_min, 1), ylim=(0, 1), xlabel="FAR", ylabel="TAR", title=title)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    return figure


def roc_table_markdown(figures: dict[str, float]) -> str:
    """The TAR@FAR row of a template protocol as a Markdown table (TensorBoard's text tab renders it)."""
    fars = fa_metrics.ROC_TABLE_FARS
    cells = [f"{100 * figures[fa_metrics.far_key(far)]:.2f}" for far in fars]
    return ("| FAR | " + " | ".join(f"{far:.0e}" for far in fars) + " |\n|" + "---|" * (len(fars) + 1)
            + "\n| TAR (%) | " + " | ".join(cells) + " |")


class EmbeddingTask:
    name = "embedding"

    def __init__(self, run: Run, options: EmbeddingOptions, trainer: EmbeddingTrainer):
        self.run, self.options, self.trainer = run, options, trainer
        self.splits: Splits = run.build("data")
        train = self.splits.train
        if train is None:
            raise DataError(f"data: dataset '{run.recipe.data.name}' has no training split")
        self.model = run.build("backbone").to(run.device)
        if options.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        loss = run.component("loss")
        if loss.consumes != "embeddings":
            raise RecipeError(f"loss.name: '{run.recipe.loss.name}' consumes {loss.consumes}; the embedding trainer "
                              f"needs a loss on embeddings (arcface, cosface, combined_margin, triplet)")
        self.head = run.build("loss", num_classes=len(self.splits.classes),
                              num_features=self.model.num_features).to(run.device)
        self.preprocess = self.model.preprocess
        transform = train_transform(self.preprocess, options.augment)
        seed = run.recipe.seed
        batch_sampler = None
        if options.sampler == "pk":
            labels = getattr(train, "labels", None)
            if labels is None:
                raise RecipeError(f"trainer.sampler: 'pk' needs a dataset that lists its labels; "
                                  f"'{run.recipe.data.name}' does not (use sampler: random)")
            batch_sampler = PKSampler(labels, options.identities_per_batch, options.images_per_identity, seed,
                                      names=self.splits.classes, with_seeds=True)
        self.train_loader = image_loader(train, transform, batch_size=options.batch_size,
                                         num_workers=options.num_workers, seed=seed, shuffle=True,
                                         batch_sampler=batch_sampler)
        self.test_data = self._test_data_protocols()  # read now: a bad file fails before training, not after
        key = options.monitor if self.splits.val is not None else "loss"
        self.monitor = (key, lower_is_better if key in ("eer", "loss") else higher_is_better)

    def _test_data_protocols(self) -> list[Verification | TemplateVerification]:
        if self.run.recipe.test_data is None:
            return []
        extra = self.run.build("test_data")
        found = [p for p in (extra.test, *extra.more_tests.values()) if p is not None]
        if not found:
            raise DataError("test_data: the dataset has no test protocol")
        if not all(isinstance(p, (Verification, TemplateVerification)) for p in found):
            raise DataError("test_data: the dataset's test split is not a verification protocol (an embedding run "
                            "is tested on pairs or templates, e.g. ijb)")
        return found

    def set_epoch(self, epoch: int, position: int) -> None:
        if self.train_loader.batch_sampler is not None and isinstance(self.train_loader.batch_sampler, PKSampler):
            self.train_loader.batch_sampler.set_epoch(epoch, position)
        else:
            self.train_loader.sampler.set_epoch(epoch, start=position * self.train_loader.batch_size)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        x = to_device(batch["image"], self.run.device, self.options.channels_last)
        return self.head(self.model(x), batch["label"].to(self.run.device, non_blocking=True))

    def _measure(self, protocol: Verification | TemplateVerification, step: int, prefix: str,
                 threshold: float | None = None) -> dict[str, float]:
        embeddings = self.trainer.embed(self.trainer.torch_scorer(self.model), protocol.images, self.preprocess,
                                        self.run.recipe.seed, self.run.device)
        if isinstance(protocol, TemplateVerification):
            figures, scores = template_metrics(embeddings, protocol, threshold, progress=self.options.progress)
            self.run.writer.add_figure(f"{prefix}/roc_{protocol.name}", roc_figure(
                scores, protocol.is_same, f"{protocol.name} ROC", far_min=1e-6), step)
            self.run.writer.add_text(f"{prefix}/roc_table_{protocol.name}", roc_table_markdown(figures), step)
            return figures
        scores = cosine_scores(embeddings, protocol.pairs)
        figures = fa_metrics.verification_metrics(scores, protocol.is_same)
        if threshold is not None:
            figures["accuracy_at_val_threshold"] = float(np.mean((scores >= threshold) == protocol.is_same))
        self.run.writer.add_figure(f"{prefix}/roc_{protocol.name}", roc_figure(scores, protocol.is_same,
                                                                                f"{protocol.name} ROC"), step)
        return figures

    def validate(self, step: int) -> dict[str, float]:
        if self.splits.val is None:
            return {}
        return self._measure(self.splits.val, step, "val")

    def test(self, step: int, threshold: float | None) -> dict[str, dict[str, float]]:
        """The test protocol as ``test``, each further one (cfp_fp, agedb_30, ...) and those of the recipe's
        ``test_data`` (ijbc, ...) as ``test_<name>``."""
        protocols = {"test": self.splits.test} if self.splits.test is not None else {}
        protocols.update({f"test_{name}": protocol for name, protocol in self.splits.more_tests.items()})
        for protocol in self.test_data:
            label = f"test_{protocol.name}"
            protocols[label if label not in protocols else f"{label}-{len(protocols)}"] = protocol
        return {label: self._measure(protocol, step, label, threshold) for label, protocol in protocols.items()}

    def log_samples(self, count: int = 16) -> None:
        dataset = self.train_loader.dataset
        picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).astype(int)
        samples = [dataset[(int(i), int(i))] for i in picks]
        grid = make_grid(torch.stack([denormalise(s["image"][None], self.preprocess)[0] for s in samples]), nrow=8)
        self.run.writer.add_image("train/samples", grid, 0)
        names = [str(self.splits.classes[s["label"]]) for s in samples]
        self.run.writer.add_text("train/sample_labels", utf8_text(", ".join(names)), 0)  # folder names need not be UTF-8


class EmbeddingTrainer:
    def __init__(self, options: EmbeddingOptions):
        self.options = options

    def load_model(self, run: Run, payload: dict[str, Any]) -> torch.nn.Module:
        checkpoint.expect_task(payload, EmbeddingTask.name, "load an embedding model")
        model = run.build("backbone")
        model.load_state_dict(payload["model"])
        model.threshold = payload.get("threshold")
        return model.to(run.device).eval()

    def torch_scorer(self, model: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def embed(x: torch.Tensor) -> np.ndarray:
            device = next(model.parameters()).device
            return model(x.to(device, non_blocking=True)).float().cpu().numpy()

        return embed

    def embed(self, embed_fn: Callable[[torch.Tensor], np.ndarray], images: Any, preprocess: Any, seed: int,
              device: torch.device) -> np.ndarray:
        """Embeddings of every image, each the sum of the image's and its mirror's when flip_test is on."""
        loader = image_loader(images, eval_transform(preprocess), batch_size=self.options.batch_size,
                              num_workers=self.options.num_workers, seed=seed, shuffle=False)
        chunks = []
        for batch in console.progress(reraise_worker_errors(loader), len(loader), enabled=self.options.progress):
            x = to_device(batch["image"], device, self.options.channels_last)
            embedding = embed_fn(x)
            if self.options.flip_test:
                embedding = embedding + embed_fn(torch.flip(x, dims=[3]))
            chunks.append(embedding)
        # Under torchrun process r embedded images r, r + world, r + 2 * world, ...: put them back in order.
        parts = distributed.gather(np.concatenate(chunks) if chunks else None)
        if len(parts) == 1:
            return parts[0]
        full = np.empty((len(images), parts[0].shape[1]), dtype=parts[0].dtype)
        for rank, part in enumerate(parts):
            if part is not None:
                full[rank :: len(parts)] = part
        return full

    def evaluate(self, run: Run, embed_fn: Callable[[torch.Tensor], np.ndarray], split: str,
                 threshold: float | None) -> dict[str, float]:
        protocol = run.build("data").get(split)
        if not isinstance(protocol, (Verification, TemplateVerification)):
            raise DataError(f"data: the dataset has no '{split}' verification protocol")
        embeddings = self.embed(embed_fn, protocol.images, run.preprocess(), run.recipe.seed,
                                torch.device("cpu"))
        if isinstance(protocol, TemplateVerification):
            return template_metrics(embeddings, protocol, threshold, progress=self.options.progress)[0]
        scores = cosine_scores(embeddings, protocol.pairs)
        figures = fa_metrics.verification_metrics(scores, protocol.is_same)
        if threshold is not None:
            figures["accuracy_at_val_threshold"] = float(np.mean((scores >= threshold) == protocol.is_same))
        return figures

    def fit(self, run: Run) -> FitResult:
        seed_from(run)
        return TrainingLoop(run, self.options, EmbeddingTask(run, self.options, self)).fit()

    def export_bundle(self, run: Run, model: torch.nn.Module) -> Bundle:
        model = model.to("cpu").eval()
        preprocess = model.preprocess
        h, w = preprocess.input_size
        metadata = model_metadata(
            run, preprocess, task="embedding", threshold=getattr(model, "threshold", None),
            score="cosine similarity of the L2-normalised embeddings; same person when >= threshold",
            embedding_size=str(model.num_features))
        example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        return Bundle(module=EmbeddingModel(model), example_inputs=(example,), input_names=("input",),
                      output_names=("embedding",), dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                      metadata=metadata,
                      check_inputs=((torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1)),),))


def build(options: EmbeddingOptions) -> EmbeddingTrainer:
    return EmbeddingTrainer(options)
