"""Decode images from bytes, paths, dataset records or PIL objects into RGB PIL images.

A source that cannot be decoded raises `ImageDecodeError` (naming the source), so a data pipeline can
count and skip the sample instead of stopping.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

from PIL import Image

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | Image.Image | Mapping[str, Any]


class ImageDecodeError(ValueError):
    """An image source (bytes, file, dataset record) could not be decoded."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts to RGB; transparency is composited onto a white background (as the HF processor does)."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def describe_source(source: Any) -> str:
    """A short human-readable name for an image or video source, for error messages and logs."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Mapping):
        path = source.get("path")
        size = len(source["bytes"]) if source.get("bytes") is not None else None
        return f"<record path={path!r} bytes={size}>"
    return f"<{type(source).__name__}>"


def media_file(source: Any) -> io.BytesIO | str | None:
    """The file behind an image or video source, for a decoder to open.

    Args:
      source: encoded bytes, a file path, or a {"bytes": ..., "path": ...} record (bytes win when both are set).

    Returns:
      A buffer over the bytes, or the path; None for a record with neither bytes nor path.

    Raises:
      TypeError: `source` is of an unsupported Python type.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Mapping):
        if source.get("bytes") is not None:
            return media_file(source["bytes"])
        return media_file(source["path"]) if source.get("path") else None
    raise TypeError(f"unsupported source type {type(source).__name__}")


def _open(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    file = media_file(source)
    if file is None:
        raise ImageDecodeError(f"image record has neither bytes nor path: {describe_source(source)}")
    return Image.open(file)


def decode_image(source: ImageSource) -> Image.Image:
    """Decodes `source` fully into a new RGB PIL image.

    Args:
      source: encoded bytes, a file path, an EasyR1 / HF-datasets record {"bytes": ..., "path": ...}
        (bytes win when both are set), or a PIL image.

    Returns:
      An RGB `PIL.Image.Image` (pixels loaded, no open file handle).

    Raises:
      ImageDecodeError: the source is missing, truncated, corrupt or not an image.
      TypeError: `source` is of an unsupported Python type.
    """
    try:
        image = _open(source)
        image.load()
        return to_rgb(image)
    except (ImageDecodeError, TypeError):
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ImageDecodeError(f"cannot decode image {describe_source(source)}: {err}") from err
