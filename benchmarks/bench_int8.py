"""Latency of eager PyTorch, fp32 onnxruntime and int8 (static QDQ) onnxruntime per built-in image backbone.

Each backbone (randomly initialised; speed does not depend on the weights) is wrapped as the
exporter sees it (a liveness classifier for the torchvision ResNets, the embedding network for the
recognition backbones, L2-normalised as the embedding trainer exports them), exported by the real exporter, and quantized by the real int8 path
(calibrated on random inputs here, so only the speed figures mean anything). Each engine is timed
alone: the onnxruntime session exists only while it is timed, with thread spinning disabled. Both
engines use `--threads` threads (default 1: on the shared 2-core machine, two PyTorch threads under
a load above 2 wait on each other and run several times slower than one).

    python benchmarks/bench_int8.py [--backbones resnet18,mobilefacenet] [--batches 1,32] [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from common import load_average, median_seconds, table

from faceauth.io.onnx import onnx_session
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.plugins.exporters.quantize import quantize_int8
from faceauth.training.export import Bundle


def _model(name: str) -> tuple[torch.nn.Module, int]:
    """The exported form of backbone `name` at its default options, and its input side (its record's preprocess)."""
    from faceauth.config.recipe import resolve_section
    from faceauth.config.registry import load_registry
    from faceauth.plugins.trainers.classifier import Classifier, LivenessScore

    registry = load_registry()
    section = resolve_section({"name": name}, "backbone", "backbone", registry)
    entry = registry.entry("backbone", name)
    size = entry.component.preprocess(section.options).input_size[0]  # 112 (resnets' default), facenet 160
    backbone = entry.component.build(section.options)
    if name.startswith("resnet"):
        return LivenessScore(Classifier(backbone, 2)).eval(), size
    from faceauth.plugins.trainers.embedding import EmbeddingModel

    return EmbeddingModel(backbone).eval(), size  # what the embedding trainer exports: unit embeddings


def _export(model: torch.nn.Module, size: int, folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 3, size, size)).astype(np.float32),) for _ in range(4)]
    outputs = ("score", "logits") if isinstance(model, torch.nn.Module) and hasattr(model, "model") else ("embedding",)
    bundle = Bundle(module=model, example_inputs=(torch.randn(2, 3, size, size),), input_names=("input",),
                    output_names=outputs, dynamic_axes={"input": {0: "batch"}}, metadata={},
                    calibration=lambda: iter(batches))
    options = OnnxOptions(quantize="int8", require_speedup=False, calibration_samples=32)
    fp32 = OnnxExporter(OnnxOptions()).export(bundle, folder / "fp32.onnx")
    quantized, _ = quantize_int8(fp32, bundle, options, folder / "int8.onnx")
    onnx.save(quantized, folder / "int8.onnx")
    return fp32, folder / "int8.onnx"


def _onnx_seconds(path: Path, x: np.ndarray, repeats: int, threads: int) -> float:
    session = onnx_session(path, threads)
    feed = {session.get_inputs()[0].name: x}
    seconds = median_seconds(lambda: session.run(None, feed), repeats)
    del session
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="resnet18,resnet34,resnet50,iresnet18,iresnet50,mobilefacenet,facenet")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [("backbone", "batch", "eager ms", "fp32 ms", "int8 ms", "fp32/eager", "int8/eager", "int8/fp32")]
    for name in args.backbones.split(","):
        torch.manual_seed(0)
        model, size = _model(name)
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = _export(model, size, Path(tmp))
            for batch in (int(b) for b in args.batches.split(",")):
                repeats = args.repeats if batch == 1 else max(3, args.repeats // 5)
                x = torch.randn(batch, 3, size, size)
                with torch.no_grad():
                    eager = median_seconds(lambda: model(x), repeats)
                f = _onnx_seconds(fp32, x.numpy(), repeats, args.threads)
                q = _onnx_seconds(int8, x.numpy(), repeats, args.threads)
                rows.append((f"{name} {size}px", str(batch), f"{eager * 1e3:.1f}", f"{f * 1e3:.1f}", f"{q * 1e3:.1f}",
                             f"{eager / f:.2f}x", f"{eager / q:.2f}x", f"{f / q:.2f}x"))
                print(table(rows[:1] + rows[-1:]).splitlines()[-1], f"({load_average()})", flush=True)
    print(table(rows))
    print(f"torch {torch.__version__}, {args.threads} thread(s) in each engine; median of {args.repeats} (batch 1) / "
          f"{max(3, args.repeats // 5)} (larger batches); {load_average()} at the end")


if __name__ == "__main__":
    main()
