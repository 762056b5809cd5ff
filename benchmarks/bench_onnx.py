"""Inference latency of the exported liveness model: onnxruntime vs. eager PyTorch, batch 1 and 32.

Each engine is timed in its own block with onnxruntime's thread spinning disabled, because idle
spinning workers slow down whatever runs next on a 2-core machine.

    python benchmarks/bench_onnx.py [--size 112] [--repeats 30] [--backbone minifas --size 80]
    python benchmarks/bench_onnx.py --backbone cdcn --size 128 --texture   # + the LBP texture branch

With ``--texture`` the model is timed without and with the classifier's texture branch (the LBP
descriptor and its linear model inside the graph, `trainer.texture` at its defaults), and the branch
alone, which is what the `lbp` trainer exports.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import eager_and_onnx_seconds, table

from faceauth.config.registry import load_registry
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.plugins.trainers.classifier import Classifier, LivenessScore
from faceauth.plugins.trainers.texture import TextureOptions, texture_branch
from faceauth.training.export import Bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--texture", action="store_true", help="also time the model with the texture branch")
    args = parser.parse_args()
    torch.manual_seed(0)
    entry = load_registry().get("backbone", args.backbone)
    backbone = entry.build(entry.options(input_size=args.size))
    models = {"network": LivenessScore(Classifier(backbone, 2)).eval()}
    if args.texture:
        texture = texture_branch(TextureOptions(weight=1.0), backbone, args.backbone)
        models["network + texture"] = LivenessScore(Classifier(backbone, 2, texture=texture)).eval()
        models["texture alone (lbp trainer)"] = texture.eval()
    rows = [("model", "batch", "eager PyTorch ms", "onnxruntime ms", "speed-up")]
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            example = torch.randn(2, 3, args.size, args.size)
            outputs = ("score",) if name.startswith("texture") else ("score", "logits")
            bundle = Bundle(module=model, example_inputs=(example,), input_names=("input",),
                            output_names=outputs, dynamic_axes={"input": {0: "batch"}}, metadata={})
            path = OnnxExporter(OnnxOptions()).export(bundle, Path(tmp) / f"{len(rows)}.onnx")
            for batch in (1, 32):
                x = torch.randn(batch, 3, args.size, args.size)
                eager, ort_time = eager_and_onnx_seconds(model, path, x, args.repeats)
                rows.append((name, str(batch), f"{eager * 1e3:.2f}", f"{ort_time * 1e3:.2f}",
                             f"{eager / ort_time:.2f}x"))
    print(table(rows))
    print(f"{args.backbone} liveness model, {args.size}x{args.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")


if __name__ == "__main__":
    main()
