"""The synthetic shapes tasks: determinism, parquet layout, answers re-derived from the pixels."""

import collections
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import ndimage

from shuffle_r1_jax.demo import synthetic
from shuffle_r1_jax.processing.image_io import decode_image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    paths = synthetic.write_synthetic_dataset(out, num_train=120, num_val=30, seed=7, image_size=56)
    return paths, pq.read_table(paths["train"]).to_pylist(), pq.read_table(paths["val"]).to_pylist()


def _color_mask(pixels, name):
    return np.all(pixels == np.asarray(synthetic.COLORS[name], np.uint8), axis=-1)


def test_deterministic_for_a_seed():
    first = synthetic.generate_samples(40, seed=3, image_size=84)
    again = synthetic.generate_samples(40, seed=3, image_size=84)
    assert first == again
    assert [synthetic.to_record(s) for s in first[:5]] == [synthetic.to_record(s) for s in again[:5]]
    assert synthetic.generate_samples(40, seed=4, image_size=84) != first
    assert synthetic.generate_samples(40, seed=3, split=1, image_size=84) != first


def test_parquet_layout(dataset):
    paths, train, val = dataset
    assert len(train) == 120 and len(val) == 30
    schema = pq.read_schema(paths["train"])
    assert schema.names == ["problem", "answer", "images", "difficulty", "task", "data_source", "scene"]
    for row in train[:10]:
        assert row["problem"].startswith("<image>") and row["problem"].count("<image>") == 1
        assert row["data_source"] == f"synthetic_shapes/{row['task']}"
        (image,) = row["images"]
        assert image["path"] is None and image["bytes"].startswith(b"\x89PNG")
        assert decode_image(image).size == (56, 56)
    assert {row["problem"] for row in train} <= {"<image>" + q for q in synthetic.QUESTIONS.values()}
    assert [r["answer"] for r in train] != [r["answer"] for r in val]


def test_answers_are_correct_by_construction(dataset):
    _, train, _ = dataset
    for row in train:
        pixels = np.asarray(decode_image(row["images"][0]))
        size, shapes = synthetic.shapes_from_scene(row["scene"])
        np.testing.assert_array_equal(np.asarray(synthetic.render(shapes, size)), pixels)
        answer = row["answer"]
        if row["task"] == "color":
            counts = {name: _color_mask(pixels, name).sum() for name in synthetic.COLORS}
            assert max(counts, key=counts.get) == answer
        elif row["task"] == "count":
            _, num_red_blobs = ndimage.label(_color_mask(pixels, "red"))
            assert str(num_red_blobs) == answer
        elif row["task"] == "larger":
            by_kind = {shape.kind: shape for shape in shapes}
            areas = {kind: by_kind[kind].area for kind in ("circle", "square")}
            assert max(areas, key=areas.get) == answer
            assert max(areas.values()) / min(areas.values()) > 1.5  # clearly different
        else:
            by_kind = {shape.kind: shape for shape in shapes}
            circle, square = by_kind["circle"].box, by_kind["square"].box
            assert (circle[2] < square[0]) == (answer == "left")
            assert circle[2] < square[0] or square[2] < circle[0]  # side by side, no overlap in x


def test_difficulty_distribution(dataset):
    _, train, val = dataset
    assert collections.Counter(r["difficulty"] for r in train) == {0: 48, 1: 36, 2: 36}
    assert collections.Counter(r["difficulty"] for r in val) == {0: 12, 1: 9, 2: 9}
    tasks = {(r["difficulty"], r["task"]) for r in train}
    assert tasks == {(0, "color"), (1, "larger"), (1, "position"), (2, "count")}
    assert synthetic.difficulty_counts(10, (1, 1, 1)) == [4, 3, 3]
    assert synthetic.difficulty_counts(7, (0.0, 1.0, 0.0)) == [0, 7, 0]


def test_answers_are_short_and_from_a_small_set():
    samples = synthetic.generate_samples(200, seed=0, image_size=112)
    answers = {s.answer for s in samples}
    assert answers <= {"red", "green", "blue", "circle", "square", "left", "right", "1", "2", "3", "4"}
    assert len({s.answer for s in samples if s.task == "count"}) == 4


def test_shapes_do_not_overlap_or_leave_the_canvas():
    for sample in synthetic.generate_samples(100, seed=1, image_size=56):
        boxes = [shape.box for shape in sample.shapes]
        assert all(0 < b[0] and b[2] < 55 and 0 < b[1] and b[3] < 55 for b in boxes)
        for i, a in enumerate(boxes):
            assert all(synthetic._boxes_apart(a, b) for b in boxes[i + 1 :])


