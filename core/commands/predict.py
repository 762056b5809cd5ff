"""``faceauth-predict``: liveness scores and decisions for images, videos and folders, one row per input.

    faceauth-predict runs/<run>/model.onnx photos/ clip.mp4 [--format jsonl] [--output scores.csv]

Rows (CSV with a header, or JSON lines): ``path``, ``face`` (found or not), ``score``, ``decision``
(live, spoof or "no face") and ``frames`` (frames or clips scored). Exit status 0 whatever the
decisions; 1 on bad input (an unreadable image, a video that does not decode, a folder without
images or videos, a model that is not a liveness model, a threshold that is not a number).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from faceauth.deploy.liveness import Liveness, Prediction
from faceauth.io.console import add_version_option, guard
from faceauth.io.onnx import decision_threshold
from faceauth.io.paths import atomic_write

__all__ = ["FIELDS", "format_rows", "predict_main"]

FIELDS = ("path", "face", "score", "decision", "frames")


def format_rows(rows: Iterable[Prediction], kind: str) -> Iterable[str]:
    """Text lines of `rows`: CSV (a header first) or JSON lines."""
    if kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(FIELDS)
        yield buffer.getvalue()
        for row in rows:
            buffer.seek(0)
            buffer.truncate()
            score = "" if row.score is None else f"{row.score:.9g}"
            writer.writerow((row.path, int(row.face), score, row.decision, row.frames))
            yield buffer.getvalue()
    else:
        for row in rows:
            yield json.dumps(row.to_dict()) + "\n"


def _threshold(text: str | None) -> float | None:
    return None if text is None else decision_threshold(text, "--threshold (in the unit of the model's score)")


def predict_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="faceauth-predict",
        description="Score images, videos and folders with an exported liveness model: one row per input "
                    "(path, face, score, decision, frames). Exit status 0 whatever the decisions, 1 on bad input.")
    parser.add_argument("model", help="exported liveness model (.onnx, faceauth.task=liveness)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image, video or folder (searched recursively)")
    parser.add_argument("--threshold", help="replace the model's decision threshold (faceauth.threshold); "
                                            "live when score >= threshold")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="output rows (default: csv)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the rows to FILE instead of standard output")
    parser.add_argument("--no-detect", action="store_true", help="the images are face crops already")
    parser.add_argument("--mtcnn-weights", metavar="DIR", help="folder of MTCNN's .onnx files, for a model trained "
                                                               "on MTCNN crops (default: $FACEAUTH_MTCNN_WEIGHTS)")
    parser.add_argument("--providers", metavar="NAMES", help="onnxruntime execution providers in order, comma "
                                                             "separated (default: CPUExecutionProvider)")
    parser.add_argument("--threads", type=int, metavar="N", help="onnxruntime intra-op threads (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per onnxruntime call")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_version_option(parser)
    args = parser.parse_args(argv)

    def action() -> int:
        model = Liveness(args.model, threshold=_threshold(args.threshold), detect=not args.no_detect,
                         mtcnn_weights=args.mtcnn_weights, providers=args.providers, threads=args.threads,
                         batch_size=args.batch_size)
        rows = (row for source in args.inputs for row in model.predict(source))
        lines = format_rows(rows, args.format)
        if args.output is None:
            for line in lines:  # a path that is not UTF-8 is written with its own bytes
                sys.stdout.buffer.write(line.encode("utf-8", "surrogateescape"))
            sys.stdout.flush()
            return 0
        text = "".join(lines)  # every input scored before anything is written
        with atomic_write(Path(args.output)) as handle:
            handle.write(text.encode("utf-8", "surrogateescape"))
        return 0

    return guard("faceauth-predict", args.debug, action)


if __name__ == "__main__":  # python -m faceauth.commands.predict ...
    sys.exit(predict_main())
