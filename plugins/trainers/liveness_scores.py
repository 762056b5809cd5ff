"""Scoring a liveness model on a split and measuring it like the field: per-sample predictions, the
per-video decision, the ISO/IEC 30107-3 metrics at a threshold rule, and the run's report.

Shared by the `classifier` trainer (validation, test, faceauth-eval, int8 parity) and the `lbp` baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchvision.utils import make_grid

from faceauth import metrics as fa_metrics
from faceauth.data import LIVE
from faceauth.io import console
from faceauth.metrics.report import SplitScores, write_liveness_report
from faceauth.training import distributed
from faceauth.training.loaders import reraise_worker_errors, to_device
from faceauth.training.run import Run
from faceauth.training.transforms import denormalise

__all__ = ["PER_SAMPLE_STRINGS", "SIDE_SCORES", "inputs_of", "measure", "per_video", "predict", "report_split",
           "sample_grid", "side_figures", "torch_frame_scorer", "write_report"]


def inputs_of(batch: dict[str, Any]) -> torch.Tensor:
    """A batch's model input: clips [N, T, 3, H, W] when samples are clips, else images [N, 3, H, W]."""
    return batch["frames"] if "frames" in batch else batch["image"]


PER_SAMPLE_STRINGS = ("video", "path", "subject")  # sample keys `predict` passes through when present
# Scores reported beside a model's own, each at its own threshold, as "<prefix>/<metric>": a temporal model's
# frame-level baseline, and a fused model's network and texture branches alone.
SIDE_SCORES = {"frame_score": "frame_baseline", "network_score": "network", "texture_score": "texture"}


def per_video(predictions: dict[str, np.ndarray], key: str = "score") -> dict[str, np.ndarray]:
    """Clip scores averaged per source video: the field's video-level decision."""
    videos, first, inverse = np.unique(predictions["video"], return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=predictions[key], minlength=len(videos))
    counts = np.bincount(inverse, minlength=len(videos))
    return {"score": sums / counts, "label": predictions["label"][first],
            "attack_type": predictions["attack_type"][first]}


def measure(predictions: dict[str, np.ndarray], threshold: float | None, key: str = "score",
            rule: str = "eer") -> dict[str, float]:
    """Liveness metrics of `predictions[key]`; per video when the samples name their video.

    `threshold` None: the threshold `rule` picks on these scores (validation).
    """
    if "video" in predictions:
        predictions = per_video(predictions, key)
        key = "score"
    is_live = predictions["label"] == LIVE
    attack_types = [t if t else "attack" for t in predictions["attack_type"]]
    if threshold is None and rule != "eer":
        threshold = fa_metrics.threshold_for(predictions[key], is_live, rule, attack_types)
    return fa_metrics.liveness_metrics(predictions[key], is_live, attack_types, threshold=threshold)


def side_figures(predictions: dict[str, np.ndarray], thresholds: dict[str, float] | None,
                 rule: str = "eer") -> dict[str, float]:
    """The figures of each of `SIDE_SCORES` that `predictions` carries, as ``<prefix>/<metric>``, at
    ``thresholds[prefix]`` (None: at the threshold `rule` picks on these scores, i.e. validation)."""
    figures: dict[str, float] = {}
    for key, prefix in SIDE_SCORES.items():
        if key in predictions:
            side = measure(predictions, None if thresholds is None else thresholds[prefix], key=key, rule=rule)
            figures.update({f"{prefix}/{name}": value for name, value in side.items()})
    return figures


def report_split(name: str, predictions: dict[str, np.ndarray], figures: dict[str, float]) -> SplitScores:
    """A split's per-sample predictions and the unit its metrics were computed on (videos when named)."""
    videos = "video" in predictions and len(np.unique(predictions["video"])) < len(predictions["video"])
    return SplitScores(name, predictions, per_video(predictions) if videos else predictions, figures,
                       "video" if videos else "sample")


