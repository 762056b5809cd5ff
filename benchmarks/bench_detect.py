"""Face detection images/s: MTCNN (PyTorch and onnxruntime) against OpenCV's Haar cascade, same photos.

The photos are real ones from ../shared/data: the misc_samples JPEGs and NUAA raw webcam frames
(640x480). Every detector sees the same decoded RGB arrays in alternating rounds; the figure is the
median round's images/s, and the ratio is against Haar measured in the same run. Also counted: the
photos where each detector found at least one face.

    python benchmarks/bench_detect.py --weights DIR [--nuaa 40] [--rounds 3] [--threads 1]

DIR holds pnet.pt, rnet.pt, onet.pt (and the .onnx files of
``python -m faceauth.plugins.detectors.mtcnn_export DIR``; without them the onnxruntime row is left out).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import load_average, table
from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def photos(data: Path, nuaa: int) -> list[np.ndarray]:
    misc = sorted((data / "misc_samples").rglob("*.jpg"))
    frames = sorted((data / "nuaa_imposter_raw_subset").rglob("*.jpg"))
    step = max(1, len(frames) // max(nuaa, 1))
    chosen = misc + frames[::step][:nuaa]
    return [np.asarray(Image.open(path).convert("RGB")) for path in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="folder with pnet.pt, rnet.pt, onet.pt (+ .onnx)")
    parser.add_argument("--data", default=str(DATA), help="the shared data folder")
    parser.add_argument("--nuaa", type=int, default=40, help="NUAA raw frames to add to misc_samples")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch and onnxruntime intra-op threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from faceauth.faces.mtcnn import MtcnnOnnx, onnx_files
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions
    from faceauth.plugins.detectors.mtcnn import MtcnnDetector, MtcnnOptions

    images = photos(Path(args.data), args.nuaa)
    if not images:
        sys.exit(f"no photos under {args.data}")
    detectors = {"haar (OpenCV)": HaarDetector(HaarOptions()),
                 "mtcnn (PyTorch)": MtcnnDetector(MtcnnOptions(weights=args.weights))}
    if all(path.is_file() for path in onnx_files(args.weights).values()):
        onnx = MtcnnOnnx(args.weights, threads=args.threads)
        detectors["mtcnn (onnxruntime)"] = onnx
    for detector in detectors.values():  # warm-up: first-call allocations, kernel selection
        detector.detect(images[0])
    rates: dict[str, list[float]] = {name: [] for name in detectors}
    found: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, detector in detectors.items():
            start = time.perf_counter()
            hits = sum(bool(detector.detect(image)) for image in images)
            rates[name].append(len(images) / (time.perf_counter() - start))
            found[name] = hits
    haar = statistics.median(rates["haar (OpenCV)"])
    rows = [("detector", "images/s", "vs haar", "photos with a face")]
    for name, values in rates.items():
        rate = statistics.median(values)
        rows.append((name, f"{rate:.1f}", f"{rate / haar:.2f}x", f"{found[name]}/{len(images)}"))
    sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    print(f"{len(images)} photos ({', '.join(sizes[:4])}{'...' if len(sizes) > 4 else ''}), {args.rounds} rounds, "
          f"{args.threads} thread(s), {load_average()}")
    print(table(rows))


if __name__ == "__main__":
    main()