# ---------------------------------------------------------------- the largest_color family
@pytest.fixture(scope="module")
def largest_color_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("largest_color")
    paths = synthetic.write_synthetic_dataset(
        out, num_train=200, num_val=20, seed=5, image_size=56, difficulty_weights=(1, 1, 1, 1), family="largest_color"
    )
    return pq.read_table(paths["train"]).to_pylist()


def test_largest_color_answers_re_derived_from_the_pixels(largest_color_rows):
    """The answer is the color with the most pixels; the pixel-area ratio of the two largest shapes falls in the
    level's range (give or take rounding the sides to whole pixels)."""
    ratios = collections.defaultdict(list)
    for row in largest_color_rows:
        pixels = np.asarray(decode_image(row["images"][0]))
        areas = {name: int(_color_mask(pixels, name).sum()) for name in synthetic.COLORS}
        present = sorted((a for a in areas.values() if a > 0), reverse=True)
        assert max(areas, key=areas.get) == row["answer"]
        assert row["problem"] == "<image>What color is the largest shape?"
        assert row["data_source"] == f"synthetic_shapes/largest_color/level{row['difficulty']}"
        assert len(present) == {0: 1, 1: 2, 2: 2, 3: 3}[row["difficulty"]]
        if row["difficulty"]:
            ratios[row["difficulty"]].append(present[0] / present[1])
    for level, (_, low, high) in synthetic.LARGEST_COLOR_LEVELS.items():
        assert low * 0.85 <= min(ratios[level]) and max(ratios[level]) <= high * 1.2, (level, ratios[level])
    assert max(ratios[3]) < min(ratios[1])  # the levels are graded
    assert collections.Counter(r["difficulty"] for r in largest_color_rows) == {0: 50, 1: 50, 2: 50, 3: 50}
    assert set(r["answer"] for r in largest_color_rows) == set(synthetic.COLORS)


def test_family_and_weights_are_checked():
    with pytest.raises(ValueError, match="task family 'dots' is unknown"):
        synthetic.generate_samples(4, seed=0, family="dots")
    with pytest.raises(ValueError, match="for the 'largest_color' family must be 4 non-negative shares"):
        synthetic.generate_samples(4, seed=0, difficulty_weights=(1, 1, 1), family="largest_color")
    assert (
        synthetic.response_text("largest_color", "blue") == "<think> the largest shape is blue </think> \\boxed{blue}"
    )


# ---------------------------------------------------------------- the grounding family
@pytest.mark.parametrize("family", ["grounding", "grounding_cells"])
def test_grounding_rows_boxes_re_derived_from_the_pixels(tmp_path, family):
    """The answer is the target's pixel box as corners in the original (70 px) image; the question names the
    target by a color and a kind that no other shape of the image has; the level sets how many shapes; in
    "grounding_cells" every shape lies inside its own cell of the 2 x 2 grid (35 px cells)."""
    paths = synthetic.write_synthetic_dataset(
        tmp_path, num_train=60, num_val=6, seed=2, image_size=70, difficulty_weights=(1, 1, 1), family=family
    )
    rows = pq.read_table(paths["train"]).to_pylist()
    assert pq.read_schema(paths["train"]).names == synthetic.SCHEMA.names
    for row in rows:
        pixels = np.asarray(decode_image(row["images"][0]))
        assert pixels.shape == (70, 70, 3)
        size, shapes = synthetic.shapes_from_scene(row["scene"])
        target = shapes[json.loads(row["scene"])["target"]]
        assert len(shapes) == row["difficulty"] + 1
        assert len({s.color for s in shapes}) == len({s.kind for s in shapes}) == len(shapes)
        assert row["problem"] == f"<image>Where is the {target.color} {target.kind}? Answer with its box."
        assert synthetic.task_of_problem(row["problem"]) == row["task"] == "grounding"
        assert synthetic.grounding_target(row["problem"]) == f"{target.color} {target.kind}"
        assert row["data_source"] == f"synthetic_shapes/grounding/level{row['difficulty']}"
        ys, xs = np.nonzero(_color_mask(pixels, target.color))
        assert json.loads(row["answer"]) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        if family == "grounding_cells":
            cells = set()
            for shape in shapes:
                ys, xs = np.nonzero(_color_mask(pixels, shape.color))
                assert xs.min() // 35 == xs.max() // 35 and ys.min() // 35 == ys.max() // 35
                cells.add((xs.min() // 35, ys.min() // 35))
            assert len(cells) == len(shapes)
    assert collections.Counter(r["difficulty"] for r in rows) == {0: 20, 1: 20, 2: 20}
    sample = synthetic.generate_samples(1, seed=2, image_size=70, family="grounding", difficulty_weights=(1, 0, 0))[0]
    assert sample.reference_response == f"<think> the {synthetic.grounding_target(sample.problem)} </think> " + (
        f"<answer>{sample.answer}</answer>"
    )
