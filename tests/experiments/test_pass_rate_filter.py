"""The offline pass-rate filter on a parquet and a jsonl file whose answers fix every prompt's pass rate (the test
reward scores each response with its prompt's answer read as a number): which records are dropped, the written
files' rows and columns, and the statistics, against values worked out by hand."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from shuffle_r1_jax.data.sources import RecordSource
from shuffle_r1_jax.demo.config import demo_config
from shuffle_r1_jax.experiments.pass_rate_filter import (
    PassRateBand,
    PassRateFilterError,
    check_output_dir,
    measure_pass_rates,
    run_settings_record,
    write_filtered,
)
from shuffle_r1_jax.train.settings import prepare
from tests.tiny_assets import synthetic_data, tiny_checkpoint  # noqa: F401

N = 4
# parquet rows 0-5: answer -> pass rate ("2" is clipped to 1, "" is an unusable record)
PARQUET_ANSWERS = ["1", "0", "0.25", "2", "0.5", ""]
PARQUET_SOURCES = ["a", "a", "b", "b", "a", "b"]
JSONL_LINES = [
    '{"problem": "red", "answer": "0.75", "images": [], "data_source": "c", "note": "kept as is"}',
    "",
    "{not json",
    '{"problem": "blue", "answer": 0.5, "images": []}',
]


def test_pass_rate_band_verdicts():
    rates = np.array([0.0, 0.25, 0.5, 1.0, np.nan])
    assert PassRateBand().verdicts(rates).tolist() == ["always_wrong", "kept", "kept", "always_right", "bad"]
    assert PassRateBand(0.3, 0.6).verdicts(rates).tolist() == [
        "always_wrong",
        "below_min",
        "kept",
        "always_right",
        "bad",
    ]
    assert PassRateBand(0.0, 0.4).verdicts(rates).tolist() == ["kept", "kept", "above_max", "always_right", "bad"]
    assert PassRateBand().describe() == "0 < pass rate < 1"
    with pytest.raises(ValueError, match="min_pass_rate"):
        PassRateBand(0.8, 0.2)
    with pytest.raises(ValueError, match="max_pass_rate"):
        PassRateBand(None, 1.5)


def _dataset(tmp_path, synthetic_data):  # noqa: F811
    table = pq.read_table(synthetic_data / "train.parquet").slice(0, len(PARQUET_ANSWERS))
    table = table.set_column(table.schema.get_field_index("answer"), "answer", [PARQUET_ANSWERS])
    table = table.set_column(table.schema.get_field_index("data_source"), "data_source", [PARQUET_SOURCES])
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    pq.write_table(table, tmp_path / "one" / "train.parquet")
    (tmp_path / "two" / "extra.jsonl").write_text("\n".join(JSONL_LINES) + "\n")
    return table, f"{tmp_path / 'one' / 'train.parquet'},{tmp_path / 'two' / 'extra.jsonl'}"


def test_filter_drops_the_always_right_and_always_wrong(tmp_path, tiny_checkpoint, synthetic_data):  # noqa: F811
    table, spec = _dataset(tmp_path, synthetic_data)
    c = demo_config()
    c.setup = ""
    c.model.checkpoint = str(tiny_checkpoint)
    c.data.train = spec
    c.data.val = ""
    c.eval.every = 0
    c.eval.before_training = False
    c.data.rollout_batch_prompts = 4
    c.rollout.n = N
    c.rl.abs_rounds = 2
    c.train.minibatch_prompts = 2
    c.train.micro_batch_rows = 4
    c.rollout.max_new_tokens = 4
    c.reward.name = "tests.experiments.filter_rewards:answer_is_the_accuracy"
    c.reward.num_workers = 1
    _, settings = prepare(c)
    out = tmp_path / "out"
    check_output_dir(out)
    lines = []
    measured = measure_pass_rates(settings, N, progress=lines.append)
    stats = write_filtered(measured, PassRateBand(), out, run_settings_record(settings, N))

    # pass rates by record: parquet rows 0-5, then the jsonl's lines 1, 3 (invalid JSON) and 4
    expected = [1.0, 0.0, 0.25, 1.0, 0.5, None, 0.75, None, 0.5]
    rates = pq.read_table(out / "pass_rates.parquet").to_pydict()
    assert rates["record_index"] == list(range(9))
    assert rates["pass_rate"] == expected
    assert rates["verdict"] == [
        "always_right",
        "always_wrong",
        "kept",
        "always_right",
        "kept",
        "bad",
        "kept",
        "bad",
        "kept",
    ]
    assert rates["bad_reason"] == [None] * 5 + ["empty_answer", None, "unreadable_record", None]
    assert rates["data_source"] == PARQUET_SOURCES + ["c", "extra", "extra"]
    assert rates["record_id"][2].endswith("train.parquet row 2") and rates["record_id"][7].endswith("line 3")
    assert lines and lines[-1].startswith("pass rates: 9/9 records (100%)")

    # the kept records, in each input file's format, order and columns, with their pass rates
    assert [p.split("/")[-1] for p in stats["output"]["data_files"]] == ["0000-train.parquet", "0001-extra.jsonl"]
    kept = pq.read_table(out / "data" / "0000-train.parquet")
    assert kept.column_names == table.column_names + ["pass_rate"]
    assert kept.drop_columns(["pass_rate"]).equals(table.take([2, 4]))
    assert kept.column("pass_rate").to_pylist() == [0.25, 0.5]
    written = [json.loads(line) for line in (out / "data" / "0001-extra.jsonl").read_text().splitlines()]
    assert written == [
        {"problem": "red", "answer": "0.75", "images": [], "data_source": "c", "note": "kept as is", "pass_rate": 0.75},
        {"problem": "blue", "answer": 0.5, "images": [], "pass_rate": 0.5},
    ]
    filtered = RecordSource(str(out / "data"))
    assert [filtered[i].answer for i in range(len(filtered))] == ["0.25", "0.5", "0.75", 0.5]

    on_disk = json.loads((out / "pass_rate_stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    assert stats["settings"]["n"] == N and stats["settings"]["policy_checkpoint"] == str(tiny_checkpoint)
    assert stats["settings"]["dataset"] == spec
    assert stats["records"] == {
        "total": 9,
        "read": 9,
        "usable": 7,
        "unusable": 2,
        "unusable_by_reason": {"unreadable_record": 1, "empty_answer": 1},
    }
    assert stats["kept"] == 4
    assert stats["dropped"] == {"always_right": 2, "always_wrong": 1, "below_min": 0, "above_max": 0}
    assert stats["mean_pass_rate"] == pytest.approx(4.0 / 7)
    assert stats["histogram"]["counts"] == [1, 0, 1, 0, 0, 2, 0, 1, 0, 2]
    assert stats["right_of_n"] == {"0": 1, "1": 1, "2": 2, "3": 1, "4": 2}
    assert stats["data_sources"]["a"] == {
        "records": 3,
        "unusable": 0,
        "kept": 1,
        "always_right": 1,
        "always_wrong": 1,
        "below_min": 0,
        "above_max": 0,
        "mean_pass_rate": 0.5,
    }
    assert stats["data_sources"]["b"]["unusable"] == 1 and stats["data_sources"]["b"]["mean_pass_rate"] == 0.625
    assert stats["data_sources"]["extra"]["records"] == 2 and stats["data_sources"]["extra"]["kept"] == 1
    assert stats["reward_failures"] == {}

    # another band over the same pass rates: [0.5, 1] keeps the always-right too
    band_out = tmp_path / "band"
    check_output_dir(band_out)
    banded = write_filtered(measured, PassRateBand(0.5, 1.0), band_out, run_settings_record(settings, N))
    assert banded["kept"] == 5
    assert banded["dropped"] == {"always_right": 0, "always_wrong": 1, "below_min": 1, "above_max": 0}
    answers = pq.read_table(band_out / "data" / "0000-train.parquet").column("answer").to_pylist()
    assert answers == ["1", "2", "0.5"]

    with pytest.raises(PassRateFilterError, match="not empty"):
        check_output_dir(out)
