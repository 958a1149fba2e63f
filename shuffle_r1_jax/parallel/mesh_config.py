"""The trainer's device mesh from its config section `mesh`: presets, "the rest of the devices", validation.

Config keys (see `train/defaults.py`): `mesh.preset`, `mesh.data`, `mesh.fsdp`, `mesh.tensor` (-1 = the devices
the other two axes leave; at most one -1), `mesh.num_devices` (0 = every device of every process) and
`mesh.rules` (logical parameter axis -> mesh axes, `parallel.sharding.DEFAULT_RULES` by default).

Presets (sizes data x fsdp x tensor; the device count must match):
  single_gpu   1 x 1 x 1   one accelerator.
  gpu_8        1 x 4 x 2   one host of 8 GPUs: FSDP over 4 shards the fp32 master weights and AdamW moments
                           (16 bytes per parameter: 7B = 133 GB, 33 GB per GPU), tensor 2 over NVLink pairs halves
                           the per-token weight traffic of decoding (EasyR1's rollout default is also 2-way TP).
  tpu_v4_32    1 x 4 x 4   v4-32 = 16 chips (32 GiB each) on 4 hosts: tensor 4 stays inside a host's 4 chips and
                           splits Qwen2.5-VL-7B's 4 KV heads (the KV cache splits with them); FSDP 4 over the hosts
                           leaves 8.3 GB of fp32 train state per chip for 7B.
  tpu_v5p_64   2 x 4 x 4   v5p-64 = 32 chips (95 GB each) on 8 hosts: the same 4 x 4 (tensor, FSDP) group, twice;
                           two data-parallel replicas halve the size of the FSDP all-gathers of each step.
  gpu_32       1 x 4 x 8   4 hosts of 8 x 80 GiB GPUs, for Qwen2.5-VL-32B: tensor 8 inside a host (NVLink) splits
                           the 8 KV heads, the MLP and each layer's gathered weights; FSDP 4 over the hosts. Every
                           parameter is split 32 ways (32B's fp32 weights + AdamW, 536 GB: 17 GB per GPU).
  gpu_64       1 x 8 x 8   8 such hosts, for Qwen2.5-VL-72B: tensor 8 inside a host, FSDP 8 over the hosts
                           (72B's 1.17 TB of fp32 train state: 18 GB per GPU). By the CPU memory plan its train
                           step needs 141 GiB GPUs (H200), not 80 GiB ones (BUILD_NOTES.md "Memory plan").
  tpu_v5p_128  1 x 16 x 4  v5p-128 = 64 chips (95 GiB each) on 16 hosts, for 72B on TPU: tensor 4 stays inside a
                           host's 4 chips (2 of the 8 KV heads per chip), FSDP 16 over the hosts. By the CPU
                           memory plan 72B's train step does not fit it yet.

Multi-process meshes are laid out process-major (each process's devices are consecutive along the flattened
mesh), so a tensor group of at most a host's devices never spans processes, and every shard of the batch axes
(data, fsdp) belongs to exactly one process: each process feeds its own prompts (`parallel.global_arrays`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from shuffle_r1_jax.parallel.sharding import DEFAULT_RULES, MESH_AXES, Rules, checked_rules

PRESETS: dict[str, tuple[int, int, int]] = {
    "single_gpu": (1, 1, 1),
    "gpu_8": (1, 4, 2),
    "tpu_v4_32": (1, 4, 4),
    "tpu_v5p_64": (2, 4, 4),
    "gpu_32": (1, 4, 8),
    "gpu_64": (1, 8, 8),
    "tpu_v5p_128": (1, 16, 4),
}
# presets whose launch starts jax.distributed by itself (TPU metadata names the coordinator); the multi-host GPU
# presets take it from the launcher (SLURM, Open MPI or JAX_COORDINATOR_ADDRESS, BUILD_NOTES "Several GPU hosts")
MULTI_HOST_PRESETS = ("tpu_v4_32", "tpu_v5p_64", "tpu_v5p_128")
DEFAULT_SIZES = (1, -1, 1)


class MeshConfigError(ValueError):
    """The `mesh` config section is invalid for this run's devices; the message names the keys and values."""


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """The `mesh` config section as plain values.

    Attributes:
      preset: a name in `PRESETS`, or "" for the explicit sizes data, fsdp, tensor.
      data: data-parallel size (-1 = the devices the other axes leave; at most one axis is -1).
      fsdp: FSDP size of parameters and optimizer state (-1 = the rest).
      tensor: tensor-parallel size (-1 = the rest).
      num_devices: how many devices the mesh uses (0 = all devices of all processes).
      rules: logical parameter axis -> mesh axes, checked by `checked_rules` (an invalid table raises
        `MeshConfigError`).
    """

    preset: str = ""
    data: int = DEFAULT_SIZES[0]
    fsdp: int = DEFAULT_SIZES[1]
    tensor: int = DEFAULT_SIZES[2]
    num_devices: int = 0
    rules: Rules = DEFAULT_RULES

    def __post_init__(self):
        try:
            object.__setattr__(self, "rules", checked_rules(self.rules))
        except ValueError as err:
            raise MeshConfigError(str(err)) from err

    @classmethod
    def from_config(cls, section) -> "MeshSpec":
        """The spec from the config section `mesh` (a mapping with one key per field)."""
        return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls)})


