"""Images per second of `faceauth.Liveness` / ``faceauth-predict`` on a folder against a hand-written
onnxruntime loop doing the same work (decode, resize, normalise, batch, run) on the same files.

The model is a randomly initialised ResNet-18 liveness classifier exported by the real exporter;
the images are face crops (``--no-detect``), so the figures compare the pipelines, not the
detector. Both use one onnxruntime session with `--threads` intra-op threads and batches of 32.

    python benchmarks/bench_predict.py [--images 256] [--size 112] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import load_average, table
from PIL import Image

from faceauth.deploy.liveness import Liveness
from faceauth.io.onnx import onnx_session
from faceauth.plugins.backbones.resnet import ResNetFeatures, ResNetOptions
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.plugins.trainers.classifier import Classifier, LivenessScore
from faceauth.training.export import Bundle

BATCH = 32


def _export(size: int, path: Path) -> Path:
    torch.manual_seed(0)
    backbone = ResNetFeatures(18, ResNetOptions(input_size=size))
    metadata = {**{f"preprocess.{k}": v for k, v in backbone.preprocess.as_metadata().items()},
                "faceauth.task": "liveness", "faceauth.threshold": "0"}
    bundle = Bundle(module=LivenessScore(Classifier(backbone, 2)).eval(), example_inputs=(torch.randn(2, 3, size, size),),
                    input_names=("input",), output_names=("score", "logits"), dynamic_axes={"input": {0: "batch"}},
                    metadata=metadata)
    return OnnxExporter(OnnxOptions()).export(bundle, path)


def _hand_written(model: Path, files: list[Path], threads: int) -> int:
    """The loop a user would write with onnxruntime, Pillow and numpy alone."""
    session = onnx_session(model, threads)
    meta = session.get_modelmeta().custom_metadata_map
    h, w = (int(v) for v in meta["preprocess.input_size"].split(","))
    mean = np.array([float(v) for v in meta["preprocess.mean"].split(",")], np.float32)
    std = np.array([float(v) for v in meta["preprocess.std"].split(",")], np.float32)
    live = 0
    for start in range(0, len(files), BATCH):
        batch = []
        for path in files[start:start + BATCH]:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255.0
            batch.append(((pixels - mean) / std).transpose(2, 0, 1))
        scores = session.run(None, {"input": np.stack(batch)})[0]
        live += int((scores >= 0).sum())
    return live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "crops"
        folder.mkdir()
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        files = sorted(folder.glob("*.png"))
        model = _export(args.size, Path(tmp) / "model.onnx")

        def liveness() -> int:
            return sum(r.live for r in Liveness(model, detect=False, threads=args.threads, batch_size=BATCH).predict(folder))

        def command() -> int:
            done = subprocess.run([sys.executable, "-m", "faceauth.commands.predict", str(model), str(folder), "--no-detect",
                                   "--threads", str(args.threads), "--batch-size", str(BATCH)],
                                  capture_output=True, text=True, check=True)
            return done.stdout.count(",live,")

        rows = [("pipeline", "images/s", "vs. hand-written")]
        best: dict[str, float] = {}
        counts = {}
        for _ in range(args.repeats):  # engines in turn, best of the repeats, so load hits all alike
            for name, fn in (("hand-written onnxruntime loop", lambda: _hand_written(model, files, args.threads)),
                             ("faceauth.Liveness.predict", liveness), ("faceauth-predict (new process)", command)):
                start = time.perf_counter()
                counts[name] = fn()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
        assert len(set(counts.values())) == 1, counts  # all three made the same decisions
        base = args.images / best["hand-written onnxruntime loop"]
        for name, seconds in best.items():
            rows.append((name, f"{args.images / seconds:.1f}", f"{args.images / seconds / base:.2f}x"))
    print(table(rows))
    print(f"{args.images} PNG crops 128x128 -> ResNet-18 at {args.size}x{args.size}, batches of {BATCH}, "
          f"{args.threads} onnxruntime thread(s), best of {args.repeats}; {load_average()}")


if __name__ == "__main__":
    main()
