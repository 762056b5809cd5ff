"""Built-in backbones: torchvision ResNets, ArcFace IResNets, MobileFaceNet, FaceNet, and the liveness
networks CDCN and MiniFAS.

Each module lists its records from a plain `backbones()` function; this package's single hook
implementation (the ``backbones`` entry point) returns them all.
"""

import faceauth
from faceauth.components import Backbone
from faceauth.plugins.backbones import cdcn, facenet, iresnet, minifas, mobilefacenet, resnet, temporal

__all__ = ["faceauth_backbones"]


@faceauth.hookimpl
def faceauth_backbones() -> list[Backbone]:
    return [record for module in (resnet, iresnet, mobilefacenet, facenet, temporal, cdcn, minifas) for record in module.backbones()]
