"""Hugging Face safetensors checkpoints read and written tensor by tensor, without torch.

A checkpoint directory holds `model.safetensors`, or shards listed in `model.safetensors.index.json`.
Reading: tensors are read one at a time, so a loader never holds the whole file set in memory. Writing: each
file's header is computed from the shapes first, then every tensor is fetched (e.g. from a device), converted
and appended, so the writer holds one tensor at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Callable

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
_CODES = {np.dtype(dtype): code for code, dtype in _DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


class CheckpointError(ValueError):
    """A checkpoint file or tensor is missing, unreadable or misshaped; the message names it."""


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in a safetensors file.

    Attributes:
      file: path of the safetensors file.
      dtype: the stored NumPy dtype.
      shape: the stored shape.
      start: first byte of the tensor, relative to the data section.
      end: one past its last byte, relative to the data section.
      data_offset: byte offset of the data section in the file (8 + header length).
    """

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
    """An index over every tensor in a checkpoint directory; `read(name)` returns one numpy array.

    Args:
      directory: holds `model.safetensors`, or the shards listed in `model.safetensors.index.json`.

    Attributes:
      directory: the directory as a string.
      entries: tensor name -> `TensorEntry`, over every file.

    Raises:
      CheckpointError: when the directory has neither file layout, a listed shard is missing, or a header is
        unreadable or names an unsupported dtype.
    """

    def __init__(self, directory: str | os.PathLike):
        directory = os.fspath(directory)
        index_file = os.path.join(directory, INDEX_FILE)
        single = os.path.join(directory, SINGLE_FILE)
        if os.path.exists(index_file):
            with open(index_file) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        elif os.path.exists(single):
            files = [SINGLE_FILE]
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
        """The stored shape of tensor `name`."""
        return self.entries[name].shape

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as a numpy array in its stored dtype (a copy, not a view of the file).

        Raises:
          CheckpointError: when the tensor's byte range does not match its shape and dtype.
        """
        e = self.entries[name]
        count = int(np.prod(e.shape, dtype=np.int64))
        if e.end - e.start != count * e.dtype.itemsize:
            raise CheckpointError(f"{e.file}: tensor {name!r} byte range does not match shape {e.shape}")
        with open(e.file, "rb") as f:
            f.seek(e.data_offset + e.start)
            data = np.frombuffer(f.read(e.end - e.start), dtype=e.dtype, count=count)
        return data.reshape(e.shape)


def safetensors_code(dtype) -> str:
    """The safetensors dtype code ("F32", "BF16", ...) of a NumPy dtype.

    Args:
      dtype: anything `np.dtype` accepts.

    Returns:
      The code written in a safetensors header.

    Raises:
      ValueError: naming the dtype when safetensors cannot store it.
    """
    dtype = np.dtype(dtype)
    if dtype not in _CODES:
        raise ValueError(f"dtype {dtype} cannot be written to safetensors; expected one of {sorted(map(str, _CODES))}")
    return _CODES[dtype]


@dataclasses.dataclass(frozen=True)
class TensorToWrite:
    """One tensor of a checkpoint being written.

    Attributes:
      name: the tensor name in the header.
      shape: its shape, written in the header before the data is fetched.
      dtype: its stored dtype.
      fetch: called once when the tensor's bytes are written; returns the array (that shape; it is converted
        to `dtype`).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fetch: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _pack_shards(tensors: list[TensorToWrite], max_shard_bytes: int) -> list[list[TensorToWrite]]:
    """Greedy packing in order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[TensorToWrite]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def _header(tensors: list[TensorToWrite]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": safetensors_code(tensor.dtype),
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + b" " * (-len(encoded) % 8)


def write_safetensors_file(path: str | os.PathLike, tensors: list[TensorToWrite]) -> None:
    """Writes one safetensors file: 8-byte header length, JSON header (space-padded to 8 bytes), tensor data.

    Args:
      path: the file to write (replaced if present).
      tensors: the tensors, fetched one at a time in this order.

    Raises:
      ValueError: naming the dtype when a tensor's dtype cannot be stored (see `safetensors_code`).
      CheckpointError: naming a tensor whose fetched array does not have the declared shape.
    """
    header = _header(tensors)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for tensor in tensors:
            value = np.ascontiguousarray(tensor.fetch(), dtype=tensor.dtype)
            if value.shape != tuple(tensor.shape):
                raise CheckpointError(
                    f"{path}: tensor {tensor.name!r} fetched with shape {value.shape}, expected {tuple(tensor.shape)}"
                )
            f.write(memoryview(value.reshape(-1).view(np.uint8)))


def write_safetensors_dir(
    out_dir: str | os.PathLike, tensors: list[TensorToWrite], max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[Path]:
    """Writes `tensors` into `out_dir` as `model.safetensors`, or as shards when they do not fit in one.

    Above `max_shard_bytes` in total, tensors are packed greedily in order into
    `model-0000i-of-0000n.safetensors` shards listed in `model.safetensors.index.json` (a tensor larger than the
    limit gets a shard of its own). The other layout's `model.safetensors` or index file is removed.

    Args:
      out_dir: the output directory, created if missing.
      tensors: the tensors to write.
      max_shard_bytes: the most tensor data bytes per file.

    Returns:
      The written safetensors files.

    Raises:
      ValueError: when `max_shard_bytes` is not positive.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes = {max_shard_bytes} must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = _pack_shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        write_safetensors_file(out / SINGLE_FILE, shards[0])
        (out / INDEX_FILE).unlink(missing_ok=True)
        return [out / SINGLE_FILE]
    weight_map, files = {}, []
    for i, shard in enumerate(shards):
        files.append(out / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
        write_safetensors_file(files[-1], shard)
        weight_map.update({tensor.name: files[-1].name for tensor in shard})
    (out / SINGLE_FILE).unlink(missing_ok=True)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return files