def mesh_devices(spec: MeshSpec, devices: Sequence[jax.Device] | None = None) -> list[jax.Device]:
    """The devices the mesh uses, process-major: all of them, or the first `num_devices` (one process only).

    Args:
      spec: the mesh section.
      devices: the candidate devices (default: `jax.devices()`).

    Returns:
      The devices sorted by (process index, id), cut to `spec.num_devices` when that is not 0.

    Raises:
      MeshConfigError: num_devices is out of range, or selects a subset in a multi-process run.
    """
    devices = sorted(jax.devices() if devices is None else devices, key=lambda d: (d.process_index, d.id))
    if spec.num_devices == 0:
        return devices
    processes = len({d.process_index for d in devices})
    if spec.num_devices < 0 or spec.num_devices > len(devices):
        raise MeshConfigError(f"mesh.num_devices = {spec.num_devices} must be in [0, {len(devices)}] (0 = all devices)")
    if processes > 1:
        raise MeshConfigError(
            f"mesh.num_devices = {spec.num_devices}: a subset of the devices is for one process only; "
            f"this run has {processes} processes (use 0 = all devices)"
        )
    return devices[: spec.num_devices]


def mesh_shape(spec: MeshSpec, num_devices: int) -> tuple[int, int, int]:
    """The mesh sizes for `num_devices` devices, from a preset or the explicit sizes (-1 resolved).

    Args:
      spec: the mesh section.
      num_devices: the number of devices the mesh uses.

    Returns:
      (data, fsdp, tensor), multiplying to `num_devices`.

    Raises:
      MeshConfigError: an unknown preset, a preset together with explicit sizes, a size that is 0 or below -1,
        more than one -1, or sizes that do not match the device count.
    """
    if spec.preset:
        if spec.preset not in PRESETS:
            raise MeshConfigError(
                f"mesh.preset = {spec.preset!r} is unknown; known presets: {', '.join(PRESETS)} "
                "('' = the sizes mesh.data, mesh.fsdp, mesh.tensor)"
            )
        if (spec.data, spec.fsdp, spec.tensor) != DEFAULT_SIZES:
            raise MeshConfigError(
                f"mesh.preset = {spec.preset!r} sets the axis sizes, but mesh.data, mesh.fsdp, mesh.tensor = "
                f"{spec.data}, {spec.fsdp}, {spec.tensor} were also given: leave them at {DEFAULT_SIZES} or set "
                "mesh.preset=''"
            )
        sizes = PRESETS[spec.preset]
        if math.prod(sizes) != num_devices:
            raise MeshConfigError(
                f"mesh.preset = {spec.preset!r} is a {' x '.join(map(str, sizes))} mesh of {math.prod(sizes)} "
                f"devices, but this run has {num_devices}"
            )
        return sizes
    sizes = (spec.data, spec.fsdp, spec.tensor)
    for name, size in zip(MESH_AXES, sizes):
        if size == 0 or size < -1:
            raise MeshConfigError(f"mesh.{name} = {size} must be a positive size or -1 (the rest of the devices)")
    rest = [name for name, size in zip(MESH_AXES, sizes) if size == -1]
    if len(rest) > 1:
        raise MeshConfigError(f"mesh.{' and mesh.'.join(rest)} are both -1: at most one axis may take the rest")
    fixed = math.prod(size for size in sizes if size != -1)
    if rest:
        if num_devices % fixed:
            raise MeshConfigError(
                f"mesh.{rest[0]} = -1 takes the rest, but the other axes' product {fixed} "
                f"({_describe(sizes)}) does not divide the {num_devices} devices"
            )
        sizes = tuple(num_devices // fixed if size == -1 else size for size in sizes)
    elif fixed != num_devices:
        raise MeshConfigError(f"{_describe(sizes)} is a mesh of {fixed} devices, but this run has {num_devices}")
    return sizes


def build_mesh(spec: MeshSpec, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The (data, fsdp, tensor) `Mesh` of a mesh section.

    One process gets JAX's topology-aware device order; several get process-major order, checked so that no
    shard of the batch axes spans two processes.

    Args:
      spec: the mesh section.
      devices: the candidate devices (default: `jax.devices()`).

    Returns:
      The `Mesh` with axes `MESH_AXES`.

    Raises:
      MeshConfigError: the section does not fit the devices (see `mesh_devices`, `mesh_shape`), or a tensor
        group spans processes.
    """
    devices = mesh_devices(spec, devices)
    shape = mesh_shape(spec, len(devices))
    processes = {d.process_index for d in devices}
    if len(processes) == 1:
        return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices)
    grid = np.asarray(devices, dtype=object).reshape(shape)
    per_shard = [{d.process_index for d in grid[i, j].ravel()} for i in range(shape[0]) for j in range(shape[1])]
    if any(len(p) > 1 for p in per_shard):
        local = len(devices) // len(processes)
        raise MeshConfigError(
            f"{_describe(shape)}: a tensor group of {shape[2]} devices spans processes ({local} devices per process); "
            "mesh.tensor must divide the devices of one process"
        )
    return Mesh(grid, MESH_AXES)


def _describe(sizes: Sequence[int]) -> str:
    return ", ".join(f"mesh.{name} = {size}" for name, size in zip(MESH_AXES, sizes))
