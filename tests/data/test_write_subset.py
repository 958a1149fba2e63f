"""RecordSource.write_subset: chosen records in the source's layout, names prefixed when the files' own names would
not read back in order, a Hugging Face schema given the added columns' features."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shuffle_r1_jax.data.sources import RecordSource


def test_write_subset_keeps_order_columns_and_hf_features(tmp_path):
    features = {"problem": {"dtype": "string", "_type": "Value"}, "answer": {"dtype": "string", "_type": "Value"}}
    table = pa.table({"problem": ["p0", "p1", "p2"], "answer": ["a0", "a1", "a2"], "images": [[], [], []]})
    table = table.replace_schema_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    for directory in ("x", "y"):
        (tmp_path / directory).mkdir()
        pq.write_table(table, tmp_path / directory / "train.parquet")
    source = RecordSource(f"{tmp_path / 'x' / 'train.parquet'},{tmp_path / 'y' / 'train.parquet'}")
    out = tmp_path / "out"
    out.mkdir()

    files = source.write_subset(np.array([1, 3, 5]), out, {"score": np.array([0.5, 1.0, 0.25])})

    assert [f.name for f in files] == ["0000-train.parquet", "0001-train.parquet"]  # same names: prefixed
    first, second = (pq.read_table(f) for f in files)
    assert first.to_pydict() == {"problem": ["p1"], "answer": ["a1"], "images": [[]], "score": [0.5]}
    assert second.to_pydict() == {
        "problem": ["p0", "p2"],
        "answer": ["a0", "a2"],
        "images": [[], []],
        "score": [1.0, 0.25],
    }
    written = json.loads(first.schema.metadata[b"huggingface"])["info"]["features"]
    assert written == features | {"score": {"dtype": "float64", "_type": "Value"}}
    assert [RecordSource(str(out))[i].problem for i in range(3)] == ["p1", "p0", "p2"]
