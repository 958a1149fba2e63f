"""Session fixtures shared by tests/checkpoint, tests/data and tests/processing (their conftests import them),
made once per session however many directories use them: the "test" preset tiny checkpoint and a small
synthetic dataset (mixed 56 px and 112 px images)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shuffle_r1_jax.demo.synthetic import write_synthetic_dataset
from shuffle_r1_jax.demo.tiny_checkpoint import TINY_IMAGE_CONFIG, make_tiny_checkpoint

IMAGE_CONFIG = TINY_IMAGE_CONFIG
_CACHE: dict[str, object] = {}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Directory of the "test" preset tiny checkpoint (seed 0)."""
    if "checkpoint" not in _CACHE:
        path = tmp_path_factory.mktemp("tiny_checkpoint")
        make_tiny_checkpoint(path, "test", seed=0, image_config=IMAGE_CONFIG)
        _CACHE["checkpoint"] = path
    return _CACHE["checkpoint"]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A directory with train.parquet (30 records: 20 of 56 px then 10 of 112 px images) and val.parquet (6)."""
    if "dataset" not in _CACHE:
        root = tmp_path_factory.mktemp("synthetic")
        small = write_synthetic_dataset(root / "small", num_train=20, num_val=6, seed=0, image_size=56)
        large = write_synthetic_dataset(root / "large", num_train=10, num_val=2, seed=1, image_size=112)
        out = root / "data"
        out.mkdir()
        train = pa.concat_tables([pq.read_table(small["train"]), pq.read_table(large["train"])])
        pq.write_table(train, out / "train.parquet")
        pq.write_table(pq.read_table(small["val"]), out / "val.parquet")
        _CACHE["dataset"] = out
    return _CACHE["dataset"]
