"""Seeded synthetic visual questions (shapes on a white canvas) whose answers need the image.

For the CPU demo that trains a tiny model: images are small (56-112 px, a few dozen patches), answers are
one short token (a digit or a word from a tiny set) or one box, and difficulty is graded. Three task families
(`FAMILIES`):

"shapes": easy groups are solved quickly while hard ones stay mostly unsolved (a tiny model learns color and
little else), which makes advantage collapse visible.

  difficulty 0 (easy)    "color":    one large shape; "What color is the shape?"  -> red | green | blue
  difficulty 1 (medium)  "larger":   a circle and a square of clearly different area;
                                     "Which is larger, the circle or the square?" -> circle | square
                         "position": a circle and a square side by side;
                                     "Is the circle left or right of the square?" -> left | right
  difficulty 2 (hard)    "count":    1-4 red shapes among 1-3 shapes of other colors, all small;
                                     "How many red shapes are in the image?"      -> 1 .. 4

"largest_color": one question at every level, "What color is the largest shape?" -> red | green | blue | yellow,
whose difficulty is how close the largest shape's area is to the runner-up's. It needs only what a tiny model
can perceive (how much of each color there is), so every level is learnable, at graded speeds:

  difficulty 0   one shape
  difficulty 1   two shapes, area ratio largest / runner-up 3 - 4.5
  difficulty 2   two shapes, area ratio 1.8 - 2.4
  difficulty 3   three shapes, area ratio 1.35 - 1.6 (the third is smaller still)

"grounding": "Where is the <color> <kind>? Answer with its box." -> the shape's pixel box as JSON
`[x1, y1, x2, y2]` (corners: the box covers pixels x1 .. x2 - 1, y1 .. y2 - 1) in the original image's pixels,
scored by `grounding_iou` (the model answers in the resized image's pixels, as Qwen2.5-VL does). The shapes of an
image have distinct colors and distinct kinds, so either word names the target; difficulty is how many shapes
there are and how small (`GROUNDING_LEVELS`):

  difficulty 0   one shape, side 30 - 50 % of the image
  difficulty 1   two shapes, sides 25 - 40 %
  difficulty 2   three shapes, sides 20 - 30 %

"grounding_cells": the same question and answer, the shapes each inside its own cell of a 2 x 2 grid (one shape
per cell, side 60 - 90 % of the cell, anywhere in it), so a 56 px image puts each shape in one merged image token
(Qwen2.5-VL merges 28 px); difficulty is how many shapes there are (1, 2, 3). Telling the cell is a first, coarse
localization a tiny model can learn; the box inside the cell is the fine part.

Shapes never overlap (2 px gap) and are drawn without anti-aliasing in pure palette colors, so every
answer can be re-derived from the pixels. Rows follow the EasyR1 parquet layout: `problem` (with an
"<image>" placeholder), `answer`, `images` (list of {"bytes": PNG, "path": None}), plus `difficulty`,
`task`, `data_source` (`synthetic_shapes/<task>`, so validation reports accuracy per task) and `scene` (JSON:
image size and the shapes' kind, color and pixel box); "largest_color" and "grounding" rows report accuracy per level
(`synthetic_shapes/<task>/level<d>`); a grounding row's scene also names its target (the shape's index).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

DATA_SOURCE = "synthetic_shapes"
BACKGROUND = (255, 255, 255)
COLORS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 80, 220), "yellow": (230, 190, 20)}
EASY_COLORS = ("red", "green", "blue")
KINDS = ("circle", "square", "triangle")
AREA_SCALE = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}  # nominal area / side^2
QUESTIONS = {
    "color": "What color is the shape?",
    "larger": "Which is larger, the circle or the square?",
    "position": "Is the circle left or right of the square?",
    "count": "How many red shapes are in the image?",
    "largest_color": "What color is the largest shape?",
    # the video family's (`shuffle_r1_jax.demo.synthetic_video`)
    "video_color": "What color is the shape in the video?",
    "color_changes": "Does the shape change color?",
    "end_color": "What color is the shape at the end?",
    "start_color": "What color is the shape at the start?",
}
TASK_ANSWERS = {
    "color": EASY_COLORS,
    "larger": ("circle", "square"),
    "position": ("left", "right"),
    "count": ("1", "2", "3", "4"),
    "largest_color": tuple(COLORS),
    "video_color": EASY_COLORS,
    "color_changes": ("yes", "no"),
    "end_color": EASY_COLORS,
    "start_color": EASY_COLORS,
}
GROUNDING_QUESTION = "Where is the {color} {kind}? Answer with its box."
_GROUNDING_PROBLEM = re.compile(r"Where is the (\w+) (\w+)\? Answer with its box\.$")
FAMILIES = {
    "shapes": {0: ("color",), 1: ("larger", "position"), 2: ("count",)},
    "largest_color": {0: ("largest_color",), 1: ("largest_color",), 2: ("largest_color",), 3: ("largest_color",)},
    "grounding": {0: ("grounding",), 1: ("grounding",), 2: ("grounding",)},
    "grounding_cells": {0: ("grounding",), 1: ("grounding",), 2: ("grounding",)},
}
# families of videos (`shuffle_r1_jax.demo.synthetic_video` renders them): one task per level
VIDEO_FAMILIES = {
    "color_over_time": {0: ("video_color",), 1: ("color_changes",), 2: ("end_color",), 3: ("start_color",)},
}
DEFAULT_FAMILY = "shapes"
DEFAULT_DIFFICULTY_WEIGHTS = (0.4, 0.3, 0.3)
_MULTI_LEVEL_TASKS = {  # tasks asked at several levels of their family: their data_source names the level
    task
    for family in FAMILIES.values()
    for task in set().union(*family.values())
    if sum(task in tasks for tasks in family.values()) > 1
}
LARGEST_COLOR_LEVELS = {1: (2, 3.0, 4.5), 2: (2, 1.8, 2.4), 3: (3, 1.35, 1.6)}  # level -> (shapes, area ratio range)
GROUNDING_LEVELS = {0: (1, 0.3, 0.5), 1: (2, 0.25, 0.4), 2: (3, 0.2, 0.3)}  # level -> (shapes, side / image side)
GAP = 2
_MAX_PLACEMENT_TRIES = 500

SCHEMA = pa.schema(
    [
        ("problem", pa.string()),
        ("answer", pa.string()),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("difficulty", pa.int64()),
        ("task", pa.string()),
        ("data_source", pa.string()),
        ("scene", pa.string()),
    ]
)


@dataclasses.dataclass(frozen=True)
class Shape:
    """A shape drawn inside a square pixel box.

    Attributes:
      kind: "circle", "square" or "triangle" (pointing up).
      color: a `COLORS` name.
      box: the inclusive pixel box (x0, y0, x1, y1), square with side x1 - x0 + 1.
    """

    kind: str
    color: str
    box: tuple[int, int, int, int]

    @property
    def side(self) -> int:
        """The box's side in pixels."""
        return self.box[2] - self.box[0] + 1

    @property
    def area(self) -> float:
        """Nominal area: side^2 (square), pi/4 side^2 (circle), side^2 / 2 (triangle)."""
        return AREA_SCALE[self.kind] * self.side**2

    @property
    def corners(self) -> list[int]:
        """The box as grounding corners [x1, y1, x2, y2]: the shape covers pixels x1 .. x2 - 1, y1 .. y2 - 1."""
        x0, y0, x1, y1 = self.box
        return [x0, y0, x1 + 1, y1 + 1]

    @property
    def center_x(self) -> float:
        """The box's horizontal center in pixels."""
        return (self.box[0] + self.box[2]) / 2


