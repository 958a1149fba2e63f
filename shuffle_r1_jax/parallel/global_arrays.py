"""Host-local rows <-> global `jax.Array`s sharded over the batch axes, and small host values across processes.

A batch's rows are sharded over the mesh's batch axes (data, fsdp) when their count divides the number of batch
shards, else replicated (one process only: with several processes every process feeds its own rows, so the
rows must divide). Each process owns the rows of the batch shards on its devices; `host_to_global` places a
process's rows there (`jax.make_array_from_process_local_data`) and `local_rows` reads them back, in the same
order. On one process both are plain `device_put` / `np.asarray`.

The process reductions (`gather_over_processes`, `max_over_processes`, `allgather_json`) are collectives: every
process must call them in the same order. With one process they return at once.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shuffle_r1_jax.parallel.sharding import BATCH_AXES


def batch_shard_count(mesh: Mesh) -> int:
    """How many shards the batch axes (data x fsdp) cut a batch into."""
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def batch_sharding(mesh: Mesh, shape: Sequence[int], axis: int = 0) -> NamedSharding:
    """The sharding of dimension `axis` of an array of `shape` over the batch axes when it divides, else replicated."""
    spec = [None] * len(shape)
    if shape[axis] % batch_shard_count(mesh) == 0:
        spec[axis] = BATCH_AXES
    return NamedSharding(mesh, PartitionSpec(*spec))


def host_to_global(local: np.ndarray, mesh: Mesh, axis: int = 0) -> jax.Array:
    """The global array whose rows (dimension `axis`) are every process's `local` rows, sharded by `batch_sharding`.

    Args:
      local: this process's rows; every process passes the same shape.
      mesh: the mesh whose batch axes (data, fsdp) shard the rows.
      axis: the row dimension.

    Returns:
      A global `jax.Array` with process_count times as many rows as `local`, in process order.

    Raises:
      ValueError: with several processes, the global rows do not divide over the batch shards.
    """
    local = np.asarray(local)
    processes = jax.process_count()
    global_shape = list(local.shape)
    global_shape[axis] *= processes
    sharding = batch_sharding(mesh, global_shape, axis)
    if processes == 1:
        return jax.device_put(local, sharding)
    if sharding.spec[axis] is None:
        raise ValueError(
            f"{global_shape[axis]} rows ({local.shape[axis]} per process) do not divide over the "
            f"{batch_shard_count(mesh)} batch shards (mesh data x fsdp) of a {processes}-process run"
        )
    return jax.make_array_from_process_local_data(sharding, local, tuple(global_shape))


def local_row_ids(sharding: jax.sharding.Sharding, shape: Sequence[int], axis: int = 0) -> np.ndarray:
    """The global row ids (dimension `axis`) this process holds, in local order.

    Args:
      sharding: the sharding of the global array.
      shape: the global array's shape.
      axis: the row dimension.

    Returns:
      `int64[local rows]`, ascending: the order of `local_rows`.
    """
    spans = {
        (index[axis].start or 0, shape[axis] if index[axis].stop is None else index[axis].stop)
        for index in sharding.addressable_devices_indices_map(tuple(shape)).values()
    }
    return np.concatenate([np.arange(start, stop) for start, stop in sorted(spans)])


def local_rows(x: jax.Array, axis: int = 0) -> np.ndarray:
    """This process's rows of a global array sharded only along `axis`, in global row order.

    Args:
      x: a global array; when it is fully addressable, all of it is returned.
      axis: the row dimension.

    Returns:
      The rows of `x` on this process's devices as one numpy array (replicated rows once).

    Raises:
      ValueError: `x` is also sharded along another dimension.
    """
    if x.is_fully_addressable:
        return np.asarray(x)
    pieces: dict[int, np.ndarray] = {}
    for shard in x.addressable_shards:
        for dim, part in enumerate(shard.index):
            if dim != axis and (part.start or 0, part.stop) not in ((0, None), (0, x.shape[dim])):
                raise ValueError(
                    f"local_rows: array of shape {x.shape} is sharded along dimension {dim}, not only {axis}"
                )
        pieces.setdefault(shard.index[axis].start or 0, np.asarray(shard.data))
    return np.concatenate([pieces[start] for start in sorted(pieces)], axis=axis)


def gather_over_processes(local: np.ndarray) -> np.ndarray:
    """Every process's `local` (same shape and dtype everywhere) concatenated along axis 0, in process order."""
    local = np.asarray(local)
    if jax.process_count() == 1:
        return local
    return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def summed_over_processes(counts: dict[str, int]) -> dict[str, int]:
    """Integer counters with the same keys on every process, summed over the processes (a collective)."""
    keys = sorted(counts)
    summed = gather_over_processes(np.asarray([[counts[k] for k in keys]], np.int64)).sum(0)
    return {k: int(v) for k, v in zip(keys, summed)}


def max_over_processes(values: Sequence[int]) -> tuple[int, ...]:
    """The element-wise maximum of an integer vector over processes."""
    stacked = gather_over_processes(np.asarray(values, np.int64)[None])
    return tuple(int(v) for v in stacked.max(0))


def min_over_processes(value: int) -> int:
    """The minimum of an integer over processes."""
    return int(gather_over_processes(np.asarray([value], np.int64)).min())


def allgather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable `value`, in process order."""
    if jax.process_count() == 1:
        return [value]
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    longest = max_over_processes([len(data)])[0]
    padded = np.zeros((1, longest + 1), np.int32)
    padded[0, 0] = len(data)
    padded[0, 1 : len(data) + 1] = data
    rows = gather_over_processes(padded)
    return [json.loads(row[1 : row[0] + 1].astype(np.uint8).tobytes().decode()) for row in rows]


def replicated_key(key: jax.Array, mesh: Mesh) -> jax.Array:
    """A typed PRNG `key` (the same on every process) replicated over every device of `mesh`."""
    data = jax.device_put(np.asarray(jax.random.key_data(key)), NamedSharding(mesh, PartitionSpec()))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
