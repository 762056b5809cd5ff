"""int8 export (``export.quantize: int8``): static QDQ calibrated on validation inputs, judged by the test
metric change and by speed; refusals leave nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import onnx
import pytest
import torch

from faceauth.errors import ExportError
from faceauth.io.onnx import read_metadata
from faceauth.plugins.exporters import quantize
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.training.export import Bundle


def _bundle() -> Bundle:
    """A small conv net with a real calibration set and a real 'metric' (mean |score| on fixed inputs)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                 torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(8, 1), torch.nn.Flatten(0)).eval()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(4, 3, 24, 24)).astype(np.float32),) for _ in range(3)]
    test = torch.from_numpy(rng.normal(size=(16, 3, 24, 24)).astype(np.float32))
    return Bundle(module=module, example_inputs=(torch.randn(2, 3, 24, 24),), input_names=("input",),
                  output_names=("score",), dynamic_axes={"input": {0: "batch"}, "score": {0: "batch"}},
                  metadata={"faceauth.task": "liveness"}, calibration=lambda: iter(batches),
                  evaluate=lambda score: {"acer": float(np.abs(score(test)).mean())}, parity_metric="acer")


def test_int8_model_carries_its_figures(tmp_path: Path) -> None:
    options = OnnxOptions(quantize="int8", require_speedup=False, calibration_samples=10)
    path = OnnxExporter(options).export(_bundle(), tmp_path / "model.onnx")
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    metadata = read_metadata(path)
    assert metadata["faceauth.task"] == "liveness"
    figures = json.loads(metadata["faceauth.quantize"])
    assert figures["calibration_samples"] == 10  # 4 + 4 + the first 2 of the third batch
    assert figures["parity_metric"] == "test/acer" and figures["change"] == pytest.approx(figures["int8"] - figures["fp32"])
    eager = _bundle()
    with torch.no_grad():
        assert figures["fp32"] == pytest.approx(eager.evaluate(lambda x: eager.module(x).numpy())["acer"], abs=1e-5)
    assert figures["batch1_ms"]["fp32"] > 0 and figures["batch1_ms"]["int8"] > 0
    assert figures["speedup_over_fp32"] == pytest.approx(figures["batch1_ms"]["fp32"] / figures["batch1_ms"]["int8"],
                                                         rel=0.02)


def test_refusals_name_the_file_and_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous model")
    cases = (
        (OnnxOptions(quantize="int8", require_speedup=False, int8_max_change=1e-9), _bundle(),
         r"model\.onnx: not written: int8 changes test acer by .* more than export\.int8_max_change"),
        (OnnxOptions(quantize="int8"), attrs.evolve(_bundle(), calibration=None), r"int8 needs calibration inputs"),
    )
    for options, bundle, message in cases:
        with pytest.raises(ExportError, match=message):
            OnnxExporter(options).export(bundle, target)
        assert target.read_bytes() == b"the previous model"
    # int8 slower than fp32 (what a PReLU network gives): the timing is replaced, the refusal is real
    monkeypatch.setattr(quantize, "_latency_ms", lambda fp32, int8, inputs: (1.0, 1.6))
    with pytest.raises(ExportError, match=r"int8 runs 0\.62x the speed of fp32 at batch 1 here \(1\.60 ms vs\. 1\.00 ms"):
        OnnxExporter(OnnxOptions(quantize="int8")).export(_bundle(), target)
    assert target.read_bytes() == b"the previous model"


@pytest.mark.slow
def test_a_liveness_run_exports_int8_judged_on_its_test_split(tiny_recipe: Path, tmp_path: Path) -> None:
    import faceauth
    from faceauth.deploy.liveness import Liveness

    # 24 test images of a model trained for seconds: a flipped decision moves ACER by ~4 points, so any change passes
    result = faceauth.run(tiny_recipe, ["export.quantize=int8", "export.require_speedup=false",
                                        "export.int8_max_change=1"])
    figures = json.loads(read_metadata(result.onnx_path)["faceauth.quantize"])
    assert figures["calibration_samples"] == 24 and figures["parity_metric"] == "test/acer"  # the tiny demo's val split
    assert figures["fp32"] == pytest.approx(result.metrics["test"]["acer"], abs=1e-6)  # fp32 onnxruntime = eager
    assert faceauth.evaluate(result.onnx_path)["acer"] == pytest.approx(figures["int8"], abs=1e-9)
    assert figures["change"] == pytest.approx(figures["int8"] - figures["fp32"])
    model = Liveness(result.onnx_path, detect=False)  # the deployment path runs the int8 model
    assert model.threshold == pytest.approx(result.metrics["threshold"], rel=1e-6)
    assert next(model.predict(np.full((32, 32, 3), 128, np.uint8))).face
