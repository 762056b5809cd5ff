"""Export the `mtcnn` detector's three networks to ONNX, for deployment without PyTorch.

    python -m faceauth.plugins.detectors.mtcnn_export DIR [--out DIR]

reads ``pnet.pt``, ``rnet.pt``, ``onet.pt`` from DIR and writes ``pnet.onnx``, ``rnet.onnx``,
``onet.onnx`` (batch and P-Net's height and width dynamic), each checked against PyTorch first.
`faceauth.faces.mtcnn.MtcnnOnnx` runs them (the Authenticator and the other deployment paths do).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import faceauth
from faceauth.errors import PluginError
from faceauth.faces.mtcnn import MTCNN_NETS, onnx_files
from faceauth.io.console import add_version_option
from faceauth.io.paths import atomic_write
from faceauth.plugins.detectors.mtcnn import load_networks


def export_onnx(folder: str | Path, out: str | Path | None = None, opset: int = 18) -> list[Path]:
    """Write ``pnet.onnx``, ``rnet.onnx``, ``onet.onnx`` (batch, and P-Net's height and width, dynamic) from
    the .pt files in `folder` into `out` (default `folder`); each is checked against PyTorch on a sample."""
    import onnxruntime as ort
    import torch

    nets = load_networks(folder)
    written = []
    for name, net in nets.items():
        side = MTCNN_NETS[name]
        example = torch.rand(2, 3, side or 37, side or 53) * 2 - 1
        outputs = ["prob", "reg"] + (["landmarks"] if name == "onet" else [])
        dims = {0: torch.export.Dim("batch", min=1, max=4096)}
        if side is None:
            dims.update({2: torch.export.Dim("height", min=12, max=8192), 3: torch.export.Dim("width", min=12, max=8192)})
        try:  # torch.export's internals warn about things a user cannot act on
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(net, (example,), None, input_names=["input"], output_names=outputs,
                                            dynamic_shapes=(dims,), opset_version=opset, dynamo=True, verbose=False,
                                            optimize=False)
        except Exception as exc:
            raise PluginError(f"detector 'mtcnn': torch.onnx could not export {name}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
        data = program.model_proto.SerializeToString()
        check = torch.rand(1, 3, side or 61, side or 29) * 2 - 1
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            expected = [t.numpy() for t in net(check)]
        got = session.run(None, {"input": check.numpy()})
        worst = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
        if worst > 1e-4:
            raise PluginError(f"detector 'mtcnn': the exported {name} differs from PyTorch by {worst:.2g}")
        path = onnx_files(out or folder)[name]
        with atomic_write(path) as handle:
            handle.write(data)
        written.append(path)
    return written



def main(argv: Sequence[str] | None = None) -> int:
    """``python -m faceauth.plugins.detectors.mtcnn_export DIR [--out DIR]``: exit status 1 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m faceauth.plugins.detectors.mtcnn_export",
                                     description="Export MTCNN's pnet.pt, rnet.pt, onet.pt to ONNX for deployment "
                                                 "without PyTorch.")
    parser.add_argument("weights", help="folder with pnet.pt, rnet.pt, onet.pt")
    parser.add_argument("--out", help="folder to write pnet.onnx, rnet.onnx, onet.onnx to (default: the weights folder)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_version_option(parser)
    args = parser.parse_args(argv)

    try:
        for path in export_onnx(args.weights, args.out):
            print(path)
    except faceauth.FaceAuthError as exc:
        if args.debug:
            raise
        print(f"mtcnn export: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
