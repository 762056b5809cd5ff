"""Frames per second of the video liveness data path: sample frames, detect (Haar), crop, cache.

A CASIA-FASD-layout tree of small real videos is generated (a rendered face drifting across each
frame), then `casia_fasd` is built twice with `detector: haar`: the first pass decodes, detects,
crops and writes the cache; the second reads the cache and decodes nothing. Reading the crops back
(what a training epoch does) is timed too.

    python benchmarks/bench_video_crops.py [--subjects 4] [--frames 30] [--per-video 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' real-video writer

from common import load_average, table  # noqa: E402

from tests.videos import HAAR_FRAME, face_frames, haar_face, write_video  # noqa: E402

STEMS = ("1", "2", "HR_1", "3", "4", "HR_2", "5", "6", "HR_3", "7", "8", "HR_4")


def make_tree(root: Path, subjects: int, frames: int) -> int:
    face = haar_face()
    clip, _ = face_frames(face, frames, size=HAAR_FRAME, move=1)
    count = 0
    for release in ("train_release", "test_release"):
        for subject in range(1, subjects + 1):
            for stem in STEMS:
                write_video(root / release / str(subject) / f"{stem}.avi", clip)
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--per-video", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FACEAUTH_CACHE"] = str(Path(tmp) / "cache")
        from faceauth.plugins.datasets.casia_fasd import CasiaFasdOptions, build
        from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions

        videos = make_tree(Path(tmp) / "casia", args.subjects, args.frames)
        options = CasiaFasdOptions(root=str(Path(tmp) / "casia"), frames_per_video=args.per_video, val_subjects=0.25)
        sampled = videos * args.per_video
        rows = [("pass", "seconds", "frames/s")]
        for name in ("first pass: decode + Haar + crop + cache", "cached pass: index only"):
            start = time.perf_counter()
            splits = build(options, detector=HaarDetector(HaarOptions()))
            elapsed = time.perf_counter() - start
            rows.append((name, f"{elapsed:.2f}", f"{sampled / elapsed:.0f}"))
        start = time.perf_counter()
        read = 0
        for split in (splits.train, splits.val, splits.test):
            for index in range(len(split)):
                split[index]
                read += 1
        elapsed = time.perf_counter() - start
        rows.append(("reading the cached crops", f"{elapsed:.2f}", f"{read / elapsed:.0f}"))
    print(table(rows))
    print(f"{videos} videos of {args.frames} frames at {HAAR_FRAME[0]}x{HAAR_FRAME[1]}, {args.per_video} sampled "
          f"per video ({sampled} frames); {load_average()}")


if __name__ == "__main__":
    main()
