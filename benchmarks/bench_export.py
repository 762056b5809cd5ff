"""Seconds to export a backbone to ONNX through faceauth's exporter (convert, optimise, onnx.checker,
onnxruntime parity on two batch sizes), against torch.onnx.export alone in the same run.

    python benchmarks/bench_export.py [--backbone iresnet50] [--size 112]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import warnings
from pathlib import Path

import torch

from faceauth.config.registry import load_registry
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.training.export import Bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="iresnet50")
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    record = load_registry().get("backbone", args.backbone)
    model = record.build(record.options())
    # Random weights with the batch-norm statistics of random inputs, so activations keep a trained
    # network's scale through every block (untouched statistics blow a deep network's output up).
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, args.size, args.size))
    model.eval()
    x = torch.randn(2, 3, args.size, args.size)
    bundle = Bundle(module=model, example_inputs=(x,), input_names=("input",), output_names=("embedding",),
                    dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, metadata={},
                    check_inputs=((torch.randn(3, 3, args.size, args.size),),))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), None, dynamo=True, optimize=False,
                          dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)).model_proto.SerializeToString()
    bare = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        OnnxExporter(OnnxOptions()).export(bundle, Path(folder) / "model.onnx")
        full = time.perf_counter() - start
        size = (Path(folder) / "model.onnx").stat().st_size / 2**20
    print(f"{args.backbone} at {args.size}px ({size:.0f} MiB): faceauth export {full:.1f} s; "
          f"torch.onnx.export alone (no optimise, no checks) {bare:.1f} s; ratio {full / bare:.2f}x")


if __name__ == "__main__":
    main()
