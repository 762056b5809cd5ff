"""Built-in losses.

Each loss module returns its records from a plain function; this package's single
``faceauth_losses`` hook (the ``losses`` entry point) concatenates them.
"""

from __future__ import annotations

import faceauth
from faceauth.components import Loss
from faceauth.plugins.losses import cross_entropy, margin, partial_fc, triplet

__all__ = ["faceauth_losses"]


@faceauth.hookimpl
def faceauth_losses() -> list[Loss]:
    return [*cross_entropy.losses(), *margin.losses(), *partial_fc.losses(), *triplet.losses()]
