"""One mesh with named axes (data, fsdp, tensor) and one rules table from logical axis names to mesh axes.

Every parameter carries `logical_axes` metadata (see `models/qwen2_5_vl/layers.py`). `param_shardings` turns
a model state into `NamedSharding`s by the rules; a dimension whose size does not divide by its mesh axes,
or whose mesh axis is already used by an earlier dimension, is replicated instead.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch's rows are sharded over

# logical axis -> mesh axis (or tuple of mesh axes, or None for replicated): the default of the config's
# `mesh.rules`. Batch rows are not in it: they always go over BATCH_AXES.
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]
DEFAULT_RULES: Rules = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vision_embed", "fsdp"),
    ("vision_heads", "tensor"),
    ("vision_mlp", "tensor"),
    ("patch", None),
    ("norm", None),
    ("lora_rank", "fsdp"),  # a LoRA adapter's rank dim: over fsdp where its other dim does not use it
)


def checked_rules(rules) -> Rules:
    """Checks a rules table and returns it as a tuple of (logical axis, mesh axes) pairs.

    Args:
      rules: a sequence of (logical axis name, mesh axes) pairs; the mesh axes are one of MESH_AXES, a sequence
        of them, or None (replicated).

    Returns:
      The `Rules` tuple, each sequence of mesh axes as a tuple.

    Raises:
      ValueError: naming the entry that is not a (name, mesh axes) pair or names an unknown mesh axis, or the
        logical axes named more than once.
    """
    checked = []
    for entry in rules:
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"mesh.rules entry {entry!r} must be a pair (logical axis name, mesh axes)")
        name, target = entry
        axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        unknown = [a for a in axes if a not in MESH_AXES]
        if unknown:
            raise ValueError(f"mesh.rules entry {entry!r}: unknown mesh axes {unknown}; expected some of {MESH_AXES}")
        checked.append((name, target if target is None or isinstance(target, str) else axes))
    names = [name for name, _ in checked]
    if len(set(names)) != len(names):
        raise ValueError(
            f"mesh.rules names a logical axis twice: {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    return tuple(checked)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all).

    Raises:
      ValueError: the sizes do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    if data * fsdp * tensor != len(devices):
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {data * fsdp * tensor} "
            f"does not match the {len(devices)} available devices"
        )
    return Mesh(np.asarray(devices).reshape(data, fsdp, tensor), MESH_AXES)


def logical_to_spec(
    logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules=DEFAULT_RULES
) -> PartitionSpec:
    """The PartitionSpec for one array with the given logical axis names and shape.

    Args:
      logical_axes: one logical axis name per dimension (None = replicated).
      shape: the array's shape.
      mesh: the mesh whose axis sizes decide what divides.
      rules: logical axis -> mesh axes.

    Returns:
      A `PartitionSpec` giving each dimension its rule's mesh axes, less those of size 1 and those an earlier
      dimension already uses; a dimension is replicated when no axis is left or its size does not divide.
    """
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(logical_axes, shape):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
        if not axes or size % int(np.prod([mesh.shape[a] for a in axes])):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def param_shardings(state: nnx.State, mesh: Mesh, rules=DEFAULT_RULES) -> nnx.State:
    """The parameter shardings of a model state by the rules.

    Args:
      state: an `nnx.State` of variables with `logical_axes` metadata.
      mesh: the device mesh.
      rules: logical axis -> mesh axes.

    Returns:
      A state-shaped tree of `NamedSharding`s; variables without `logical_axes` are replicated.
    """

    def sharding_of(var):
        axes = var.get_metadata().get("logical_axes") or (None,) * len(var.shape)
        return NamedSharding(mesh, logical_to_spec(axes, var.shape, mesh, rules))

    return jax.tree.map(sharding_of, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain_rows(x: jax.Array) -> jax.Array:
    """Constrains dimension 0 of `x` to the batch axes, inside a jitted function traced under `jax.set_mesh(mesh)`.

    `x` is returned unconstrained without a context mesh (or one lacking the batch axes), when the batch axes
    form a single shard, or when dimension 0 does not divide over them.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return x
    shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    if shards == 1 or x.shape[0] % shards:
        return x
    return jax.lax.with_sharding_constraint(x, PartitionSpec(BATCH_AXES, *([None] * (x.ndim - 1))))


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def mirror_shardings(tree, params, param_sharding_tree, mesh: Mesh):
    """Shardings for a tree that mirrors parameters (an optax state).

    A leaf whose path ends with a parameter's path and has that parameter's shape gets the parameter's
    sharding; every other leaf (step counts, scalars) is replicated.

    Args:
      tree: the mirroring tree, of arrays or `jax.ShapeDtypeStruct`s.
      params: the parameters, of arrays or `jax.ShapeDtypeStruct`s.
      param_sharding_tree: the parameters' `NamedSharding`s, in the structure of `params`.
      mesh: the mesh of the replicated sharding.

    Returns:
      A tree of `NamedSharding`s in the structure of `tree`.
    """
    param_leaves = jax.tree_util.tree_leaves_with_path(params)
    by_path = {
        _path_names(path): (tuple(leaf.shape), sharding)
        for (path, leaf), sharding in zip(param_leaves, jax.tree.leaves(param_sharding_tree))
    }
    replicated = NamedSharding(mesh, PartitionSpec())

    def sharding_of(path, leaf):
        names = _path_names(path)
        for start in range(len(names)):
            shape, sharding = by_path.get(names[start:], (None, None))
            if shape == tuple(leaf.shape):
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(sharding_of, tree)
