"""The liveness report a biometrics reviewer reads: per-sample scores, DET/ROC figures, score
histograms and ``report.md`` with the ISO/IEC 30107-3 table, the threshold and the environment.

Written into every liveness run directory by the classifier trainer's test step and by
``faceauth-eval --report DIR``::

    scores.csv              one row per scored sample: split, path, label, attack_type, video, subject, score
    <split>_det.png         DET curves (APCER vs. BPCER, normal-deviate axes), one per attack type and pooled
    <split>_roc.png         ROC curve (APCER vs. 1 - BPCER) with its AUC
    <split>_scores.png      score histograms of bona fide presentations and of each attack type, with the threshold
    report.md               data and protocol, counts, the 30107-3 table, threshold, versions, hardware, wall time

The figures also go to TensorBoard as images (``<split>/det``, ``<split>/roc``, ``<split>/scores``)
with the score histograms (``<split>/scores_bona_fide``, ``<split>/scores_<attack type>``). Curves
come from scikit-learn (`roc_curve`, `det_curve` and their displays) drawn by matplotlib's Agg
canvas; the figures are those of the unit the metrics were computed on (videos when the samples
name their video: clip or frame scores averaged per video).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from faceauth.io.console import installed_version
from faceauth.io.images import utf8_text
from faceauth.io.paths import atomic_write

__all__ = ["ReportTarget", "SplitScores", "environment", "write_liveness_report"]

SCORE_COLUMNS = ("split", "path", "label", "attack_type", "video", "subject", "score")
_PACKAGES = ("faceauth", "torch", "torchvision", "onnxruntime", "onnx", "opencv-python-headless", "opencv-python",
             "scikit-learn", "numpy")
_BONA_FIDE = "bona fide"


@attrs.frozen
class ReportTarget:
    """Where ``faceauth-eval --report`` writes a report, what was scored, and how its threshold was chosen."""

    directory: Path
    model: str
    threshold_rule: str


@attrs.frozen
class SplitScores:
    """One scored split.

    `samples`: the per-sample predictions (``score``, ``label`` (`faceauth.data.LIVE` = 0 is bona
    fide), ``attack_type``, optionally ``video``, ``path``, ``subject``); `evaluated`: what the metrics
    were computed on (the same, or one row per video), with ``score``, ``label`` and ``attack_type``;
    `figures`: the metrics at the threshold (`faceauth.metrics.liveness_metrics`).
    """

    name: str
    samples: dict[str, np.ndarray]
    evaluated: dict[str, np.ndarray]
    figures: dict[str, float]
    unit: str = "sample"  # or "video"


def environment() -> dict[str, Any]:
    """Versions of faceauth and the libraries that score, the hardware, and the load at writing time."""
    versions = {name: found for name in _PACKAGES if (found := installed_version(name)) is not None}
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    hardware = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    torch = __import__("sys").modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        hardware["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    if hasattr(os, "getloadavg"):
        hardware["load average (1, 5, 15 min)"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return {"versions": versions, "hardware": hardware}


# figures ----------------------------------------------------------------------------------------------
def _canvas(width: float = 5.5, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _types(evaluated: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Attack type -> mask of its attacks; the pooled attacks under "all attacks" when there are several types."""
    attack = ~evaluated["is_live"]
    names = np.array([t if t else "attack" for t in evaluated["attack_type"]], dtype=object)
    # Names as valid UTF-8 (a folder name that is not keeps \x.. escapes): figure legends and TensorBoard tags need it.
    masks = {utf8_text(t): attack & (names == t) for t in sorted(set(names[attack]))}
    return {**masks, "all attacks": attack} if len(masks) > 1 else masks


