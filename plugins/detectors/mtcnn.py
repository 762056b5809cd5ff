"""The `mtcnn` detector: MTCNN's three networks from local weight files, faces with five landmarks.

``detector: {name: mtcnn, weights: DIR}``: DIR holds ``pnet.pt``, ``rnet.pt`` and ``onet.pt``, state
dicts in the layout of the widely used PyTorch MTCNN weights (the files the ``facenet-pytorch`` wheel
carries under ``facenet_pytorch/data/``). They are read with ``torch.load(weights_only=True)``: a file
that needs arbitrary unpickling is refused. The cascade itself (`faceauth.faces.mtcnn.MtcnnPipeline`) is
numpy and OpenCV; here the networks run in PyTorch and NMS is torchvision's.

Deployment runs the same cascade with onnxruntime and no PyTorch (`faceauth.faces.mtcnn.MtcnnOnnx`). Make the
ONNX files once, beside the .pt files::

    python -m faceauth.plugins.detectors.mtcnn_export DIR      # writes DIR/pnet.onnx, rnet.onnx, onet.onnx

``runtime: onnx`` makes the detector itself use them (what deployment runs, for training crops too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

import faceauth
from faceauth.errors import DataError, PluginError
from faceauth.faces.mtcnn import MTCNN_NETS, MtcnnOnnx, MtcnnPipeline, MtcnnSettings


def _thresholds(instance: Any, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if len(value) != 3 or not all(0 < v < 1 for v in value):
        raise ValueError(f"thresholds: expected three probabilities in (0, 1) for P-Net, R-Net and O-Net, "
                         f"got {list(value)}")


def _factor(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.1 <= value < 1:
        raise ValueError(f"factor: expected the pyramid step in [0.1, 1), got {value!r}")


@attrs.frozen
class MtcnnOptions:
    weights: str = faceauth.schema.required("the folder with pnet.pt, rnet.pt, onet.pt (and pnet.onnx ... for "
                                            "runtime: onnx)")
    min_face: int = attrs.field(default=20, validator=faceauth.schema.positive)  # pixels, after max_width
    factor: float = attrs.field(default=0.709, validator=_factor)
    thresholds: tuple[float, ...] = attrs.field(default=(0.6, 0.7, 0.7), validator=_thresholds)
    max_width: int = attrs.field(default=640, validator=faceauth.schema.positive)  # larger frames are downscaled first
    runtime: Literal["torch", "onnx"] = "torch"

    def settings(self) -> MtcnnSettings:
        return MtcnnSettings(self.min_face, self.factor, tuple(self.thresholds), self.max_width)  # type: ignore[arg-type]


def _networks() -> dict[str, Any]:
    import torch
    from torch import nn

    class _Flatten(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # The published weights' dense layers read the feature map in (W, H, C) order.
            return x.permute(0, 3, 2, 1).flatten(1)

    class PNet(nn.Module):
        """Proposal network: fully convolutional, 12x12 windows at stride 2."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return torch.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)

    class RNet(nn.Module):
        """Refinement network: 24x24 crops."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.flatten = _Flatten()
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu4(self.dense4(self.flatten(self.prelu3(self.conv3(x)))))
            return torch.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)

    class ONet(nn.Module):
        """Output network: 48x48 crops, box regression and five landmarks."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.flatten = _Flatten()
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu5(self.dense5(self.flatten(self.prelu4(self.conv4(x)))))
            return torch.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)

    return {"pnet": PNet, "rnet": RNet, "onet": ONet}


def _layout_error(path: Path, state: dict[str, Any], expected: dict[str, Any]) -> str | None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})" for k in expected
             if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return None
    parts = [f"{len(state)} keys, expected {len(expected)}"]
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {', '.join(str(k)[:60] for k in unexpected[:3])}")
    if wrong:
        parts.append(f"{len(wrong)} of another shape, e.g. {'; '.join(wrong[:2])}")
    return (f"detector 'mtcnn': {path} is not an MTCNN {path.stem[:1].upper()}-Net state dict in the facenet-pytorch "
            f"layout ({'; '.join(parts)})")


def load_networks(folder: str | Path) -> dict[str, Any]:
    """P-, R- and O-Net (eval mode) from ``pnet.pt``, ``rnet.pt``, ``onet.pt`` in `folder`; a PluginError
    naming the file when one is missing, unreadable or of another layout (key counts and examples)."""
    import torch

    folder = Path(folder)
    nets = {}
    for name, cls in _networks().items():
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise PluginError(f"detector 'mtcnn': {path} not found (weights: expected a folder with pnet.pt, rnet.pt "
                              f"and onet.pt, e.g. the files under facenet_pytorch/data/ of the facenet-pytorch wheel)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle, zip and runtime errors alike
            raise PluginError(f"detector 'mtcnn': {path} cannot be read as a weights-only state dict "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
        net = cls()
        if not isinstance(state, dict):
            raise PluginError(f"detector 'mtcnn': {path} holds a {type(state).__name__}, expected a state dict")
        problem = _layout_error(path, state, net.state_dict())
        if problem:
            raise PluginError(problem)
        net.load_state_dict(state)
        nets[name] = net.eval()
    return nets


class _TorchStage:
    def __init__(self, net: Any):
        self.net = net

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            return [out.numpy() for out in self.net(torch.from_numpy(x))]


def nms_torch(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """torchvision's NMS: indices of the kept boxes, best first."""
    import torch
    from torchvision.ops import nms

    return nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()


class MtcnnDetector(MtcnnPipeline):
    """The `mtcnn` detector: the cascade with PyTorch networks (or the ONNX ones with ``runtime: onnx``)."""

    def __init__(self, options: MtcnnOptions):
        self.options = options
        if options.runtime == "onnx":
            try:
                onnx = MtcnnOnnx(options.weights, options.settings())
            except DataError as exc:
                raise PluginError(f"detector 'mtcnn': {str(exc).removeprefix('mtcnn: ')}") from None
            super().__init__(onnx.pnet, onnx.rnet, onnx.onet, onnx.nms, onnx.settings)
            return
        nets = load_networks(options.weights)
        super().__init__(*(_TorchStage(nets[name]) for name in MTCNN_NETS), nms=nms_torch,
                         settings=options.settings())
