"""Built-in face detectors: OpenCV's Haar cascade (its model ships in the opencv wheel), `boxes`,
`mtcnn` (five landmarks, from local weight files) and `whole_frame` (frames that are faces already).

Registered without importing them (`faceauth.components.lazy`): OpenCV loads when a recipe uses one.
"""

import faceauth
from faceauth.components import Detector, lazy


@faceauth.hookimpl
def faceauth_detectors() -> list[Detector]:
    return [
        Detector(name="haar", build=lazy("faceauth.plugins.detectors.haar:HaarDetector"),
                 options=lazy("faceauth.plugins.detectors.haar:HaarOptions"),
                 description="OpenCV frontal-face Haar cascade (model ships in the opencv wheel)"),
        Detector(name="boxes", build=lazy("faceauth.plugins.detectors.haar:ShippedBoxes"),
                 description="the face boxes the dataset ships (no detection)"),
        Detector(name="mtcnn", build=lazy("faceauth.plugins.detectors.mtcnn:MtcnnDetector"),
                 options=lazy("faceauth.plugins.detectors.mtcnn:MtcnnOptions"),
                 description="MTCNN from local pnet/rnet/onet weights (facenet-pytorch layout): boxes + 5 landmarks"),
        Detector(name="whole_frame", build=lazy("faceauth.faces:WholeFrame"),
                 description="no detection: each frame is the face, cropped to its centre square (videos of face "
                             "crops); deployment crops the same way"),
    ]