def _det_figure(evaluated: dict[str, np.ndarray], threshold: float | None, title: str) -> Any:
    from sklearn.metrics import DetCurveDisplay, det_curve

    figure = _canvas()
    ax = figure.subplots()
    live, scores = evaluated["is_live"], evaluated["score"]
    for name, mask in _types(evaluated).items():
        keep = live | mask
        apcer, bpcer, _ = det_curve(live[keep], scores[keep], pos_label=True)
        style = {"color": "black", "linestyle": "--"} if name == "all attacks" else {}
        DetCurveDisplay(fpr=apcer, fnr=bpcer).plot(ax=ax, name=name, **style)
    if threshold is not None:  # the operating point, on the axes' edge when a rate is 0 or 1
        from scipy.stats import norm

        attack = ~live
        x, y = norm.ppf([np.mean(scores[attack] >= threshold), np.mean(scores[live] < threshold)])
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        ax.plot(np.clip(x, x0, x1), np.clip(y, y0, y1), "k*", markersize=12, clip_on=False,
                label=f"threshold {threshold:.4g}")
    ax.set_xlabel("APCER (attacks accepted as live)")
    ax.set_ylabel("BPCER (bona fide rejected)")
    ax.set_title(f"DET: {title}")
    ax.legend(loc="upper right", fontsize="small")
    return figure


def _roc_figure(evaluated: dict[str, np.ndarray], title: str) -> Any:
    from sklearn.metrics import RocCurveDisplay, auc, roc_curve

    figure = _canvas()
    ax = figure.subplots()
    apcer, one_minus_bpcer, _ = roc_curve(evaluated["is_live"], evaluated["score"], pos_label=True)
    RocCurveDisplay(fpr=apcer, tpr=one_minus_bpcer, roc_auc=auc(apcer, one_minus_bpcer), name="all attacks").plot(
        ax=ax, plot_chance_level=True)
    ax.set_xlabel("APCER (attacks accepted as live)")
    ax.set_ylabel("1 - BPCER (bona fide accepted)")
    ax.set_title(f"ROC: {title}")
    return figure