@dataclasses.dataclass(frozen=True)
class SyntheticSample:
    """One question about one rendered image.

    Attributes:
      task: a `QUESTIONS` key, or "grounding".
      difficulty: the level in its family, from 0 (easy).
      answer: the right answer, one of `TASK_ANSWERS[task]`; for "grounding" the target's `Shape.corners` as JSON.
      shapes: the shapes in the image, in drawing order.
      image_size: the square image's side in pixels.
      target: the index in `shapes` of the shape a grounding question asks for; None for the other tasks.
    """

    task: str
    difficulty: int
    answer: str
    shapes: tuple[Shape, ...]
    image_size: int
    target: int | None = None

    @property
    def problem(self) -> str:
        """The question text: an "<image>" placeholder, then the task's question."""
        if self.task == "grounding":
            shape = self.shapes[self.target]
            return "<image>" + GROUNDING_QUESTION.format(color=shape.color, kind=shape.kind)
        return "<image>" + QUESTIONS[self.task]

    @property
    def reference_response(self) -> str:
        """A correct, well-formatted response (for tokenizer corpora and sanity checks); a grounding box is in the
        original image's pixels, right when the image is not resized."""
        if self.task == "grounding":
            return grounding_response_text(grounding_target(self.problem), json.loads(self.answer))
        return response_text(self.task, self.answer)


