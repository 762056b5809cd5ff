"""Built-in backbones."""

from faceauth.plugins.backbones.resnet import faceauth_backbones

__all__ = ["faceauth_backbones"]
