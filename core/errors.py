"""The exceptions faceauth raises for problems a user can fix.

Every one of them carries a one-line message that names the file, recipe key, plugin or sample at
fault and what would be valid. The command-line tools print that line and exit non-zero; anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FaceAuthError",
    "RecipeError",
    "PluginError",
    "DataError",
    "TrainingError",
    "ExportError",
    "CheckpointError",
    "quote",
    "suggest",
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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 160, 60, 160
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 8


def quote(value: Any, limit: int = 200) -> str:
    """`repr(value)` for a message, at most `limit` characters, in time and memory that do not grow with `value`.

    Every message that shows a user's value goes through this: a recipe value, a key, a metadata
    field may be megabytes long or nested without end (a YAML alias bomb), and a message must stay one
    readable line. Long values end in "...".
    """
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an integer beyond str()'s digit limit, a repr that recurses
        digits = f" of about {int(value.bit_length() * 0.30103) + 1} digits" if isinstance(value, int) else ""
        text = f"<{type(value).__name__}{digits}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def article(word: str) -> str:
    """"an embedding", "a liveness": `word` (quoted when long or not printable) with its indefinite article."""
    word = word if len(word) <= 40 and word.isprintable() else quote(word, 40)  # a hostile value stays one line
    return f"an {word}" if word[:1] in ("a", "e", "i", "o", "u") else f"a {word}"


def suggest(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known name, or '' when none is close."""
    if not isinstance(name, str) or len(name) > 100:  # no name is that long; comparing would only cost time
        return ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