def write_report(run: Run, splits: list[SplitScores], threshold: float | None, rule: str, model: str,
                 writer: Any, step: int = 0, directory: Any = None) -> None:
    """`faceauth.metrics.report.write_liveness_report` into the run directory (or `directory`)."""
    data = {key: run.recipe.to_dict().get(key) for key in ("data", "test_data") if run.recipe.to_dict().get(key)}
    write_liveness_report(directory or run.dir, splits, model=model, data=data, threshold=threshold,
                          threshold_rule=rule, started=run.started, components=run.versions()["components"],
                          score="higher = more likely live", writer=writer, step=step)


def predict(score: Callable[[torch.Tensor], Any], loader: Any, device: torch.device, *, channels_last: bool = False,
            progress: bool = True, frame_score: Callable[[torch.Tensor], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Scores of every sample in order, with labels, attack types, and (when the samples carry
    them) ``video`` ids, ``path`` and ``subject``.

    `score` returns the scores [N], or (scores [N], logits [N, C]), whose logits are returned as
    ``logits``, or (scores, logits, {name: scores [N]}) with side scores of `SIDE_SCORES` (a fused
    model's branches), returned under their names. `frame_score`, when given, scores each frame of a
    clip alone (the frame-level baseline of a temporal model); its per-clip mean is returned as
    ``frame_score``.
    """
    out: dict[str, list[Any]] = {key: [] for key in ("score", "logits", "label", "attack_type", *SIDE_SCORES,
                                                     *PER_SAMPLE_STRINGS)}
    for batch in console.progress(reraise_worker_errors(loader), len(loader), enabled=progress):
        x = to_device(inputs_of(batch), device, channels_last)
        scored = score(x)
        if isinstance(scored, tuple):
            scored, logits, *sides = scored
            out["logits"].append(np.asarray(logits))
            for name, values in (sides[0] if sides else {}).items():
                out[name].append(np.asarray(values))
        out["score"].append(scored)
        out["label"].append(batch["label"].numpy())
        out["attack_type"].extend(batch.get("attack_type", [""] * len(batch["label"])))
        for key in PER_SAMPLE_STRINGS:
            out[key].extend(str(v) for v in batch.get(key, []))
        if frame_score is not None:
            n, t = x.shape[:2]
            out["frame_score"].append(frame_score(x.flatten(0, 1)).reshape(n, t).mean(axis=1))
    # Under torchrun each process scored its share: every process gets all of them.
    parts = distributed.gather(out)
    result = {"score": np.concatenate([s for p in parts for s in p["score"]]),
              "label": np.concatenate([s for p in parts for s in p["label"]]),
              "attack_type": np.array([a for p in parts for a in p["attack_type"]])}
    for key in ("logits", *SIDE_SCORES):
        if out[key]:
            result[key] = np.concatenate([s for p in parts for s in p[key]])
    for key in PER_SAMPLE_STRINGS:
        if out[key]:
            result[key] = np.array([v for p in parts for v in p[key]])
    return result


def sample_grid(dataset: Any, classes: tuple[str, ...], preprocess: Any, count: int = 16) -> tuple[torch.Tensor, list[str]]:
    """A grid of `count` training inputs spread over `dataset`, framed green (live) or red (spoof), and
    their labels (with attack types): what a run shows of its data once."""
    picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).astype(int)
    images, labels = [], []
    for index in picks:
        sample = dataset[(int(index), int(index))]
        first = sample["frames"][0] if "frames" in sample else sample["image"]  # a clip shows its first frame
        image = torch.nn.functional.pad(denormalise(first[None], preprocess)[0], (3, 3, 3, 3))
        colour = (0.1, 0.8, 0.1) if sample["label"] == LIVE else (0.9, 0.1, 0.1)
        for channel, value in enumerate(colour):
            plane = image[channel]
            plane[:3, :], plane[-3:, :], plane[:, :3], plane[:, -3:] = value, value, value, value
        images.append(image)
        labels.append(classes[sample["label"]] + (f":{sample['attack_type']}" if sample.get("attack_type") else ""))
    return make_grid(torch.stack(images), nrow=8), labels


def torch_frame_scorer(frame_scorer: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    @torch.no_grad()
    def score(frames: torch.Tensor) -> np.ndarray:
        return frame_scorer(frames).float().cpu().numpy()

    return score
