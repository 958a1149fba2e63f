"""Reading Hugging Face safetensors checkpoints tensor by tensor, without torch.

A checkpoint directory holds `model.safetensors`, or shards listed in `model.safetensors.index.json`.
Tensors are memory-mapped and read one at a time, so a loader never holds the whole file set in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint file or tensor is missing, unreadable or misshaped; the message names it."""


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, dtype, shape and byte range (relative to the data section)."""

    file: str
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    end: int
    data_offset: int


def _read_header(file: str) -> dict[str, TensorEntry]:
    try:
        with open(file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise CheckpointError(f"{file}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        entries[name] = TensorEntry(
            file, np.dtype(_DTYPES[info["dtype"]]), tuple(info["shape"]), start, end, 8 + header_len
        )
    return entries


class SafetensorsCheckpoint:
    """An index over every tensor in a checkpoint directory; `read(name)` returns one numpy array."""

    def __init__(self, directory: str | os.PathLike):
        directory = os.fspath(directory)
        index_file = os.path.join(directory, "model.safetensors.index.json")
        single = os.path.join(directory, "model.safetensors")
        if os.path.exists(index_file):
            with open(index_file) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        elif os.path.exists(single):
            files = ["model.safetensors"]
        else:
            raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")
        self.directory = directory
        self.entries: dict[str, TensorEntry] = {}
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                raise CheckpointError(f"{directory}: shard {name!r} listed in the index is missing")
            self.entries.update(_read_header(path))

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as a numpy array in its stored dtype (a copy, not a view of the file)."""
        e = self.entries[name]
        count = int(np.prod(e.shape, dtype=np.int64))
        if e.end - e.start != count * e.dtype.itemsize:
            raise CheckpointError(f"{e.file}: tensor {name!r} byte range does not match shape {e.shape}")
        with open(e.file, "rb") as f:
            f.seek(e.data_offset + e.start)
            data = np.frombuffer(f.read(e.end - e.start), dtype=e.dtype, count=count)
        return data.reshape(e.shape)
