"""A prompt batch sampled in K calls (chunks), each row shard keeping its own rows.

The KV cache of one sampler call holds `prompts x n` rows; at the paper's batch (512 prompts x 16) that does not
fit a device, so the batch is sampled K prompts-per-call chunks at a time. The P rows of a global batch sit in
S contiguous row shards (S = the mesh's batch shards when the rows divide, else 1). Chunk j takes, from every
shard, that shard's j-th block of P / (S K) rows: each call spreads its rows over all devices and no row moves
between devices. `merge_chunks` puts the chunks' rollout rows back in prompt order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def take_chunk(x: jax.Array, index: jax.Array, *, chunks: int, shards: int, axis: int = 0) -> jax.Array:
    """Chunk `index` of `chunks` along `axis` of `x`: from every row shard, that shard's block `index`.

    Args:
      x: `[..., P, ...]` with P (dimension `axis`) divisible by shards * chunks.
      index: traced `int32[]`, the chunk j in [0, chunks).
      chunks: K, the number of chunks (static).
      shards: S, the number of contiguous row shards of `x` (static).
      axis: the row dimension.

    Returns:
      `[..., P / chunks, ...]`: shard s's block j (rows s * P / S + j * P / (S K) onwards of `x`) at rows
      s * P / (S K) onwards, so the chunk keeps S contiguous row shards.
    """
    rows = jnp.moveaxis(x, axis, 0)
    total = rows.shape[0]
    blocks = rows.reshape(shards, chunks, total // (shards * chunks), *rows.shape[1:])
    taken = jax.lax.dynamic_index_in_dim(blocks, index, axis=1, keepdims=False)
    return jnp.moveaxis(taken.reshape(total // chunks, *rows.shape[1:]), 0, axis)


def merge_chunks(parts: list[jax.Array], *, shards: int) -> jax.Array:
    """The inverse of `take_chunk` over all chunks, for row-major outputs.

    Args:
      parts: K arrays; parts[j] `[Q, ...]` holds chunk j's rows, Q = rows per chunk, any multiple of the
        prompts it holds (e.g. prompts x n rollouts, each prompt's rows consecutive).
      shards: S, the number of row shards the chunks were cut with.

    Returns:
      `[K * Q, ...]`, in the full batch's row order.
    """
    per_shard = [p.reshape(shards, p.shape[0] // shards, *p.shape[1:]) for p in parts]
    stacked = jnp.stack(per_shard, axis=1)
    return stacked.reshape(-1, *stacked.shape[3:])
