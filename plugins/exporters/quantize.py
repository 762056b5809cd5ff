"""int8 export (``export.quantize: int8``): onnxruntime's static QDQ quantization, calibrated on
validation images, judged by the metric it changes on the test split and by its speed.

1. the checked fp32 model is quantized with `onnxruntime.quantization.quantize_static` (QDQ
   format, uint8 activations, per-channel int8 weights; the head, from the last linear layer to
   the outputs, stays float; activation ranges calibrated on up to
   ``export.calibration_samples`` validation inputs the trainer's bundle gives through a
   `CalibrationDataReader`);
2. fp32 and int8 are timed at batch 1 (interleaved, median); int8 slower than fp32 is refused
   with both figures (``export.require_speedup: false`` keeps it, e.g. for another CPU);
3. both are scored on the test split by the trainer's evaluation; a change of the bundle's
   parity metric (ACER for liveness) beyond ``export.int8_max_change`` is refused.

The figures go into the model's metadata as ``faceauth.quantize`` (JSON). Element-wise
differences are not a criterion: int8 changes every score a little, and what matters is whether
decisions change.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from faceauth.errors import ExportError
from faceauth.io.onnx import onnx_session, run_session
from faceauth.training.export import Bundle

log = logging.getLogger(__name__)

QUANTIZATION = "int8 static QDQ (uint8 activations, per-channel int8 weights), onnxruntime"


class _Calibration:
    """A `CalibrationDataReader` over the bundle's validation inputs, at most `limit` samples."""

    def __init__(self, batches: Iterator[tuple[np.ndarray, ...]], names: tuple[str, ...], limit: int):
        self.batches, self.names, self.left, self.samples = batches, names, limit, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.left <= 0:
            return None
        batch = next(self.batches, None)
        if batch is None:
            return None
        batch = tuple(np.ascontiguousarray(x[: self.left], dtype=np.float32) for x in batch)
        self.left -= len(batch[0])
        self.samples += len(batch[0])
        return dict(zip(self.names, batch))


def _latency_ms(fp32: Any, int8: Any, inputs: tuple[np.ndarray, ...], repeats: int = 15) -> tuple[float, float]:
    """Median ms of one batch-1 call of each session, timed in turn so that load hits both alike."""
    one = tuple(np.ascontiguousarray(x[:1]) for x in inputs)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(3):
        run_session(fp32, *one), run_session(int8, *one)
    for _ in range(repeats):
        for name, session in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            run_session(session, *one)
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["fp32"]) * 1e3, statistics.median(times["int8"]) * 1e3


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes from the last linear layer to the outputs (the head and the score), kept in float.

    Quantizing them would round the scores themselves to 256 levels: a liveness score near its
    threshold, or a unit embedding, loses exactly the resolution decisions depend on.
    """
    producers = {name: node for node in model.graph.node for name in node.output}
    head: set[str] = set()
    stack = [output.name for output in model.graph.output]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in head:
            continue
        head.add(node.name)
        if node.op_type not in ("Gemm", "MatMul", "Conv"):  # stop at the layer that makes the features' output
            stack.extend(node.input)
    return sorted(head)


def _scorer(session: Any) -> Any:
    """What a trainer's evaluation calls: a batch tensor in, the ``score`` output out."""
    return lambda x: run_session(session, x.numpy())[0]


def quantize_int8(fp32_path: Path, bundle: Bundle, options: Any, destination: Path) -> tuple[onnx.ModelProto, dict]:
    """The int8 model of the checked fp32 model at `fp32_path`, with ``faceauth.quantize`` in its metadata.

    Refusals are ExportErrors naming `destination`, which is then not written.
    """
    root = logging.getLogger()  # onnxruntime.quantization configures and logs advice on the root logger
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root.handlers[:] = handlers

    if bundle.calibration is None:
        raise ExportError(f"{destination}: not written: export.quantize: int8 needs calibration inputs, and this "
                          f"trainer's export gives none (the liveness classifier's does); use export.quantize: none")
    reader = _Calibration(iter(bundle.calibration()), bundle.input_names, options.calibration_samples)
    with tempfile.TemporaryDirectory(prefix="faceauth-int8-") as tmp:
        int8_path = Path(tmp) / "int8.onnx"
        root.setLevel(logging.ERROR)
        try:
            quantize_static(str(fp32_path), str(int8_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=head_nodes(onnx.load(str(fp32_path), load_external_data=False)))
        except Exception as exc:
            raise ExportError(f"{destination}: not written: onnxruntime could not quantize the model "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        finally:
            root.setLevel(level)
        if reader.samples == 0:
            raise ExportError(f"{destination}: not written: no validation inputs to calibrate int8 on")
        fp32, int8 = onnx_session(fp32_path), onnx_session(int8_path)
        fp32_ms, int8_ms = _latency_ms(fp32, int8, tuple(x.numpy() for x in bundle.example_inputs))
        speedup = fp32_ms / int8_ms
        figures: dict[str, Any] = {"method": QUANTIZATION, "calibration_samples": reader.samples,
                                   "batch1_ms": {"fp32": round(fp32_ms, 4), "int8": round(int8_ms, 4)},
                                   "speedup_over_fp32": round(speedup, 3)}
        if speedup < 1.0 and options.require_speedup:
            raise ExportError(f"{destination}: not written: int8 runs {speedup:.2f}x the speed of fp32 at batch 1 "
                              f"here ({int8_ms:.2f} ms vs. {fp32_ms:.2f} ms; onnxruntime has no quantized PReLU, and "
                              f"small inputs cost more in (de)quantization than they gain); keep export.quantize: "
                              f"none, or set export.require_speedup: false for a CPU where int8 is faster")
        if bundle.evaluate is not None:
            before, after = bundle.evaluate(_scorer(fp32)), bundle.evaluate(_scorer(int8))
            metric = bundle.parity_metric
            change = after[metric] - before[metric]
            figures.update({"parity_metric": f"test/{metric}", "fp32": before[metric], "int8": after[metric],
                            "change": change})
            log.info("int8: test %s %.4f (fp32 %.4f, change %+.4f); batch 1: %.2f ms vs. %.2f ms fp32 (%.2fx)",
                     metric, after[metric], before[metric], change, int8_ms, fp32_ms, speedup)
            if abs(change) > options.int8_max_change:
                raise ExportError(f"{destination}: not written: int8 changes test {metric} by {change:+.4f} "
                                  f"({before[metric]:.4f} -> {after[metric]:.4f}), more than export.int8_max_change "
                                  f"= {options.int8_max_change:g}; calibrate on more validation images "
                                  f"(export.calibration_samples) or keep export.quantize: none")
        model = onnx.load(str(int8_path))
    # The fp32 file's metadata (the bundle's, and which exporter made it), then the int8 figures.
    stored = {entry.key: entry.value for entry in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    del model.metadata_props[:]
    for key, value in {**stored, "faceauth.quantize": json.dumps(figures)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model, figures
