"""The ONNX exporter refuses a model whose onnxruntime outputs differ from PyTorch's, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceauth.errors import ExportError
from faceauth.export import Bundle
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions


class ExportsOtherwise(torch.nn.Module):
    """Computes something else while it is being exported than when it runs eagerly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 if torch.compiler.is_compiling() else x


def bundle(module: torch.nn.Module) -> Bundle:
    return Bundle(module=module, example_inputs=(torch.ones(2, 3),), input_names=("input",), output_names=("score",),
                  dynamic_axes={"input": {0: "batch"}}, metadata={})


def test_a_model_that_fails_the_parity_check_is_not_written(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous model")
    with pytest.raises(ExportError, match=rf"{target}: not written: onnxruntime differs from PyTorch on output 'score'"):
        OnnxExporter(OnnxOptions()).export(bundle(ExportsOtherwise()), target)
    assert target.read_bytes() == b"the previous model" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_faithful_model_is_written(tmp_path: Path) -> None:
    target = OnnxExporter(OnnxOptions()).export(bundle(torch.nn.Tanh()), tmp_path / "model.onnx")
    assert target.stat().st_size > 0 and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
