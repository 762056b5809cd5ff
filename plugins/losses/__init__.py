"""Built-in losses."""

from faceauth.plugins.losses.cross_entropy import faceauth_losses

__all__ = ["faceauth_losses"]
