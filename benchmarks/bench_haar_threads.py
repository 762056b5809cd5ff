"""Face detection from several threads: one `faceauth.faces.HaarCascade` (a cascade per thread, loaded on
first use) against the other way to make it thread-safe, one shared OpenCV cascade behind a lock, and
against one thread.

Frames are 640x480 with a rendered face pasted in (the real faces of ``../shared/data/misc_samples`` with
``--real``). Each round runs every frame once per thread count; figures are frames per second of wall time.

    python benchmarks/bench_haar_threads.py [--threads 4] [--frames 64] [--rounds 3] [--real]
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import load_average, table
from PIL import Image

from faceauth.faces import HaarCascade
from faceauth.plugins.datasets.demo_render import render_face, sample_identity


class LockedCascade(HaarCascade):
    """The alternative: one OpenCV cascade for all threads, one detection at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.shared, self.lock = self._cascade(), threading.Lock()

    def _cascade(self) -> object:
        return getattr(self, "shared", None) or super()._cascade()

    def detect(self, image: np.ndarray, hint: object = None) -> list:
        with self.lock:
            return super().detect(image, hint)


def frames(count: int, real: bool) -> list[np.ndarray]:
    if real:
        folder = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "misc_samples"
        images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*/*.jpg"))]
        return [images[i % len(images)] for i in range(count)]
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        frame = np.full((480, 640, 3), 96, np.uint8)
        frame[100:300, 200:400] = render_face(sample_identity(rng), rng, size=200)
        out.append(frame)
    return out


def frames_per_second(detector: HaarCascade, images: list[np.ndarray], threads: int) -> float:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(detector.detect, images[:threads]))  # each thread's first use (per-thread loading)
        start = time.perf_counter()
        list(pool.map(detector.detect, images))
        return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--real", action="store_true", help="the real faces of ../shared/data/misc_samples")
    args = parser.parse_args()
    images = frames(args.frames, args.real)
    print(load_average())
    ways = {"1 thread": (HaarCascade, 1), f"{args.threads} threads, a cascade per thread": (HaarCascade, args.threads),
            f"{args.threads} threads, one cascade + lock": (LockedCascade, args.threads)}
    figures: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):  # alternating rounds: load changes hit every side alike
        for name, (make, threads) in ways.items():
            figures[name].append(frames_per_second(make(), images, threads))
    base = float(np.median(figures["1 thread"]))
    rows = [("detection", "frames/s (median)", "vs 1 thread")]
    rows += [(name, f"{np.median(v):.1f}", f"{np.median(v) / base:.2f}x") for name, v in figures.items()]
    print(table(rows))
    print(load_average())


if __name__ == "__main__":
    main()
