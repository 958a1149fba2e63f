"""The prompt batch pipeline: bad-record counting, resumable state, per-process sharding, determinism."""

import collections
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shuffle_r1_jax.data.pipeline import (
    BadRecordError,
    PipelineConfig,
    UnusableDataError,
    prompt_batches,
    steps_per_epoch,
)
from shuffle_r1_jax.models.qwen2_5_vl import load_config
from shuffle_r1_jax.processing.batch import BucketConfig
from shuffle_r1_jax.processing.prompts import PromptEncoder
from tests.tiny_assets import IMAGE_CONFIG

BUCKETS = BucketConfig(prompt_lengths=(64, 128, 256), vision_rows=(4, 8), windows=(1, 4))
NUM_TRAIN = 30


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    return PromptEncoder.from_checkpoint(tiny_checkpoint, image_config=IMAGE_CONFIG, max_prompt_length=256)


@pytest.fixture(scope="module")
def model_config(tiny_checkpoint):
    return load_config(tiny_checkpoint)


@pytest.fixture(scope="module")
def corrupted(synthetic_data, tmp_path_factory):
    """train.parquet with row 1: undecodable image, row 2: null answer, row 3: empty answer, row 4: too long."""
    rows = pq.read_table(synthetic_data / "train.parquet").to_pylist()
    rows[1]["images"] = [{"bytes": b"\x89PNG but not really", "path": None}]
    rows[2]["answer"] = None
    rows[3]["answer"] = "  "
    rows[4]["problem"] = rows[4]["problem"] + " and then" * 200
    path = tmp_path_factory.mktemp("corrupted") / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(synthetic_data / "train.parquet")), path)
    return path


def _pipeline(data, encoder, model_config, **kwargs):
    return prompt_batches(str(data), encoder, model_config, PipelineConfig(**kwargs), buckets=BUCKETS)


def _record_ids(iterator, num_batches=None):
    ids = []
    for i, batch in enumerate(iterator):
        ids.extend(batch.record_ids)
        if num_batches is not None and i + 1 == num_batches:
            break
    return ids


def test_bad_records_are_counted_and_skipped(corrupted, encoder, model_config):
    iterator = _pipeline(corrupted, encoder, model_config, batch_size=4, num_epochs=1, drop_remainder=False, seed=3)
    ids = _record_ids(iterator)
    rows = sorted(int(i.rsplit(" ", 1)[1]) for i in ids)
    assert rows == [0] + list(range(5, NUM_TRAIN))
    counts = iterator.counts()
    assert counts["bad_records/bad_image"] == 1
    assert counts["bad_records/missing_column"] == 1
    assert counts["bad_records/empty_answer"] == 1
    assert counts["bad_records/prompt_too_long"] == 1
    assert counts["bad_records/total"] == 4
    assert (counts["records_read"], counts["records_used"], counts["batches"]) == (NUM_TRAIN, NUM_TRAIN - 4, 7)


def test_bad_record_stops_the_run_when_configured(corrupted, encoder, model_config):
    iterator = _pipeline(corrupted, encoder, model_config, batch_size=4, shuffle=False, on_bad_record="error")
    with pytest.raises(BadRecordError, match=rf"bad record {corrupted} row 1: bad_image: image 0: cannot decode image"):
        next(iterator)
    assert iterator.counts()["bad_records/bad_image"] == 1


def test_a_stream_without_a_usable_record_stops_after_one_pass(synthetic_data, tiny_checkpoint, model_config):
    """Every prompt is over a 10-token limit: after one pass (30 records, not the 3 epochs asked for) the stream
    stops with the counts by reason instead of reading on."""
    short = PromptEncoder.from_checkpoint(tiny_checkpoint, image_config=IMAGE_CONFIG, max_prompt_length=10)
    iterator = _pipeline(synthetic_data / "train.parquet", short, model_config, batch_size=4, num_epochs=3)
    with pytest.raises(UnusableDataError, match=rf"no usable record in the last {NUM_TRAIN} records of .*"
                       rf"prompt_too_long {NUM_TRAIN} of {NUM_TRAIN} read; the last: .* prompt_too_long"):  # fmt: skip
        next(iterator)
    assert iterator.counts()["records_read"] == NUM_TRAIN


def test_the_limit_of_bad_records_in_a_row_is_configurable(corrupted, encoder, model_config):
    """Rows 1-4 are bad: a limit of 2 stops at row 2 (two in a row); a limit of 5 reads past them."""
    strict = _pipeline(corrupted, encoder, model_config, batch_size=8, shuffle=False, max_consecutive_bad=2)
    with pytest.raises(UnusableDataError, match=rf"last 2 records .* the last: {corrupted} row 2: missing_column"):
        next(strict)
    lenient = _pipeline(corrupted, encoder, model_config, batch_size=8, shuffle=False, max_consecutive_bad=5)
    assert len(next(lenient).record_ids) == 8
    with pytest.raises(ValueError, match="data.max_consecutive_bad_records = -1 must be >= 0"):
        PipelineConfig(batch_size=4, max_consecutive_bad=-1)


def test_state_round_trip_resumes_exactly(corrupted, encoder, model_config):
    config = dict(batch_size=4, seed=1)
    original = _pipeline(corrupted, encoder, model_config, **config)
    _record_ids(original, num_batches=5)
    state = json.loads(json.dumps(original.get_state()))
    counts_at_state = original.counts()
    assert 0 < counts_at_state["bad_records/total"] < 4  # bad records before and after the saved position
    expected = [next(original) for _ in range(4)]  # crosses the epoch boundary (30 records)
    resumed = _pipeline(corrupted, encoder, model_config, **config)
    resumed.set_state(state)
    assert resumed.counts() == counts_at_state
    for want in expected:
        got = next(resumed)
        assert got.record_ids == want.record_ids
        np.testing.assert_array_equal(got.inputs.input_ids, want.inputs.input_ids)
        np.testing.assert_array_equal(got.inputs.vision.patches, want.inputs.vision.patches)
    assert resumed.counts() == original.counts()
    assert original.counts()["records_read"] > NUM_TRAIN
    with pytest.raises(ValueError, match=rf"differ in \{{'seed': \({config['seed']}, 12\)\}}"):
        _pipeline(corrupted, encoder, model_config, batch_size=4, seed=12).set_state(state)


def test_processes_share_the_stream_exactly_once(synthetic_data, encoder, model_config):
    spec = f"{synthetic_data}@train"
    per_process = [
        _record_ids(
            _pipeline(
                spec,
                encoder,
                model_config,
                batch_size=4,
                num_epochs=2,
                drop_remainder=False,
                seed=5,
                process_index=p,
                process_count=2,
            )
        )
        for p in range(2)
    ]
    assert len(per_process[0]) == len(per_process[1]) == NUM_TRAIN
    first_epoch = per_process[0][: NUM_TRAIN // 2] + per_process[1][: NUM_TRAIN // 2]
    assert len(set(first_epoch)) == NUM_TRAIN
    assert collections.Counter(per_process[0] + per_process[1]) == {i: 2 for i in first_epoch}
    assert steps_per_epoch(NUM_TRAIN, PipelineConfig(batch_size=4, process_count=2)) == 3


def test_deterministic_for_a_seed(synthetic_data, encoder, model_config):
    spec = f"{synthetic_data}@train"

    def order(seed):
        return _record_ids(_pipeline(spec, encoder, model_config, batch_size=5, num_epochs=2, seed=seed))

    first = order(1)
    assert first == order(1) and first != order(2)
    epoch0, epoch1 = first[:NUM_TRAIN], first[NUM_TRAIN:]
    assert sorted(epoch0) == sorted(epoch1) and len(set(epoch0)) == NUM_TRAIN and epoch0 != epoch1
    unshuffled = _record_ids(_pipeline(spec, encoder, model_config, batch_size=5, num_epochs=1, shuffle=False))
    assert [int(i.rsplit(" ", 1)[1]) for i in unshuffled] == list(range(NUM_TRAIN))


def test_config_errors(synthetic_data, encoder, model_config):
    with pytest.raises(ValueError, match="data.on_bad_record = 'ignore'"):
        PipelineConfig(batch_size=2, on_bad_record="ignore")
    with pytest.raises(ValueError, match=r"data.process_index = 2 must be in \[0, process_count = 2\)"):
        PipelineConfig(batch_size=2, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="exceeds the largest prompt length bucket 128"):
        prompt_batches(
            f"{synthetic_data}@train",
            encoder,
            model_config,
            PipelineConfig(batch_size=2),
            buckets=BucketConfig(prompt_lengths=(64, 128)),
        )


def test_reward_columns_and_image_sizes_reach_the_batch(tmp_path, encoder, model_config):
    import io

    from PIL import Image

    from shuffle_r1_jax.data.sources import Columns, DataSpecError

    png = io.BytesIO()
    Image.new("RGB", (100, 50), "red").save(png, format="PNG")
    rows = [
        {
            "problem": "<image>Where?",
            "answer": "[1, 2, 3, 4]",
            "images": [{"bytes": png.getvalue(), "path": None}],
            "key_steps": ["x = 1", "y = 2"],
        }
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    columns = Columns(reward=("key_steps",))
    config = PipelineConfig(batch_size=1, num_epochs=1)
    batch = next(prompt_batches(str(path), encoder, model_config, config, buckets=BUCKETS, columns=columns))
    # the tiny encoder resizes to multiples of 28 within 56 x 56 to 112 x 112 pixels: 100 x 50 -> 112 x 56
    assert batch.reward_contexts == (
        {"key_steps": ["x = 1", "y = 2"], "image_sizes": [(100, 50, 112, 56)], "problem": "<image>Where?"},
    )
    with pytest.raises(DataSpecError, match=r"column\(s\) \['steps'\] not found"):
        prompt_batches(str(path), encoder, model_config, config, buckets=BUCKETS, columns=Columns(reward=("steps",)))


def test_videos_flow_into_batches_and_bad_videos_are_counted(tmp_path, tiny_checkpoint, model_config):
    from shuffle_r1_jax.data.sources import Columns
    from shuffle_r1_jax.processing.video import VideoPreprocessConfig
    from shuffle_r1_jax.processing.video_io import write_video

    rng = np.random.default_rng(0)
    write_video(tmp_path / "clip.mkv", rng.integers(0, 256, (8, 56, 56, 3), dtype=np.uint8), 4.0, codec="ffv1")
    clip = (tmp_path / "clip.mkv").read_bytes()
    (tmp_path / "broken.mp4").write_text("not a video")
    rows = [
        ("<video> What changes?", [{"bytes": clip, "path": None}]),  # 8 frames at 4 fps: 4 sampled, 2 patches
        ("<video> Relative path?", [{"bytes": None, "path": "clip.mkv"}]),
        ("<video> Broken?", [{"bytes": None, "path": "broken.mp4"}]),
        ("<video> Missing?", [{"bytes": None, "path": "nowhere.mp4"}]),
        ("<video><video> Two?", [{"bytes": clip, "path": None}]),
        ("No video at all.", []),
        ("<video> Null?", None),
    ]
    table = [{"problem": p, "answer": "a", "images": [], "videos": v} for p, v in rows]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(table), path)
    encoder = PromptEncoder.from_checkpoint(
        tiny_checkpoint,
        image_config=IMAGE_CONFIG,
        max_prompt_length=256,
        video_config=VideoPreprocessConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 4),
    )
    config = PipelineConfig(batch_size=3, num_epochs=1, shuffle=False, drop_remainder=False)
    iterator = prompt_batches(
        str(path), encoder, model_config, config, buckets=BUCKETS, columns=Columns(videos="videos")
    )
    (batch,) = list(iterator)
    assert [r.rsplit(" ", 1)[1] for r in batch.record_ids] == ["0", "1", "5"]
    video_tokens = (batch.inputs.input_ids == model_config.video_token_id).sum(axis=1)
    np.testing.assert_array_equal(video_tokens, [8, 8, 0])  # 2 temporal patches of a 2 x 2 merged grid
    assert batch.inputs.vision.patches.shape[0] == 4  # 4 temporal patches -> row bucket 4
    counts = iterator.counts()
    # a null videos value is no videos (mixed datasets hold null for the kind a row lacks): "<video> Null?" then
    # has a placeholder and no video
    assert (counts["bad_records/bad_video"], counts["bad_records/video_count_mismatch"]) == (2, 2)
    assert counts["bad_records/missing_column"] == 0 and counts["bad_records/total"] == 4
