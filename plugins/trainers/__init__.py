"""Built-in trainers."""

from faceauth.plugins.trainers.classifier import faceauth_trainers

__all__ = ["faceauth_trainers"]
