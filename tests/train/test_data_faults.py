"""Unusable training data in a run: skipped records reported by reason (log, summary), a stream without a usable
record stopping the command line with one line."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shuffle_r1_jax.demo.assets import build_assets
from tests.train.conftest import make_trainer, tiny_trainer_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_skipped_records_are_logged_by_reason_and_summarised(demo_cache, tmp_path, caplog):
    c = tiny_trainer_config(demo_cache)
    assets = build_assets(c)
    rows = pq.read_table(assets["data.train"]).to_pylist()
    for row in rows[::3]:
        row["answer"] = None  # a third of the records: missing_column
    train = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(assets["data.train"])), train)
    c.setup = ""
    c.model.checkpoint, c.data.train, c.data.val = assets["model.checkpoint"], str(train), ""
    c.train.total_steps = 2
    trainer = make_trainer(c, tmp_path / "run")
    try:
        with caplog.at_level(logging.INFO):
            summary = trainer.fit()
    finally:
        trainer.close()
    skipped = summary.skipped_records["missing_column"]
    assert summary.skipped_records == {"missing_column": skipped} and 0 < skipped < summary.records_read
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "skipped" in r.getMessage()]
    assert warnings and f"{skipped} of {summary.records_read} training records read so far skipped" in warnings[-1]
    assert "data.warn_bad_fraction = 0.05): missing_column" in warnings[-1]


CONFIG_FILE = """
from tests.train.conftest import tiny_trainer_config

def get_config():
    return tiny_trainer_config({cache!r})
"""


@pytest.mark.slow
def test_a_stream_without_a_usable_record_stops_the_command_with_one_line(demo_cache, tmp_path):
    """Every prompt is longer than 10 tokens: after one pass over the 64 records the run stops (it used to read
    on forever) with one line naming the reason and counts; the traceback goes to the run log."""
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(CONFIG_FILE.format(cache=demo_cache))
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "shuffle_r1_jax.train", "--config", str(config_file), "--workdir", str(workdir)]
    done = subprocess.run(
        [*command, "--config.data.max_prompt_length=10"],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no usable record in the last 64 records of ")
    assert "prompt_too_long 64 of 64 read" in last and f"(traceback in {workdir / 'run.log'})" in last
    assert "Traceback" not in done.stderr
    assert "Traceback" in (workdir / "run.log").read_text()
