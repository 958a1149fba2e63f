"""Seeded synthetic videos for the CPU demo: one shape on a white canvas whose color may change half-way, and
questions about it over time (`synthetic.VIDEO_FAMILIES`).

"color_over_time", one task per level (4 frames at 2 fps, so 2 temporal patches of 2 frames each; a change
happens between them):

  difficulty 0   "video_color":   one color throughout; "What color is the shape in the video?"  -> red | green | blue
  difficulty 1   "color_changes": half the videos change color; "Does the shape change color?"   -> yes | no
  difficulty 2   "end_color":     two colors; "What color is the shape at the end?"              -> the second
  difficulty 3   "start_color":   two colors; "What color is the shape at the start?"            -> the first

Levels 0 and 1 need the colors present, not their order; levels 2 and 3 ask clips of the same kind (two colors, one
change half-way) for opposite ends, so a policy blind to time scores about half there. The shape (kind, size, place)
stays still. Videos are H.264 MP4 files in a `videos/` directory beside the parquet files, whose rows name them by
relative path (the EasyR1 layout: `problem` with a "<video>" placeholder, `answer`, `images` empty, `videos`
[path]), plus `difficulty`, `task`, `data_source` (`synthetic_video/<task>`) and `scene` (JSON: frame size, the
shape's kind and box, each frame's color).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shuffle_r1_jax.demo.synthetic import (
    EASY_COLORS,
    KINDS,
    QUESTIONS,
    VIDEO_FAMILIES,
    Shape,
    check_family,
    render,
    response_text,
    seeded_levels,
)
from shuffle_r1_jax.demo.synthetic import SCHEMA as IMAGE_SCHEMA
from shuffle_r1_jax.processing.video_io import write_video

DATA_SOURCE = "synthetic_video"
FRAMES = 4
FPS = 2.0
SCHEMA = IMAGE_SCHEMA.insert(3, pa.field("videos", pa.list_(pa.string())))  # the image rows' with the videos


@dataclasses.dataclass(frozen=True)
class VideoSample:
    """One question about one synthetic video.

    Attributes:
      task: a `VIDEO_FAMILIES` task.
      difficulty: its level.
      answer: the right answer.
      kind: the shape's kind.
      box: the shape's inclusive pixel box (x0, y0, x1, y1).
      colors: the shape's color in each frame.
      frame_size: the square frames' side in pixels.
    """

    task: str
    difficulty: int
    answer: str
    kind: str
    box: tuple[int, int, int, int]
    colors: tuple[str, ...]
    frame_size: int

    @property
    def problem(self) -> str:
        """The question text: a "<video>" placeholder, then the task's question."""
        return "<video>" + QUESTIONS[self.task]

    @property
    def reference_response(self) -> str:
        """A correct, well-formatted response."""
        return response_text(self.task, self.answer)

    def frames(self) -> np.ndarray:
        """`uint8[FRAMES, frame_size, frame_size, 3]` the rendered frames."""
        return np.stack(
            [np.asarray(render([Shape(self.kind, color, self.box)], self.frame_size)) for color in self.colors]
        )


def generate_video_sample(rng: np.random.Generator, difficulty: int, frame_size: int = 56) -> VideoSample:
    """One "color_over_time" sample at the given level (see the module docstring)."""
    (task,) = VIDEO_FAMILIES["color_over_time"][difficulty]
    first, second = (str(c) for c in rng.choice(EASY_COLORS, size=2, replace=False))
    changes = task in ("end_color", "start_color") or (task == "color_changes" and rng.random() < 0.5)
    colors = (first,) * (FRAMES // 2) + ((second if changes else first),) * (FRAMES - FRAMES // 2)
    answer = {
        "video_color": first,
        "color_changes": "yes" if changes else "no",
        "end_color": colors[-1],
        "start_color": colors[0],
    }[task]
    side = int(rng.integers(int(0.5 * frame_size), int(0.8 * frame_size) + 1))
    x0, y0 = (int(v) for v in rng.integers(0, frame_size - side + 1, size=2))
    kind = str(rng.choice(KINDS))
    return VideoSample(task, difficulty, answer, kind, (x0, y0, x0 + side - 1, y0 + side - 1), colors, frame_size)


def generate_video_samples(
    num: int, seed: int, frame_size: int, difficulty_weights: Sequence[float], split: int = 0
) -> list[VideoSample]:
    """`num` samples, deterministic in (seed, split), difficulties in exact proportion, shuffled (as
    `synthetic.generate_samples`).

    Raises:
      ValueError: from `check_family`.
    """
    check_family("color_over_time", difficulty_weights)
    return [
        generate_video_sample(rng, level, frame_size)
        for rng, level in seeded_levels(num, seed, split, difficulty_weights)
    ]


def write_video_dataset(
    out_dir: str | os.PathLike,
    num_train: int,
    num_val: int,
    seed: int,
    frame_size: int = 56,
    difficulty_weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
) -> dict[str, Path]:
    """Writes train.parquet (split 0), val.parquet (split 1) and their videos under `videos/`.

    Args:
      out_dir: the output directory (created if missing).
      num_train: training samples.
      num_val: validation samples.
      seed: the dataset seed.
      frame_size: the frames' side in pixels (even, for H.264).
      difficulty_weights: relative shares of the four levels.

    Returns:
      {"train": path, "val": path} of the written parquet files.

    Raises:
      ValueError: from `check_family`, or when frame_size is odd.
    """
    if frame_size % 2:
        raise ValueError(f"frame_size = {frame_size} must be even (H.264 frames)")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, (name, num) in enumerate((("train", num_train), ("val", num_val))):
        rows = []
        for index, sample in enumerate(generate_video_samples(num, seed, frame_size, difficulty_weights, split)):
            video = f"videos/{name}_{index:05d}.mp4"
            write_video(out / video, sample.frames(), FPS)
            rows.append(
                {
                    "problem": sample.problem,
                    "answer": sample.answer,
                    "images": [],
                    "videos": [video],
                    "difficulty": sample.difficulty,
                    "task": sample.task,
                    "data_source": f"{DATA_SOURCE}/{sample.task}",
                    "scene": json.dumps(
                        {"frame_size": frame_size, "kind": sample.kind, "box": sample.box, "colors": sample.colors},
                        separators=(",", ":"),
                    ),
                }
            )
        paths[name] = out / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), paths[name])
    return paths
