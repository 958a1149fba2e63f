"""The synthetic video family: answers re-derived from the decoded videos' pixels, the layout the data pipeline
reads (relative video paths), levels in proportion, and the video recipe config."""

import collections
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from shuffle_r1_jax.data.examples import make_example
from shuffle_r1_jax.data.sources import Columns, RecordSource
from shuffle_r1_jax.demo.synthetic import COLORS, EASY_COLORS, task_of_problem
from shuffle_r1_jax.demo.synthetic_video import FRAMES, generate_video_samples, write_video_dataset
from shuffle_r1_jax.processing.batch import PromptExample
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.processing.video import VideoPreprocessConfig
from shuffle_r1_jax.processing.video_io import read_video
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.defaults import load_config_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("video_data")
    return write_video_dataset(out, 40, 8, seed=3)


def _nearest_color(pixel: np.ndarray) -> str:
    return min(COLORS, key=lambda name: np.abs(np.asarray(COLORS[name]) - pixel.astype(int)).sum())


def test_answers_re_derived_from_the_decoded_videos(dataset):
    rows = pq.read_table(dataset["train"]).to_pylist()
    assert {r["task"] for r in rows} == {"video_color", "color_changes", "end_color", "start_color"}
    for row in rows:
        scene = json.loads(row["scene"])
        video = read_video(dataset["train"].parent / row["videos"][0], VideoPreprocessConfig(min_frames=4))
        assert video.total_frames == FRAMES and video.frames.shape == (FRAMES, 56, 56, 3)
        x0, y0, x1, y1 = scene["box"]
        colors = [_nearest_color(frame[(y0 + y1) // 2, (x0 + x1) // 2]) for frame in video.frames]
        assert colors == scene["colors"]
        corner = video.frames[:, 0, 0] if x0 > 0 or y0 > 0 else video.frames[:, -1, -1]
        assert (corner > 200).all()  # white background outside the box
        expected = {
            "video_color": colors[0],
            "color_changes": "yes" if colors[0] != colors[-1] else "no",
            "end_color": colors[-1],
            "start_color": colors[0],
        }[row["task"]]
        assert row["answer"] == expected and set(colors) <= set(EASY_COLORS)
        if row["task"] in ("end_color", "start_color"):
            assert colors[0] != colors[-1] and colors[:2] == colors[:1] * 2 and colors[2:] == colors[-1:] * 2
        assert task_of_problem(row["problem"]) == row["task"] and row["problem"].startswith("<video>")
        assert row["data_source"] == f"synthetic_video/{row['task']}" and row["images"] == []


def test_levels_in_proportion_and_deterministic():
    samples = generate_video_samples(200, seed=1, frame_size=56, difficulty_weights=(0.25, 0.25, 0.25, 0.25))
    assert collections.Counter(s.difficulty for s in samples) == {0: 50, 1: 50, 2: 50, 3: 50}
    changes = [s.answer == "yes" for s in samples if s.task == "color_changes"]
    assert 15 < sum(changes) < 35  # about half the level-1 clips change color
    again = generate_video_samples(200, seed=1, frame_size=56, difficulty_weights=(0.25, 0.25, 0.25, 0.25))
    assert samples == again
    with pytest.raises(ValueError, match="must be even"):
        write_video_dataset("/nonexistent", 1, 1, 0, frame_size=55)


def test_records_become_prompts_with_their_videos(dataset, tiny_checkpoint):
    encoder = PromptEncoder.from_checkpoint(
        tiny_checkpoint,
        prompt_format="none",
        max_prompt_length=80,
        video_config=VideoPreprocessConfig(min_pixels=3136, max_pixels=3136),
    )
    source = RecordSource(str(dataset["val"]), Columns(videos="videos"))
    for i in range(len(source)):
        example = make_example(source[i], encoder, source.columns)
        assert isinstance(example, PromptExample), example
        assert example.prompt.video_grid_thw.tolist() == [[2, 4, 4]]  # 4 frames of 56 px: 2 temporal patches
        assert int((example.prompt.input_ids == encoder.video_token_id).sum()) == 8


def test_the_video_recipe_resolves(tmp_path):
    demo = load_config_file(CONFIGS / "video.py")
    demo.demo.cache_dir = str(tmp_path)
    run = settings.resolve(demo, check_inputs=False)
    assert demo.demo.task_family == "color_over_time" and run.data.columns.videos == "videos"
    assert (run.data.video.min_pixels, run.data.video.max_pixels, run.data.max_prompt_length) == (3136, 3136, 80)
    paper = settings.resolve(load_config_file(CONFIGS / "video.py", "base=paper,model=7b"), check_inputs=False)
    assert (paper.data.train, paper.data.video.max_frames, paper.data.video.max_pixels) == (
        "data/video_r1@train",
        16,
        128 * 28 * 28,
    )
    assert (paper.reward.name, paper.data.prompt_format, paper.data.max_prompt_length) == ("r1v", "r1v", 4096)
