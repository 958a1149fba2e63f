"""Dataset specs (`path[@split]`), parquet and jsonl readers, image paths, column errors."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from shuffle_r1_jax.data.sources import Columns, DataSpecError, RecordSource, resolve_data_files


def _table(n):
    return pa.table(
        {"problem": [f"q{i}" for i in range(n)], "answer": [str(i) for i in range(n)], "images": [[] for _ in range(n)]}
    )


def test_spec_resolution(tmp_path):
    pq.write_table(_table(2), tmp_path / "train.parquet")
    (tmp_path / "test.jsonl").write_text('{"problem": "a", "answer": "b", "images": []}\n')
    shards = tmp_path / "shards"
    (shards / "validation").mkdir(parents=True)
    for i in range(2):
        pq.write_table(_table(1), shards / f"train-0000{i}-of-00002.parquet")
        pq.write_table(_table(1), shards / "validation" / f"part{i}.parquet")
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    pq.write_table(_table(1), hub / "test-00000-of-00001.parquet")

    assert resolve_data_files(str(tmp_path / "train.parquet")) == [tmp_path / "train.parquet"]
    assert resolve_data_files(f"{tmp_path / 'train.parquet'}@train") == [tmp_path / "train.parquet"]
    assert resolve_data_files(str(tmp_path)) == [tmp_path / "test.jsonl", tmp_path / "train.parquet"]
    assert resolve_data_files(f"{tmp_path}@test") == [tmp_path / "test.jsonl"]
    assert [p.name for p in resolve_data_files(f"{shards}@train")] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert [p.name for p in resolve_data_files(f"{shards}@validation")] == ["part0.parquet", "part1.parquet"]
    assert resolve_data_files(f"{tmp_path / 'hub'}@test") == [hub / "test-00000-of-00001.parquet"]

    with pytest.raises(DataSpecError, match="a single file has only the split 'train'"):
        resolve_data_files(f"{tmp_path / 'train.parquet'}@test")
    with pytest.raises(DataSpecError, match="no files for split 'dev'"):
        resolve_data_files(f"{tmp_path}@dev")
    with pytest.raises(DataSpecError, match="neither a file nor a directory"):
        resolve_data_files(str(tmp_path / "nope"))
    with pytest.raises(DataSpecError, match="empty split"):
        resolve_data_files(f"{tmp_path}@")

    source = RecordSource(f"{tmp_path}@train, {shards}@validation")
    assert len(source) == 4
    assert [source[i].problem for i in range(4)] == ["q0", "q1", "q0", "q0"]
    assert source[3].record_id == f"{shards / 'validation' / 'part1.parquet'} row 0"
    assert [source[i].record_index for i in range(4)] == [0, 1, 2, 3]
    assert source[0].data_source == "train"  # no data_source column: the file's stem
    with pytest.raises(IndexError):
        source[4]


def test_jsonl_records_and_image_paths(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (30, 30), "red").save(images / "a.png")
    lines = [
        {"question": "<image>red?", "solution": 3, "pics": ["a.png"], "data_source": "toy"},
        "not json",
        {"question": "no answer", "pics": []},
    ]
    file = tmp_path / "data.jsonl"
    text = "\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines[:2])
    file.write_text(text + "\n\n" + json.dumps(lines[2]) + "\n")  # a blank line 3
    columns = Columns(prompt="question", answer="solution", images="pics", image_dir=str(images))
    source = RecordSource(f"{file}@train", columns)
    assert len(source) == 3
    first = source[0]
    assert (first.problem, first.answer, first.images, first.data_source) == ("<image>red?", 3, ["a.png"], "toy")
    assert first.record_id == f"{file} line 1"
    assert source[1].error.startswith("invalid JSON") and source[1].record_id == f"{file} line 2"
    assert source[2].answer is None and source[2].record_id == f"{file} line 4" and source[2].data_source == "data"


def test_a_jsonl_line_that_is_not_utf8_is_one_unreadable_record(tmp_path):
    file = tmp_path / "data.jsonl"
    good = json.dumps({"problem": "2+2?", "answer": "4", "images": []}).encode()
    file.write_bytes(good + b"\n" + b'{"problem": "caf\xe9", "answer": "1", "images": []}' + b"\n" + good + b"\n")
    source = RecordSource(str(file))
    assert len(source) == 3
    assert source[0].problem == source[2].problem == "2+2?"
    assert source[1].error.startswith("not valid UTF-8") and source[1].record_id == f"{file} line 2"


def test_missing_column_in_a_parquet_file_is_named(tmp_path):
    pq.write_table(_table(2).drop(["answer"]), tmp_path / "train.parquet")
    expected = r"column\(s\) \['answer'\] not found; the file has columns \['problem', 'images'\]"
    with pytest.raises(DataSpecError, match=expected):
        RecordSource(str(tmp_path / "train.parquet"))
    text_only = RecordSource(str(tmp_path / "train.parquet"), Columns(answer="problem", images=None))
    assert text_only[0].images == []


def test_unreadable_and_empty_files(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataSpecError, match="not a readable parquet file"):
        RecordSource(str(tmp_path / "bad.parquet"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("\n")
    with pytest.raises(DataSpecError, match="hold no records"):
        RecordSource(f"{empty}@train")
