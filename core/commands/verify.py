"""``faceauth-verify``: one accept/reject decision for a probe against enrolment images, with the exported
models of a fusion run (`faceauth.deploy.authenticator.Authenticator`). No PyTorch is imported."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from faceauth.deploy.authenticator import Authenticator, Decision
from faceauth.io.console import add_version_option, guard

__all__ = ["verify_main"]


def _describe(decision: Decision) -> str:
    verdict = "accept" if decision.accept else "reject"
    lines = [f"decision: {verdict}  score={decision.score:.4f}  threshold={decision.threshold:.4f}",
             f"match:    {decision.match:.4f}", f"liveness: {decision.liveness:.4f}"]
    lines += [f"  {name:<28} {value:.4f}" for name, value in decision.components.items()]
    lines += [f"  {name:<28} {value:.4f}" for name, value in decision.features.items() if name.startswith("quality/")]
    return "\n".join(lines)


def verify_main(argv: Sequence[str] | None = None) -> int:
    """``faceauth-verify --enrolled a.jpg [b.jpg ...] --probe c.jpg --models DIR [--json]``."""
    parser = argparse.ArgumentParser(
        prog="faceauth-verify",
        description="Accept or reject a probe face against enrolment images with exported faceauth models "
                    "(a fusion run's directory). Exit status 0 with a decision (accept or reject), 1 on bad input.")
    parser.add_argument("--enrolled", nargs="+", required=True, metavar="IMAGE",
                        help="enrolment image(s) of the person")
    parser.add_argument("--probe", nargs="+", required=True, metavar="IMAGE",
                        help="the probe image (several: frames of one presentation, scores averaged)")
    parser.add_argument("--models", required=True, metavar="DIR", help="folder with the fusion and component models")
    parser.add_argument("--no-detect", action="store_true",
                        help="the images are face crops already (no face detection)")
    parser.add_argument("--threshold", type=float, help="replace the fusion model's decision threshold")
    parser.add_argument("--mtcnn-weights", metavar="DIR",
                        help="folder of MTCNN's .onnx files, for models trained on MTCNN crops")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_version_option(parser)
    args = parser.parse_args(argv)

    def action() -> int:
        auth = Authenticator.from_dir(args.models, detect=not args.no_detect, threshold=args.threshold,
                                      mtcnn_weights=args.mtcnn_weights)
        decision = auth.verify(args.enrolled, args.probe)
        print(json.dumps(decision.to_dict(), indent=2, sort_keys=True) if args.json else _describe(decision))
        return 0

    return guard("faceauth-verify", args.debug, action)


if __name__ == "__main__":  # python -m faceauth.commands.verify ...
    sys.exit(verify_main())

