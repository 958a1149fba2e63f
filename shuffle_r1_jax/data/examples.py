"""One raw record -> a `PromptExample` (images and videos decoded, prompt encoded) or a `BadRecord` saying why not.

Bad-record reasons (`BAD_RECORD_REASONS`):
  unreadable_record     the line is not valid UTF-8 / not valid JSON / not an object (jsonl)
  missing_column        the prompt, answer or images value is null or absent (in a dataset with a videos column
                        a null images or videos value means none: mixed datasets hold null for the kind a row
                        lacks)
  bad_column_type       the prompt/answer is not a string (numbers are accepted as answers), images or videos not
                        a list
  empty_prompt          the prompt is empty or whitespace
  empty_answer          the answer is empty or whitespace
  bad_image             an image cannot be read, decoded or resized
  image_count_mismatch  `<image>` placeholders and images differ in number
  bad_video             a video cannot be read, decoded, sampled or resized
  video_count_mismatch  `<video>` placeholders and videos differ in number
  prompt_too_long       over max_prompt_length tokens after image and video expansion
`make_example` never raises for a data problem: the pipeline counts the reason, skips the record, or stops
with the record and reason named.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from PIL import Image

from shuffle_r1_jax.data.sources import Columns, RawRecord
from shuffle_r1_jax.processing.batch import PromptExample
from shuffle_r1_jax.processing.image_io import ImageDecodeError, decode_image
from shuffle_r1_jax.processing.prompts import PromptEncoder, PromptError
from shuffle_r1_jax.processing.video import DecodedVideo
from shuffle_r1_jax.processing.video_io import VideoDecodeError, read_video

BAD_RECORD_REASONS = (
    "unreadable_record",
    "missing_column",
    "bad_column_type",
    "empty_prompt",
    "empty_answer",
    "bad_image",
    "image_count_mismatch",
    "bad_video",
    "video_count_mismatch",
    "prompt_too_long",
)


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that cannot be used.

    Attributes:
      record_id: the record's `RawRecord.record_id`.
      reason: one of BAD_RECORD_REASONS.
      message: the details.
    """

    record_id: str
    reason: str
    message: str

    def describe(self) -> str:
        """The line `<record_id>: <reason>: <message>`, for logs and errors."""
        return f"{self.record_id}: {self.reason}: {self.message}"


class _Bad(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _resolve(path: str, base_dir: str, image_dir: str | None) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(image_dir or base_dir, path)


def _located(item: Any, record: RawRecord, image_dir: str | None, kind: str, index: int) -> Any:
    """A media item with a relative path resolved; raw bytes pass for videos."""
    if isinstance(item, str):
        return _resolve(item, record.base_dir, image_dir)
    if isinstance(item, Mapping) and item.get("bytes") is None and isinstance(item.get("path"), str):
        return _resolve(item["path"], record.base_dir, image_dir)
    if isinstance(item, Mapping) or (kind == "video" and isinstance(item, (bytes, bytearray))):
        return item
    raise _Bad("bad_column_type", f"{kind} {index} is a {type(item).__name__}, not a path or {{bytes, path}} record")


def _image(item: Any, record: RawRecord, image_dir: str | None, index: int) -> Image.Image:
    try:
        return decode_image(_located(item, record, image_dir, "image", index))
    except (ImageDecodeError, OSError, TypeError) as err:
        raise _Bad("bad_image", f"image {index}: {err}") from err


def _video(item: Any, record: RawRecord, encoder: PromptEncoder, image_dir: str | None, index: int) -> DecodedVideo:
    try:
        located = _located(item, record, image_dir, "video", index)
        return read_video(located, encoder.video_config, encoder.image_config.temporal_patch_size)
    except (VideoDecodeError, OSError, TypeError) as err:
        raise _Bad("bad_video", f"video {index}: {err}") from err


def _items(value: Any, column: str | None, null_is_empty: bool) -> list:
    if value is None:
        if null_is_empty:
            return []
        raise _Bad("missing_column", f"column {column!r} is missing or null")
    if not isinstance(value, (list, tuple)):
        raise _Bad("bad_column_type", f"column {column!r} is a {type(value).__name__}, not a list")
    return list(value)


def _text(value: Any, column: str, empty_reason: str, allow_numbers: bool = False) -> str:
    if value is None:
        raise _Bad("missing_column", f"column {column!r} is missing or null")
    if allow_numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad("bad_column_type", f"column {column!r} is a {type(value).__name__}, not a string: {value!r:.80}")
    if not value.strip():
        raise _Bad(empty_reason, f"column {column!r} is empty")
    return value


def _build(record: RawRecord, encoder: PromptEncoder, columns: Columns) -> PromptExample:
    if record.error is not None:
        raise _Bad("unreadable_record", record.error)
    problem = _text(record.problem, columns.prompt, "empty_prompt")
    answer = _text(record.answer, columns.answer, "empty_answer", allow_numbers=True)
    with_videos = columns.videos is not None
    images = [
        _image(item, record, columns.image_dir, i)
        for i, item in enumerate(_items(record.images, columns.images, null_is_empty=with_videos))
    ]
    videos = (
        [
            _video(item, record, encoder, columns.image_dir, i)
            for i, item in enumerate(_items(record.videos, columns.videos, null_is_empty=True))
        ]
        if with_videos
        else None
    )
    try:
        prompt = encoder.encode(problem, images, videos)
    except PromptError as err:
        raise _Bad(err.reason, str(err)) from err
    patch = encoder.image_config.patch_size
    sizes = [
        (image.width, image.height, int(w) * patch, int(h) * patch)
        for image, (_, h, w) in zip(images, prompt.image_grid_thw.reshape(-1, 3))
    ]
    context = {**record.reward_columns, "image_sizes": sizes, "problem": problem}
    return PromptExample(
        prompt, problem, answer, record.data_source, record.record_id, record.record_index, reward_context=context
    )


def make_example(record: RawRecord, encoder: PromptEncoder, columns: Columns) -> PromptExample | BadRecord:
    """Decodes the record's images and videos and encodes its prompt; a data problem gives a `BadRecord`.

    Args:
      record: the raw record.
      encoder: the prompt encoder (its video settings sample the videos).
      columns: the dataset's column names (for messages) and image directory (for relative image and video
        paths).

    Returns:
      A `PromptExample`, or a `BadRecord` naming the reason (never raises for a data problem).
    """
    try:
        return _build(record, encoder, columns)
    except _Bad as bad:
        return BadRecord(record.record_id, bad.reason, str(bad))
