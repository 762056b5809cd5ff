"""Decoding image files a user hands faceauth, with one-line errors that name the file.

Torch-free (the deployment path uses it). An image is refused, naming the file, when it cannot be
decoded (truncated, not an image, an unknown format) or when it has more pixels than Pillow's
``Image.MAX_IMAGE_PIXELS`` (89 million by default; a decompression bomb expands a small PNG into
gigabytes, and no face photo needs that many): raise that limit in Pillow to accept larger images.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from faceauth.errors import DataError, quote
from faceauth.io.video import IMAGE_SUFFIXES

__all__ = ["decode_image", "image_size", "images_under", "utf8_text"]


def _open(source: str | Path | BinaryIO, where: str) -> Image.Image:
    try:
        with warnings.catch_warnings():  # Pillow only warns between 1x and 2x its limit: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{where}: image refused: more than {Image.MAX_IMAGE_PIXELS} pixels (a decompression bomb, or "
                        f"far larger than a face photo needs; raise PIL.Image.MAX_IMAGE_PIXELS to accept it)") from None


def decode_image(source: str | Path | BinaryIO, where: str | None = None) -> Image.Image:
    """The image at `source` (a path or an open binary file) decoded to RGB; a DataError naming `where`
    (default: the path) when it cannot be read, cannot be decoded, or is too large."""
    where = where or str(source)
    try:
        with _open(source, where) as img:
            return img.convert("RGB")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types for a damaged file
        verb = "read" if isinstance(source, (str, Path)) else "decode"
        raise DataError(f"{where}: cannot {verb} image ({quote(str(exc) or type(exc).__name__, 200)[1:-1]})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header of the image at `path`, decoding nothing; a missing file raises
    FileNotFoundError, an unreadable or too large one a DataError naming it."""
    try:
        with _open(path, str(path)) as img:
            return img.size
    except (DataError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read image ({quote(str(exc) or type(exc).__name__, 200)[1:-1]})") from None


def utf8_text(text: Any) -> str:
    """`text` (a file or folder name) as valid UTF-8: bytes that are not UTF-8, which Python keeps in
    names as surrogates, become \\x.. escapes, so TensorBoard, protobuf and JSON writers accept them."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def images_under(folder: str | Path) -> list[Path]:
    """The image files (`IMAGE_SUFFIXES`, any case) under `folder`, at any depth, in sorted path order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in sorted(filenames) if name.lower().endswith(IMAGE_SUFFIXES))
    return found
