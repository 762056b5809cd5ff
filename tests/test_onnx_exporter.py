"""The ONNX exporter refuses a model whose onnxruntime outputs differ from PyTorch's, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceauth.errors import ExportError
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.training.export import Bundle


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


class BranchesOnValues(torch.nn.Module):
    """torch.export cannot trace a branch on a tensor's value; the TorchScript exporter traces the branch taken."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.abs().max()) > 100:
            return x * 0
        return torch.tanh(x)


def test_a_model_torch_export_cannot_convert_is_exported_by_torchscript_with_its_dynamic_batch(tmp_path: Path) -> None:
    import numpy as np

    from faceauth.io.onnx import onnx_session, read_metadata, run_session

    b = Bundle(module=BranchesOnValues(), example_inputs=(torch.ones(2, 3),), input_names=("input",),
               output_names=("score",), dynamic_axes={"input": {0: "batch"}, "score": {0: "batch"}}, metadata={"k": "v"})
    target = OnnxExporter(OnnxOptions()).export(b, tmp_path / "model.onnx")
    assert read_metadata(target) == {"k": "v", "faceauth.exporter": "torchscript"}
    x = np.linspace(-2, 2, 21, dtype=np.float32).reshape(7, 3)
    np.testing.assert_allclose(run_session(onnx_session(target), x)[0], np.tanh(x), atol=1e-6)
    assert read_metadata(OnnxExporter(OnnxOptions()).export(bundle(torch.nn.Tanh()), tmp_path / "b.onnx")) == {
        "faceauth.exporter": "torch.export"}


class Unexportable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigh(x @ x.T)[0]  # an operator neither exporter can convert to ONNX


def test_a_model_no_exporter_converts_names_each_exporters_reason(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"could not export the model \(torch.export: .+; torchscript: .+\)") as info:
        OnnxExporter(OnnxOptions()).export(bundle(Unexportable()), tmp_path / "model.onnx")
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
