"""Built-in backbones: torchvision ResNets, ArcFace IResNets, MobileFaceNet and FaceNet.

Each module has its own `faceauth_backbones` hook implementation (usable alone as a plugin); this
package is the registered plugin and returns all of them, as a module holds one function per hook.
"""

import faceauth
from faceauth.components import Backbone
from faceauth.plugins.backbones import facenet, iresnet, mobilefacenet, resnet

__all__ = ["faceauth_backbones"]


@faceauth.hookimpl
def faceauth_backbones() -> list[Backbone]:
    return [record for module in (resnet, iresnet, mobilefacenet, facenet) for record in module.faceauth_backbones()]
