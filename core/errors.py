"""The exceptions faceauth raises for problems a user can fix.

Every one of them carries a one-line message that names the file, recipe key, plugin or sample at
fault and what would be valid. The command-line tools print that line and exit non-zero; anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "FaceAuthError",
    "RecipeError",
    "PluginError",
    "DataError",
    "TrainingError",
    "ExportError",
    "CheckpointError",
]


class FaceAuthError(Exception):
    """Base class: a problem with the user's input, environment or plugins, not a bug in faceauth."""


class RecipeError(FaceAuthError):
    """A recipe file, a recipe key or a command-line override is invalid."""


class PluginError(FaceAuthError):
    """A plugin failed to load, registered something invalid, or two plugins claim one name."""


class DataError(FaceAuthError):
    """A dataset is missing, malformed, empty or holds an unreadable sample."""


class TrainingError(FaceAuthError):
    """Training cannot go on (for example the loss became NaN)."""


class ExportError(FaceAuthError):
    """A model could not be exported, or the exported model disagrees with PyTorch."""


class CheckpointError(FaceAuthError):
    """A checkpoint is missing, damaged, or of the wrong kind for what was asked."""
