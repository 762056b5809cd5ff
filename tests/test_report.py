"""The liveness report: scores.csv, DET/ROC/score figures (PNG and TensorBoard) and report.md, from a
training run's test step and from ``faceauth-eval --report``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceauth import metrics
from faceauth.metrics.report import write_liveness_report


def _tensorboard_tags(folder: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0}).Reload()
    return set(events.Tags()["images"]), set(events.Tags()["histograms"])


def _predictions(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Frames of 12 videos (4 live, 4 print, 4 replay), 3 frames each, scores higher for live."""
    label = np.repeat([0] * 4 + [1] * 8, 3)
    attack = np.repeat([""] * 4 + ["print"] * 4 + ["replay"] * 4, 3)
    score = rng.normal(np.where(label == 0, 0.8, -0.2), 1.0)  # overlapping: errors on both sides
    video = np.repeat([f"v{i:02d}.avi" for i in range(12)], 3)
    subject = np.repeat([f"s{i % 3}" for i in range(12)], 3)
    path = np.array([f"{v}#{i % 3}" for i, v in enumerate(video)])
    return {"score": score, "label": label, "attack_type": attack, "video": video, "subject": subject, "path": path}


def test_report_files_table_and_figures(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from faceauth.plugins.trainers.liveness_scores import measure, report_split

    predictions = _predictions(np.random.default_rng(0))
    figures = measure(predictions, threshold=0.25)
    split = report_split("test", predictions, figures)
    assert split.unit == "video" and len(split.evaluated["score"]) == 12
    writer = SummaryWriter(str(tmp_path))
    report = write_liveness_report(tmp_path, [split], model="runs/x/model.onnx", data={"name": "folder"},
                                   threshold=0.25, threshold_rule="apcer=0.05 on val", started=None, writer=writer,
                                   components={"backbone": "faceauth 0.1.0"})
    writer.close()
    rows = list(csv.DictReader((tmp_path / "scores.csv").read_text().splitlines()))
    assert list(rows[0]) == ["split", "path", "label", "attack_type", "video", "subject", "score"]
    assert len(rows) == 36 and rows[0]["label"] == "live" and rows[0]["attack_type"] == ""
    assert rows[-1]["attack_type"] == "replay" and rows[-1]["subject"] == "s2" and rows[-1]["video"] == "v11.avi"
    np.testing.assert_allclose([float(r["score"]) for r in rows], predictions["score"], rtol=1e-8)
    text = report.read_text()
    per_video = metrics.liveness_metrics(split.evaluated["score"], split.evaluated["label"] == 0,
                                         split.evaluated["attack_type"], threshold=0.25)
    for line in (f"| APCER print | {100 * per_video['apcer_print']:.2f}% |",
                 f"| BPCER | {100 * per_video['bpcer']:.2f}% |", f"| ACER | {100 * per_video['acer']:.2f}% |",
                 f"| BPCER at APCER = 10% | {100 * per_video['bpcer_at_apcer_10pct']:.2f}% |",
                 "- chosen by: apcer=0.05 on val", "- value: 0.25", "- bona fide: 4 videos",
                 "- attack type `replay`: 4 videos", "- 36 scored samples from 12 videos", "- subjects: 3",
                 "| plugin: backbone | faceauth 0.1.0 |", "| onnxruntime |", "| scikit-learn |", "load average"):
        assert line in text, line
    for kind in ("det", "roc", "scores"):
        with Image.open(tmp_path / f"test_{kind}.png") as image:
            assert image.format == "PNG" and image.size[0] > 400
    images, histograms = _tensorboard_tags(tmp_path)
    assert images == {"test/det", "test/roc", "test/scores"}
    assert {"test/scores_bona_fide", "test/scores_print", "test/scores_replay"} <= histograms


@pytest.mark.slow
def test_a_liveness_run_and_faceauth_eval_write_reports(tiny_recipe: Path, tmp_path: Path) -> None:
    import faceauth
    from faceauth.commands.cli import eval_main

    result = faceauth.run(tiny_recipe)
    for name in ("report.md", "scores.csv", "test_det.png", "test_roc.png", "test_scores.png"):
        assert (result.dir / name).is_file(), name
    rows = list(csv.DictReader((result.dir / "scores.csv").read_text().splitlines()))
    assert len(rows) == 24 and {r["split"] for r in rows} == {"test"}  # the tiny demo's 24 test images
    text = (result.dir / "report.md").read_text()
    assert f"| ACER | {100 * result.metrics['test']['acer']:.2f}% |" in text and "- chosen by: eer on val" in text
    assert "- model: `checkpoints/best.pt`" in text and "wall time:" in text
    images, _ = _tensorboard_tags(result.dir)
    assert {"test/det", "test/roc", "test/scores"} <= images
    # faceauth-eval writes the same for the exported model
    assert eval_main([str(result.onnx_path), "--report", str(tmp_path / "eval"), "--json"]) == 0
    again = list(csv.DictReader((tmp_path / "eval" / "scores.csv").read_text().splitlines()))
    np.testing.assert_allclose([float(r["score"]) for r in again], [float(r["score"]) for r in rows], atol=1e-4)
    assert f"- model: `{result.onnx_path}`" in (tmp_path / "eval" / "report.md").read_text()
