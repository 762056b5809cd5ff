"""Built-in face detectors: OpenCV's Haar cascade (its model ships in the opencv wheel), `boxes`, and
`mtcnn` (five landmarks, from local weight files)."""

import faceauth
from faceauth.components import Detector
from faceauth.plugins.detectors import haar, mtcnn


@faceauth.hookimpl
def faceauth_detectors() -> list[Detector]:
    return [*haar.detectors(), *mtcnn.detectors()]
