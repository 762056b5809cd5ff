"""The temporal recipe end to end on tiny demo clips: per-video metrics and an export with dynamic length."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import faceauth

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "temporal_lstm.yaml"


def test_temporal_recipe_runs_and_exports_with_free_batch_and_time(tmp_path: Path) -> None:
    result = faceauth.run(RECIPE, [f"output_dir={tmp_path}", "data.train=8", "data.val=6", "data.test=6",
                                   "data.frames=8", "data.size=32", "data.clip_length=4",
                                   "backbone.encoder.input_size=32", "backbone.clip_length=4", "backbone.hidden_size=16",
                                   "trainer.epochs=1", "trainer.batch_size=4", "trainer.num_workers=0",
                                   "trainer.progress=false"])
    assert {"acer", "apcer", "bpcer", "auc"} <= set(result.metrics["test"])
    assert result.metrics["test"]["num_live"] + result.metrics["test"]["num_attack"] == 6  # one score per video
    dims = onnx.load(result.onnx_path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:2]] == ["batch", "time"]
