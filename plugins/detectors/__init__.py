"""Built-in face detectors: OpenCV's Haar cascade (its model ships in the opencv wheel) and `boxes`."""

import faceauth
from faceauth.components import Detector
from faceauth.plugins.detectors import haar


@faceauth.hookimpl
def faceauth_detectors() -> list[Detector]:
    return [*haar.detectors()]
