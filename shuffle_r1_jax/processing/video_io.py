"""Decode videos from paths, bytes or dataset records with PyAV, sampling frames as `processing.video` says;
write frames to a video file (synthetic data, tests).

The frame count comes from demuxing (one packet per frame, no decoding); then the stream is decoded once and
only the sampled frames are converted to RGB. A source that cannot be read (missing, corrupt, no video stream,
fewer frames than the container lists, too short) raises `VideoDecodeError` naming the source, so a data
pipeline can count and skip the record.
"""

from __future__ import annotations

import fractions
import io
import os
from collections.abc import Mapping
from typing import Any

import av
import numpy as np

from shuffle_r1_jax.processing.image_io import describe_source, media_file
from shuffle_r1_jax.processing.video import (
    DecodedVideo,
    VideoPreprocessConfig,
    sampled_frame_count,
    sampled_frame_indices,
)

VideoSource = bytes | bytearray | memoryview | str | os.PathLike | Mapping[str, Any]


class VideoDecodeError(ValueError):
    """A video source (bytes, file, dataset record) could not be read or sampled."""


def _file(source: Any) -> io.BytesIO | str:
    file = media_file(source)
    if file is None:
        raise VideoDecodeError(f"video record has neither bytes nor path: {describe_source(source)}")
    return file


def _count_and_rate(source: Any) -> tuple[int, float]:
    with av.open(_file(source)) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{describe_source(source)} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 0
        frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
    return frames, float(rate)


def _decode(source: Any, indices: np.ndarray) -> np.ndarray:
    wanted = set(indices.tolist())
    frames: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(_file(source)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if decoded in wanted:
                frames[decoded] = frame.to_ndarray(format="rgb24")
            decoded += 1
            if len(frames) == len(wanted):
                break
    if len(frames) < len(wanted):
        raise VideoDecodeError(
            f"{describe_source(source)} decodes to {decoded} frames, but its container lists more (frame "
            f"{int(indices.max())} was sampled): truncated or corrupt"
        )
    return np.stack([frames[i] for i in indices.tolist()])


def read_video(
    source: VideoSource, config: VideoPreprocessConfig = VideoPreprocessConfig(), factor: int = 2
) -> DecodedVideo:
    """Reads and samples one video.

    Args:
      source: a file path, encoded bytes, or an EasyR1 / HF-datasets record {"bytes": ..., "path": ...} (bytes
        win when both are set).
      config: the frame sampling settings.
      factor: the temporal patch size (the sampled frame count is a multiple of it).

    Returns:
      The `DecodedVideo`.

    Raises:
      VideoDecodeError: the source is missing, corrupt, has no video stream, has fewer than `factor` frames,
        or decodes to fewer frames than its container lists.
      TypeError: `source` is of an unsupported Python type.
    """
    try:
        total, video_fps = _count_and_rate(source)
        count = sampled_frame_count(total, video_fps, config, factor)
        frames = _decode(source, sampled_frame_indices(total, count))
    except (VideoDecodeError, TypeError):
        raise
    except Exception as err:  # PyAV raises av.error.* (OSError, ValueError subclasses), ValueError from the rules
        raise VideoDecodeError(f"cannot read video {describe_source(source)}: {err}") from err
    return DecodedVideo(frames=frames, sample_fps=count / total * video_fps, total_frames=total, video_fps=video_fps)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, codec: str = "libx264") -> None:
    """Encodes RGB frames into a video file (the container from the file name's extension).

    Args:
      path: the output file, e.g. "clip.mp4" (libx264, lossy) or "clip.mkv" (with codec "ffv1", lossless).
      frames: `uint8[n, H, W, 3]` RGB frames; libx264 needs even H and W.
      fps: the frame rate.
      codec: an FFmpeg encoder name.

    Raises:
      ValueError: naming the shape, when frames is not `uint8[n, H, W, 3]` with n >= 1.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8[frames >= 1, height, width, 3]; got {frames.dtype}{list(frames.shape)}")
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
