"""The `onnx` exporter: a checked, metadata-carrying ONNX file, compared with PyTorch before it is kept.

It uses the torch.export-based exporter with the bundle's dynamic axes marked dynamic, renames the
symbolic dimensions to the bundle's names ("batch", "time"), stores the bundle's metadata, runs
`onnx.checker`, and compares onnxruntime with PyTorch on every example input set. When the
torch.export path cannot convert a model (some torch releases cannot trace one with a dynamic
sequence axis), the TorchScript exporter converts it with the same dynamic axes, and the same checks
and parity comparison follow; the model's ``faceauth.exporter`` metadata says which one made it. Only a model that passes is moved to the
destination; a failure leaves any existing file there untouched.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import Literal

import attrs
import numpy as np
import onnx
import torch

import faceauth
from faceauth.errors import ExportError
from faceauth.io.onnx import onnx_session, run_session
from faceauth.io.paths import atomic_write
from faceauth.plugins.exporters.quantize import quantize_int8
from faceauth.training.export import PARITY_TOLERANCE, Bundle

log = logging.getLogger(__name__)

@attrs.frozen
class OnnxOptions:
    opset: int = attrs.field(default=18, validator=faceauth.schema.positive)
    tolerance: float = attrs.field(default=PARITY_TOLERANCE, validator=faceauth.schema.positive)
    quantize: Literal["none", "int8"] = "none"  # int8: static QDQ, see faceauth.plugins.exporters.quantize
    calibration_samples: int = attrs.field(default=256, validator=faceauth.schema.positive)
    int8_max_change: float = attrs.field(default=0.01, validator=faceauth.schema.non_negative)  # of the test metric
    require_speedup: bool = True  # refuse int8 that runs slower than fp32 at batch 1 here


def _rename_dims(model: onnx.ModelProto, bundle: Bundle) -> None:
    """Give the free dimensions of inputs and outputs the bundle's names instead of s0, s77..."""
    for value in (*model.graph.input, *model.graph.output):
        axes = bundle.dynamic_axes.get(value.name, {})
        dims = value.type.tensor_type.shape.dim
        for axis, name in axes.items():
            if axis < len(dims) and not dims[axis].HasField("dim_value"):
                dims[axis].dim_param = name


def _forget_rnn_kernels() -> None:
    """Clear the dispatch caches of torch's recurrent operators before an export.

    With a dynamic time axis torch.onnx swaps in a while-loop decomposition of aten.lstm/gru, but
    the swap does not clear the operators' dispatch caches: after an earlier export in the same
    process has cached the default (unrolled) decomposition, a later export unrolls over T and fixes
    it. The attribute is private; getattr keeps a torch upgrade harmless.
    """
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.lstm.data, torch.ops.aten.gru.input, torch.ops.aten.gru.data):
        getattr(op, "_dispatch_cache", {}).clear()


def _dynamo_export(bundle: Bundle, opset: int) -> onnx.ModelProto:
    dynamic_shapes = tuple(
        {axis: torch.export.Dim.DYNAMIC for axis in bundle.dynamic_axes.get(name, {})}
        for name in bundle.input_names
    )
    _forget_rnn_kernels()
    program = torch.onnx.export(
        bundle.module.eval(), tuple(bundle.example_inputs), None, input_names=list(bundle.input_names),
        output_names=list(bundle.output_names), dynamic_shapes=dynamic_shapes, opset_version=opset,
        dynamo=True, verbose=False, optimize=True)
    return program.model_proto


def _torchscript_export(bundle: Bundle, opset: int) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        bundle.module.eval(), tuple(bundle.example_inputs), buffer, input_names=list(bundle.input_names),
        output_names=list(bundle.output_names), dynamic_axes=bundle.dynamic_axes, opset_version=opset,
        dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


# Tried in this order: the first that converts the model is checked and kept (or refused).
EXPORTERS = (("torch.export", _dynamo_export), ("torchscript", _torchscript_export))


def _first_line(exc: BaseException) -> str:
    """The root cause of an exporter's failure in one line (torch wraps it in a generic, coloured message)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _to_onnx(bundle: Bundle, opset: int) -> onnx.ModelProto:
    failures = []
    for exporter, convert in EXPORTERS:
        try:
            # The exporters' own internals warn (deprecations, non-leaf .grad reads while tracing an
            # LSTM's while-loop, the TorchScript path's deprecation): nothing a user can act on, and an
            # error where warnings are errors.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = convert(bundle, opset)
            break
        except Exception as exc:
            failures.append(f"{exporter}: {_first_line(exc)}")
            log.info("the %s exporter could not convert the model (%s)", exporter, _first_line(exc))
    else:
        raise ExportError(f"torch.onnx could not export the model ({'; '.join(failures)})")
    _rename_dims(model, bundle)
    for key, value in {**bundle.metadata, "faceauth.exporter": exporter}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def check_parity(path: Path, bundle: Bundle, tolerance: float, destination: Path) -> float:
    """Largest |onnxruntime - PyTorch| over all outputs and input sets of the model file at `path`.

    Above `tolerance` is an ExportError naming `destination`, the file that is then not written.
    """
    session = onnx_session(path)
    worst = 0.0
    for inputs in (tuple(bundle.example_inputs), *bundle.check_inputs):
        with torch.no_grad():
            expected = bundle.module(*inputs)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        got = run_session(session, *(x.detach().cpu().numpy() for x in inputs))
        for name, want, have in zip(bundle.output_names, expected, got, strict=True):
            difference = float(np.max(np.abs(want.detach().cpu().numpy() - have))) if have.size else 0.0
            worst = max(worst, difference)
            if not difference <= tolerance:
                shape = tuple(inputs[0].shape)
                raise ExportError(f"{destination}: not written: onnxruntime differs from PyTorch on output '{name}' "
                                  f"by {difference:.3g} (input shape {shape}; tolerance {tolerance:g})")
    return worst


class OnnxExporter:
    def __init__(self, options: OnnxOptions):
        self.options = options

    def export(self, bundle: Bundle, path: str | Path) -> Path:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"{path.parent}: cannot create the output folder ({exc.strerror or exc})") from None
        model = _to_onnx(bundle, self.options.opset)
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{path}: the exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
        with atomic_write(path) as handle:  # a model that fails the parity check is never written
            onnx.save(model, handle)
            handle.flush()
            check_parity(Path(handle.name), bundle, self.options.tolerance, path)
            if self.options.quantize == "int8":
                quantized, _ = quantize_int8(Path(handle.name), bundle, self.options, path)
                handle.seek(0)
                handle.truncate()
                onnx.save(quantized, handle)
        return path