def render(shapes: Sequence[Shape], image_size: int) -> Image.Image:
    """Draws the shapes (aliased, pure colors) on a white RGB canvas of image_size x image_size."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        x0, y0, x1, y1 = shape.box
        fill = COLORS[shape.color]
        if shape.kind == "square":
            draw.rectangle(shape.box, fill=fill)
        elif shape.kind == "circle":
            draw.ellipse(shape.box, fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _boxes_apart(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[2] + GAP < b[0] or b[2] + GAP < a[0] or a[3] + GAP < b[1] or b[3] + GAP < a[1]


def _place(rng: np.random.Generator, sides: Sequence[int], image_size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping square boxes with the given sides, by rejection sampling (restarting when stuck).

    Any two boxes are at least `GAP` empty pixels apart (along x or y), and every box is at least `GAP` pixels
    from the canvas edge.

    Raises:
      RuntimeError: naming the sides and canvas size when every restart gets stuck.
    """
    for _ in range(_MAX_PLACEMENT_TRIES):
        boxes: list[tuple[int, int, int, int]] = []
        for side in sides:
            for _ in range(_MAX_PLACEMENT_TRIES):
                x0, y0 = (int(v) for v in rng.integers(GAP, image_size - side - GAP + 1, size=2))
                box = (x0, y0, x0 + side - 1, y0 + side - 1)
                if all(_boxes_apart(box, other) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == len(sides):
            return boxes
    raise RuntimeError(f"cannot place shapes of sides {list(sides)} on a {image_size} px canvas")


def _side(rng: np.random.Generator, image_size: int, low: float, high: float) -> int:
    return max(4, int(round(rng.uniform(low, high) * image_size)))


def _color_task(rng: np.random.Generator, image_size: int) -> tuple[str, list[Shape]]:
    color = str(rng.choice(EASY_COLORS))
    side = _side(rng, image_size, 0.45, 0.7)
    (box,) = _place(rng, [side], image_size)
    return color, [Shape(str(rng.choice(KINDS)), color, box)]


def _larger_task(rng: np.random.Generator, image_size: int) -> tuple[str, list[Shape]]:
    answer = str(rng.choice(("circle", "square")))
    large, small = _side(rng, image_size, 0.38, 0.48), _side(rng, image_size, 0.16, 0.26)
    other = "square" if answer == "circle" else "circle"
    boxes = _place(rng, [large, small], image_size)
    colors = rng.choice(list(COLORS), size=2)
    shapes = [Shape(answer, str(colors[0]), boxes[0]), Shape(other, str(colors[1]), boxes[1])]
    return answer, [shapes[i] for i in rng.permutation(2)]


def _position_task(rng: np.random.Generator, image_size: int) -> tuple[str, list[Shape]]:
    sides = [_side(rng, image_size, 0.2, 0.3) for _ in range(2)]
    for _ in range(_MAX_PLACEMENT_TRIES):
        circle_box, square_box = _place(rng, sides, image_size)
        if circle_box[2] < square_box[0] or square_box[2] < circle_box[0]:
            break
    else:
        raise RuntimeError(f"cannot place a circle and a square side by side on {image_size} px")
    colors = rng.choice(list(COLORS), size=2)
    shapes = [Shape("circle", str(colors[0]), circle_box), Shape("square", str(colors[1]), square_box)]
    answer = "left" if shapes[0].center_x < shapes[1].center_x else "right"
    return answer, shapes


def _count_task(rng: np.random.Generator, image_size: int) -> tuple[str, list[Shape]]:
    num_red, num_other = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    colors = ["red"] * num_red + [str(c) for c in rng.choice(["green", "blue", "yellow"], size=num_other)]
    sides = [_side(rng, image_size, 0.14, 0.2) for _ in colors]
    boxes = _place(rng, sides, image_size)
    shapes = [Shape(str(rng.choice(KINDS)), color, box) for color, box in zip(colors, boxes)]
    return str(num_red), [shapes[i] for i in rng.permutation(len(shapes))]


def _largest_color_task(rng: np.random.Generator, image_size: int, difficulty: int) -> tuple[str, list[Shape]]:
    """Shapes of distinct colors whose largest (by nominal area) is `LARGEST_COLOR_LEVELS[difficulty]`'s ratio
    range times the runner-up's, and the largest one's color; difficulty 0 is one shape."""
    if difficulty == 0:
        color = str(rng.choice(list(COLORS)))
        (box,) = _place(rng, [_side(rng, image_size, 0.45, 0.7)], image_size)
        return color, [Shape(str(rng.choice(KINDS)), color, box)]
    num_shapes, low, high = LARGEST_COLOR_LEVELS[difficulty]
    kinds = [str(k) for k in rng.choice(("circle", "square"), size=num_shapes)]
    areas = [rng.uniform(0.12, 0.18) * image_size**2]
    areas += [areas[0] / rng.uniform(low, high)]
    areas += [areas[1] / rng.uniform(1.3, 1.6) for _ in range(num_shapes - 2)]
    sides = [max(4, int(round(math.sqrt(area / AREA_SCALE[kind])))) for area, kind in zip(areas, kinds)]
    colors = [str(c) for c in rng.choice(list(COLORS), size=num_shapes, replace=False)]
    boxes = _place(rng, sides, image_size)
    shapes = [Shape(kind, color, box) for kind, color, box in zip(kinds, colors, boxes)]
    return colors[0], [shapes[i] for i in rng.permutation(num_shapes)]


def _place_in_cells(rng: np.random.Generator, num_shapes: int, image_size: int) -> list[tuple[int, int, int, int]]:
    """Square boxes in distinct cells of the 2 x 2 grid, side 60 - 90 % of the cell, at least `GAP` pixels inside
    their cell's edges."""
    cell = image_size // 2
    boxes = []
    for index in rng.permutation(4)[:num_shapes]:
        side = min(_side(rng, cell, 0.6, 0.9), cell - 2 * GAP)
        row, col = divmod(int(index), 2)
        x0, y0 = (int(v) for v in rng.integers(GAP, cell - side - GAP + 1, size=2))
        x0, y0 = col * cell + x0, row * cell + y0
        boxes.append((x0, y0, x0 + side - 1, y0 + side - 1))
    return boxes


def _grounding_task(
    rng: np.random.Generator, image_size: int, difficulty: int, cells: bool = False
) -> tuple[str, list[Shape], int]:
    """`GROUNDING_LEVELS[difficulty]`'s shapes (anywhere, or with `cells` one per cell of a 2 x 2 grid), of distinct
    colors and distinct kinds, a target drawn among them, and the target's corners as JSON: (answer, shapes,
    target index)."""
    num_shapes, low, high = GROUNDING_LEVELS[difficulty]
    if cells:
        boxes = _place_in_cells(rng, num_shapes, image_size)
    else:
        boxes = _place(rng, [_side(rng, image_size, low, high) for _ in range(num_shapes)], image_size)
    colors = rng.choice(list(COLORS), size=num_shapes, replace=False)
    kinds = rng.choice(KINDS, size=num_shapes, replace=False)
    shapes = [Shape(str(kind), str(color), box) for kind, color, box in zip(kinds, colors, boxes)]
    target = int(rng.integers(num_shapes))
    return json.dumps(shapes[target].corners), shapes, target


_TASK_BUILDERS = {"color": _color_task, "larger": _larger_task, "position": _position_task, "count": _count_task}


def generate_sample(
    rng: np.random.Generator, difficulty: int, image_size: int = 56, family: str = DEFAULT_FAMILY
) -> SyntheticSample:
    """One sample of `family` at the given difficulty; the task is drawn uniformly among that level's tasks."""
    tasks = FAMILIES[family][difficulty]
    task = tasks[int(rng.integers(len(tasks)))]
    target = None
    if task == "largest_color":
        answer, shapes = _largest_color_task(rng, image_size, difficulty)
    elif task == "grounding":
        answer, shapes, target = _grounding_task(rng, image_size, difficulty, cells=family == "grounding_cells")
    else:
        answer, shapes = _TASK_BUILDERS[task](rng, image_size)
    return SyntheticSample(task, difficulty, answer, tuple(shapes), image_size, target)


def check_family(family: str, difficulty_weights: Sequence[float]) -> None:
    """Checks a task family's name and its difficulty shares.

    Raises:
      ValueError: naming the family or the shares when `family` is not a `FAMILIES` or `VIDEO_FAMILIES` name, or
        the shares are not one non-negative number per level, not all 0.
    """
    families = FAMILIES | VIDEO_FAMILIES
    if family not in families:
        raise ValueError(f"task family {family!r} is unknown; expected one of {sorted(families)}")
    levels = len(families[family])
    if len(difficulty_weights) != levels or min(difficulty_weights) < 0 or sum(difficulty_weights) <= 0:
        raise ValueError(
            f"difficulty weights {tuple(difficulty_weights)} for the {family!r} family must be {levels} "
            "non-negative shares, not all 0"
        )


def difficulty_counts(num: int, weights: Sequence[float]) -> list[int]:
    """Exact per-difficulty counts for `num` samples (largest-remainder rounding of num * weights)."""
    shares = np.asarray(weights, dtype=np.float64) / np.sum(weights) * num
    counts = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - counts), kind="stable")[: num - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def generate_samples(
    num: int,
    seed: int,
    image_size: int = 56,
    difficulty_weights: Sequence[float] = DEFAULT_DIFFICULTY_WEIGHTS,
    split: int = 0,
    family: str = DEFAULT_FAMILY,
) -> list[SyntheticSample]:
    """`num` samples, deterministic in (seed, split); difficulties in exact proportion, shuffled.

    Sample i uses its own generator seeded with (seed, split, i), so it does not depend on `num`'s other
    samples' contents.

    Args:
      num: number of samples.
      seed: the dataset seed.
      image_size: image side in pixels.
      difficulty_weights: relative shares of the family's difficulties 0, 1, ... (`difficulty_counts` rounds
        them).
      split: separates the splits of one seed (0 train, 1 validation in `write_synthetic_dataset`).
      family: a `FAMILIES` name.

    Returns:
      The samples, in shuffled difficulty order.

    Raises:
      ValueError: from `check_family`.
    """
    check_family(family, difficulty_weights)
    return [
        generate_sample(rng, level, image_size, family)
        for rng, level in seeded_levels(num, seed, split, difficulty_weights)
    ]


def seeded_levels(num: int, seed: int, split: int, weights: Sequence[float]) -> list[tuple[np.random.Generator, int]]:
    """(generator, difficulty) of each of `num` samples: difficulties in exact proportion (`difficulty_counts`),
    shuffled by (seed, split); sample i's generator is seeded with (seed, split, i)."""
    difficulties = np.repeat(np.arange(len(weights)), difficulty_counts(num, weights))
    np.random.default_rng([seed, split]).shuffle(difficulties)
    return [(np.random.default_rng([seed, split, index]), int(level)) for index, level in enumerate(difficulties)]


def response_text(task: str, answer: str) -> str:
    """A well-formatted response to a `task` question that gives `answer` (right or wrong)."""
    if task in ("color", "video_color", "end_color", "start_color"):
        thought = f"the shape is {answer}"
    elif task == "color_changes":
        thought = "the color changes" if answer == "yes" else "the color stays"
    elif task == "larger":
        other = "square" if answer == "circle" else "circle"
        thought = f"the {answer} is larger than the {other}"
    elif task == "position":
        thought = f"the circle is {answer} of the square"
    elif task == "largest_color":
        thought = f"the largest shape is {answer}"
    else:
        thought = f"there are {answer} red shapes"
    return f"<think> {thought} </think> \\boxed{{{answer}}}"


def grounding_response_text(target: str, box: Sequence[int]) -> str:
    """A well-formatted response to a grounding question about `target` ("red circle") that gives `box`:
    "<think> the red circle </think> <answer>[x1, y1, x2, y2]</answer>"."""
    return f"<think> the {target} </think> <answer>{json.dumps([int(v) for v in box])}</answer>"


def grounding_target(problem: str) -> str:
    """The "<color> <kind>" a grounding problem asks for.

    Raises:
      ValueError: if `problem` does not end with a grounding question.
    """
    match = _GROUNDING_PROBLEM.search(problem)
    if match is None:
        raise ValueError(f"not a grounding problem: {problem!r}")
    return f"{match.group(1)} {match.group(2)}"


def task_of_problem(problem: str) -> str:
    """The task whose question `problem` ends with ("grounding" for `GROUNDING_QUESTION` of any target).

    Raises:
      ValueError: if `problem` ends with no task's question.
    """
    for task, question in QUESTIONS.items():
        if problem.endswith(question):
            return task
    if _GROUNDING_PROBLEM.search(problem):
        return "grounding"
    raise ValueError(f"not a synthetic-task problem: {problem!r}")


def data_source(task: str, difficulty: int) -> str:
    """The `data_source` of a task's rows: "synthetic_shapes/<task>", with "/level<d>" for a task asked at
    several levels (largest_color)."""
    return f"{DATA_SOURCE}/{task}" + (f"/level{difficulty}" if task in _MULTI_LEVEL_TASKS else "")


def scene_json(sample: SyntheticSample) -> str:
    """The sample's shapes as JSON: {"image_size": s, "shapes": [{"kind", "color", "box"}, ...]}, plus "target"
    (an index into "shapes") for a grounding sample."""
    scene = {"image_size": sample.image_size, "shapes": [dataclasses.asdict(shape) for shape in sample.shapes]}
    if sample.target is not None:
        scene["target"] = sample.target
    return json.dumps(scene, separators=(",", ":"))


def shapes_from_scene(scene: str) -> tuple[int, list[Shape]]:
    """Inverse of `scene_json`: (image_size, shapes)."""
    data = json.loads(scene)
    return data["image_size"], [Shape(s["kind"], s["color"], tuple(s["box"])) for s in data["shapes"]]


def to_record(sample: SyntheticSample) -> dict:
    """One parquet row in the EasyR1 layout (see module docstring)."""
    return {
        "problem": sample.problem,
        "answer": sample.answer,
        "images": [{"bytes": png_bytes(render(sample.shapes, sample.image_size)), "path": None}],
        "difficulty": sample.difficulty,
        "task": sample.task,
        "data_source": data_source(sample.task, sample.difficulty),
        "scene": scene_json(sample),
    }


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_train: int,
    num_val: int,
    seed: int,
    image_size: int = 56,
    difficulty_weights: Sequence[float] = DEFAULT_DIFFICULTY_WEIGHTS,
    family: str = DEFAULT_FAMILY,
) -> dict[str, Path]:
    """Writes the synthetic dataset: train.parquet (split 0) and val.parquet (split 1) in the EasyR1 layout.

    Args:
      out_dir: the output directory (created if missing).
      num_train: training samples.
      num_val: validation samples.
      seed: the dataset seed (`generate_samples`).
      image_size: image side in pixels.
      difficulty_weights: relative shares of the family's difficulties.
      family: a `FAMILIES` name.

    Returns:
      {"train": path, "val": path} of the written parquet files.

    Raises:
      ValueError: from `check_family`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, (name, num) in enumerate((("train", num_train), ("val", num_val))):
        samples = generate_samples(num, seed, image_size, difficulty_weights, split=split, family=family)
        table = pa.Table.from_pylist([to_record(s) for s in samples], schema=SCHEMA)
        paths[name] = out / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths
