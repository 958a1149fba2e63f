"""Metric writers: JSONL lines and the resume rule, TensorBoard scalars read back from the event file, the console
line and progress bar, and silence on processes other than 0."""

from __future__ import annotations

import io
import json
import struct
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.train.metric_writers import (
    JSONL_NAME,
    TENSORBOARD_DIR,
    ConsoleWriter,
    MetricWriter,
    format_console_line,
    scalar_metrics,
)


def _metrics(step: int) -> dict:
    return {
        "reward/overall": jnp.float32(0.5 + step / 100),
        "pg_loss": np.float64(-0.25 * step),
        "abs/unique_pairs": jnp.asarray(step + 10, jnp.int32),
        "advantages": np.ones(4),  # not a scalar: skipped
        "note": "text",  # skipped
    }


def _jsonl(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / JSONL_NAME).read_text().splitlines()]


def _events(path: Path):
    """The events of one event file, parsed from TFRecord framing (u64 length, u32 crc, data, u32 crc)."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    data, offset = path.read_bytes(), 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        yield event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
        offset += 12 + length + 4


def _read_tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in _events(path):
            for value in event.summary.value:
                scalars[value.tag].append((event.step, value.simple_value))
    return scalars


def test_scalar_metrics_converts_scalars_and_skips_the_rest():
    metrics = {
        "a": jnp.bfloat16(1.5),
        "b": np.float32(2.0),
        "c": jnp.asarray(3, jnp.int32),
        "d": True,
        "e": 7,
        "nan": float("nan"),
        "vector": np.ones(3),
        "one_element_vector": jnp.ones((1,)),
        "text": "x",
        "none": None,
        "complex": 1 + 2j,
    }
    out = scalar_metrics(metrics)
    assert set(out) == {"a", "b", "c", "d", "e", "nan"}
    assert out["a"] == 1.5 and out["b"] == 2.0 and out["c"] == 3.0 and out["d"] == 1.0 and out["e"] == 7.0
    assert np.isnan(out["nan"])
    assert all(type(v) is float for v in out.values())


def test_jsonl_has_one_line_per_step_with_the_scalar_values(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False, console=False) as writer:
        for step in (1, 2, 3):
            written = writer.write(step, _metrics(step))
            assert set(written) == {"reward/overall", "pg_loss", "abs/unique_pairs"}
    lines = _jsonl(tmp_path)
    assert [line["step"] for line in lines] == [1, 2, 3]
    for step, line in zip((1, 2, 3), lines):
        assert set(line) == {"step", "time", "reward/overall", "pg_loss", "abs/unique_pairs"}
        assert line["reward/overall"] == pytest.approx(0.5 + step / 100, rel=1e-6)
        assert line["pg_loss"] == -0.25 * step
        assert line["abs/unique_pairs"] == step + 10
    assert lines[0]["time"] <= lines[1]["time"] <= lines[2]["time"]


def test_jsonl_resume_drops_steps_from_the_start_step_on_and_torn_lines(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False, console=False) as writer:
        for step in range(1, 6):
            writer.write(step, {"x": step})
    with (tmp_path / JSONL_NAME).open("a") as log:
        log.write('{"step": 6, "x"')  # a line cut short by a kill

    # The run resumes from a checkpoint at step 3: it writes steps 4, 5, ... again.
    with MetricWriter(tmp_path, start_step=4, tensorboard=False, console=False) as writer:
        for step in (4, 5):
            writer.write(step, {"x": 100 + step})
    lines = _jsonl(tmp_path)
    assert [(line["step"], line["x"]) for line in lines] == [(1, 1), (2, 2), (3, 3), (4, 104), (5, 105)]

    with MetricWriter(tmp_path, start_step=0, tensorboard=False, console=False) as writer:
        writer.write(0, {"x": 0.5})
    assert [(line["step"], line["x"]) for line in _jsonl(tmp_path)] == [(0, 0.5)]


def test_jsonl_rejects_reserved_metric_names(tmp_path):
    with MetricWriter(tmp_path, tensorboard=False, console=False) as writer:
        with pytest.raises(ValueError, match="metric name 'time' is reserved"):
            writer.write(1, {"time": 3.0})


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    with MetricWriter(tmp_path, jsonl=False, console=False) as writer:
        for step in (1, 2, 3):
            writer.write(step, _metrics(step))
    logdir = tmp_path / TENSORBOARD_DIR
    assert list(logdir.glob("events.out.tfevents.*"))
    scalars = _read_tensorboard_scalars(logdir)
    assert set(scalars) == {"reward/overall", "pg_loss", "abs/unique_pairs"}
    assert scalars["pg_loss"] == [(1, -0.25), (2, -0.5), (3, -0.75)]
    assert [s for s, _ in scalars["reward/overall"]] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in scalars["reward/overall"]], [0.51, 0.52, 0.53], rtol=1e-6)


def test_tensorboard_resume_marks_the_purge_step(tmp_path):
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    with MetricWriter(tmp_path, start_step=3, jsonl=False, console=False) as writer:
        writer.write(3, {"x": 1.0})
    (event_file,) = (tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*")
    starts = [event.step for event in _events(event_file) if event.session_log.status == event_pb2.SessionLog.START]
    assert starts == [3]  # TensorBoard hides earlier events at steps >= 3


def test_console_line_format():
    metrics = {
        "reward/overall": 0.73412,
        "reward/accuracy": 0.65,
        "response_length/mean": 411.6,
        "advantage/collapse": 0.375,
        "pg_loss": -0.012341,
        "grad_norm": 0.8412,
        "timing/step": 12.34,
        "throughput/tokens_per_s": 2134.0,
        "entropy": 1.0,  # not on the console line
    }
    assert format_console_line(12, metrics, total_steps=500) == (
        "step 12/500 | reward 0.734 | acc 0.650 | len 412 | collapse 0.38 | pg_loss -0.01234 | grad_norm 0.841"
        " | s/step 12.3 | tok/s 2.13k"
    )
    assert format_console_line(3, {"pg_loss": float("nan")}) == "step 3 | pg_loss nan"


def test_console_prints_every_nth_step_without_a_terminal():
    stream = io.StringIO()
    console = ConsoleWriter(total_steps=10, every=2, stream=stream)
    for step in range(1, 5):
        console.write(step, {"reward/overall": step / 10})
    console.close()
    assert stream.getvalue().splitlines() == ["step 2/10 | reward 0.200", "step 4/10 | reward 0.400"]


def test_progress_bar_shows_position_and_eta():
    stream = io.StringIO()
    console = ConsoleWriter(total_steps=20, start_step=5, progress=True, stream=stream)
    for step in (6, 7):
        console.write(step, {"reward/overall": 0.5})
    console.close()
    output = stream.getvalue()
    assert "step 7/20 | reward 0.500" in output
    assert "7/20" in output.replace("step 7/20", "") and "<" in output  # tqdm's "elapsed<remaining"


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    stream = io.StringIO()
    with MetricWriter(tmp_path / "out", total_steps=5, progress=True, stream=stream) as writer:
        assert not writer.active
        assert writer.write(1, _metrics(1)) == {}
    assert not (tmp_path / "out").exists()
    assert stream.getvalue() == ""
