"""The embedding trainer on tiny demo identities: margin and triplet losses, verification, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import faceauth
from faceauth.io.onnx import onnx_session, read_metadata
from faceauth.runs.models import evaluate

pytestmark = pytest.mark.slow

RECIPE = {
    "seed": 0,
    "data": {"name": "demo_identities", "identities": 12, "images_per_identity": 6, "size": 48,
             "val_identities": 0.34, "pairs_per_identity": 6},
    "backbone": {"name": "resnet18", "input_size": 32},
    "loss": {"name": "arcface", "scale": 16.0, "margin": 0.2},
    "trainer": {"name": "embedding", "epochs": 2, "batch_size": 16, "num_workers": 0, "progress": False},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "export": {"name": "onnx"},
}


def write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "embedding.yaml"
    path.write_text(yaml.safe_dump({**recipe, "output_dir": str(tmp_path / "runs")}), encoding="utf-8")
    return path


def test_arcface_run_measures_verification_and_exports_embeddings(tmp_path: Path) -> None:
    result = faceauth.run(write(tmp_path, RECIPE))
    metrics = json.loads((result.dir / "metrics.json").read_text())
    for key in ("accuracy", "accuracy_std", "eer", "auc", "tar_at_far_1e-3", "threshold"):
        assert key in metrics["val"], key
    assert 0.0 <= metrics["val"]["accuracy"] <= 1.0
    events = EventAccumulator(str(result.dir), size_guidance={"images": 0})
    events.Reload()
    assert "val/accuracy" in events.Tags()["scalars"]
    assert any(tag.startswith("val/roc_") for tag in events.Tags()["images"])  # matplotlib figures

    model = onnx.load(result.onnx_path)
    assert model.graph.output[0].name == "embedding"
    meta = read_metadata(result.onnx_path)
    assert meta["faceauth.task"] == "embedding" and meta["preprocess.input_size"] == "32,32"
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    embeddings = onnx_session(result.onnx_path).run(None, {"input": x})[0]
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)

    from_checkpoint = evaluate(result.dir / "checkpoints" / "best.pt", split="val")
    from_onnx = evaluate(result.onnx_path, split="val")
    assert from_onnx["accuracy"] == pytest.approx(from_checkpoint["accuracy"], abs=1e-6)
    assert from_checkpoint["accuracy"] == pytest.approx(metrics["val"]["accuracy"], abs=1e-6)


def test_triplet_loss_with_pk_batches(tmp_path: Path) -> None:
    recipe = {**RECIPE, "loss": {"name": "triplet"}, "export": None,
              "trainer": {**RECIPE["trainer"], "sampler": "pk", "identities_per_batch": 4, "images_per_identity": 3}}
    result = faceauth.run(write(tmp_path, recipe))
    assert result.metrics["epochs_completed"] == 2 and np.isfinite(result.metrics["val"]["eer"])


def test_loss_and_trainer_must_agree(tmp_path: Path) -> None:
    with pytest.raises(faceauth.RecipeError, match="the embedding trainer needs a loss on embeddings"):
        faceauth.run(write(tmp_path, {**RECIPE, "loss": {"name": "cross_entropy"}}))
    liveness = {**RECIPE, "data": {"name": "demo", "train": 48, "val": 24, "test": 24, "size": 48},
                "trainer": {"name": "classifier", "epochs": 1, "num_workers": 0}}
    with pytest.raises(faceauth.RecipeError, match="the classifier trainer needs a loss on logits"):
        faceauth.run(write(tmp_path, liveness))
    assert not (tmp_path / "runs").exists()


def test_every_verification_pack_is_measured(tmp_path: Path) -> None:
    from faceauth.plugins.datasets.identity_demo import DemoIdentitiesOptions, demo_identities_root
    from faceauth.plugins.datasets.pairs import write_bin

    root = demo_identities_root(DemoIdentitiesOptions(identities=6, images_per_identity=4, size=48))
    jpegs = [p.read_bytes() for p in sorted(root.rglob("*.jpg"))]
    packs = [write_bin(tmp_path / "lfw.bin", jpegs[:24], [True, False] * 6),
             write_bin(tmp_path / "cfp_fp.bin", jpegs[4:24], [False, True] * 5)]
    recipe = {**RECIPE, "data": {"name": "identity_folder", "root": str(root), "val_identities": 0,
                                 "verification": [str(p) for p in packs]},
              "trainer": {**RECIPE["trainer"], "epochs": 1}, "export": None}
    result = faceauth.run(write(tmp_path, recipe))
    metrics = json.loads((result.dir / "metrics.json").read_text())
    assert {"test", "test_cfp_fp"} <= set(metrics) and "accuracy" in metrics["test_cfp_fp"]
    assert metrics["datasets"]["data"]["verification"] == {"lfw": 12, "cfp_fp": 10}
    events = EventAccumulator(str(result.dir))
    events.Reload()
    assert {"test/accuracy", "test_cfp_fp/accuracy"} <= set(events.Tags()["scalars"])