def _histogram_figure(evaluated: dict[str, np.ndarray], threshold: float | None, title: str) -> Any:
    figure = _canvas(6.0, 4.0)
    ax = figure.subplots()
    scores = evaluated["score"]
    bins = np.histogram_bin_edges(scores, bins=min(40, max(10, len(scores) // 5)))
    groups = {_BONA_FIDE: evaluated["is_live"],
              **{k: v for k, v in _types(evaluated).items() if k != "all attacks"}}
    for name, mask in groups.items():
        ax.hist(scores[mask], bins=bins, alpha=0.5, label=f"{name} ({int(mask.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("score (higher = more likely live)")
    ax.set_ylabel("count")
    ax.set_title(f"Scores: {title}")
    ax.legend(fontsize="small")
    return figure


def _save_png(figure: Any, path: Path, writer: Any, tag: str, step: int) -> None:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
    if writer is not None:
        from PIL import Image

        buffer.seek(0)
        with Image.open(buffer) as image:
            writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")


# tables ----------------------------------------------------------------------------------------------
def _scores_csv(splits: Sequence[SplitScores]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SCORE_COLUMNS)
    for split in splits:
        s = split.samples
        n = len(s["score"])
        empty = np.array([""] * n, dtype=object)
        live = _is_live(s["label"])
        for i in range(n):
            writer.writerow((split.name, s.get("path", empty)[i], "live" if live[i] else "spoof",
                             s["attack_type"][i] if not live[i] else "", s.get("video", empty)[i],
                             s.get("subject", empty)[i], f"{float(s['score'][i]):.9g}"))
    return buffer.getvalue().encode("utf-8", "surrogateescape")  # a name that is not UTF-8 keeps its bytes


def _pct(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.2f}%"


def _iso_table(split: SplitScores) -> list[str]:
    f = split.figures
    rows = ["| measure | value |", "|---|---|"]
    rows += [f"| APCER {key[len('apcer_'):]} | {_pct(v)} |" for key, v in sorted(f.items())
             if key.startswith("apcer_") and not key.startswith("apcer_at")]
    rows += [f"| APCER (max over attack types) | {_pct(f.get('apcer'))} |",
             f"| BPCER | {_pct(f.get('bpcer'))} |",
             f"| ACER | {_pct(f.get('acer'))} |",
             f"| BPCER at APCER = 1% | {_pct(f.get('bpcer_at_apcer_1pct'))} |",
             f"| BPCER at APCER = 5% | {_pct(f.get('bpcer_at_apcer_5pct'))} |",
             f"| BPCER at APCER = 10% | {_pct(f.get('bpcer_at_apcer_10pct'))} |",
             f"| HTER (pooled APCER) | {_pct(f.get('hter'))} |",
             f"| EER | {_pct(f.get('eer'))} |",
             f"| AUC | {f.get('auc', float('nan')):.4f} |"]
    return rows


def _counts(split: SplitScores) -> list[str]:
    s, e = split.samples, split.evaluated
    live = e["is_live"]
    lines = [f"- {len(s['score'])} scored samples" + (f" from {len(e['score'])} videos" if split.unit == "video" else ""),
             f"- bona fide: {int(live.sum())} {split.unit}s"]
    for name, mask in _types(e).items():
        if name != "all attacks":
            lines.append(f"- attack type `{name}`: {int(mask.sum())} {split.unit}s")
    subjects = {str(v) for v in s.get("subject", []) if str(v)}
    if subjects:
        lines.append(f"- subjects: {len(subjects)}")
    return lines


def write_liveness_report(directory: str | Path, splits: Sequence[SplitScores], *, model: str,
                          data: Any, threshold: float | None, threshold_rule: str, started: float | None = None,
                          components: dict[str, str] | None = None, score: str = "", writer: Any = None,
                          step: int = 0) -> Path:
    """Write scores.csv, the figures and report.md for `splits` into `directory`; returns report.md's path.

    `model`: what was scored (a run directory, checkpoint or .onnx); `data`: the recipe's data
    section; `threshold_rule`: how the threshold was chosen (e.g. "eer on val"); `started`: the
    `time.time()` the work began (for the wall time); `components`: the plugins that built it
    (``{"backbone": "faceauth 0.1.0", ...}``); `score`: what the score means. `writer`: a
    TensorBoard SummaryWriter for the figures (None: no TensorBoard).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "scores.csv") as handle:
        handle.write(_scores_csv(splits))
    env = environment()
    lines = ["# Liveness report", "", f"- model: `{model}`",
             f"- written: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    if started is not None:
        lines.append(f"- wall time: {time.time() - started:.1f} s")
    lines += ["", "## Data and protocol", "", "```json", json.dumps(data, indent=1, sort_keys=True, default=str)[:4000],
              "```", "",
              "Presentations are accepted as live when `score >= threshold`" + (f" ({score})" if score else "") + ". "
              "The threshold is chosen on the validation split and applied unchanged to the splits below. "
              "Metrics follow ISO/IEC 30107-3: APCER per attack type (PAI species) and its maximum, BPCER, "
              "ACER = (max APCER + BPCER) / 2.", "",
              "## Threshold", "", f"- value: {f'{threshold:.6g}' if threshold is not None else 'none (EER of each split)'}",
              f"- chosen by: {threshold_rule}", ""]
    for split in splits:
        evaluated = {**split.evaluated, "is_live": _is_live(split.evaluated["label"]),
                     "score": np.asarray(split.evaluated["score"], dtype=np.float64)}
        title = f"{split.name} ({split.unit}s)"
        figures = {"det": _det_figure(evaluated, threshold, title), "roc": _roc_figure(evaluated, title),
                   "scores": _histogram_figure(evaluated, threshold, title)}
        for kind, figure in figures.items():
            _save_png(figure, directory / f"{split.name}_{kind}.png", writer, f"{split.name}/{kind}", step)
        if writer is not None:
            for name, mask in {_BONA_FIDE.replace(" ", "_"): evaluated["is_live"], **_types(evaluated)}.items():
                if mask.any():
                    writer.add_histogram(f"{split.name}/scores_{name.replace(' ', '_')}", evaluated["score"][mask], step)
        lines += [f"## {split.name}", "", *_counts(attrs.evolve(split, evaluated=evaluated)), "",
                  *_iso_table(split), "",
                  f"![DET]({split.name}_det.png) ![ROC]({split.name}_roc.png) ![scores]({split.name}_scores.png)", ""]
    lines += ["## Environment", "", "| package | version |", "|---|---|",
              *[f"| {k} | {v} |" for k, v in env["versions"].items()],
              *[f"| plugin: {k} | {v} |" for k, v in (components or {}).items()], "",
              "| hardware | |", "|---|---|", *[f"| {k} | {v} |" for k, v in env["hardware"].items()], ""]
    with atomic_write(directory / "report.md") as handle:
        handle.write("\n".join(lines).encode("utf-8", "surrogateescape"))
    if writer is not None:
        writer.flush()
    return directory / "report.md"


def _is_live(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    return labels.astype(bool) if labels.dtype == bool else labels == 0  # faceauth.data.LIVE
