"""A static-shape key/value cache for one decoder layer.

The cache holds `capacity` positions; `end` is how many are filled (the same for the whole batch: prompts are
left-padded to one length and every sequence advances one token per decode step).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerKVCache:
    """One decoder layer's keys and values for `capacity` positions.

    Attributes:
      k: `dtype[batch, capacity, kv_heads, head_dim]` keys.
      v: `dtype[batch, capacity, kv_heads, head_dim]` values.
      end: `int32[]` positions filled so far.
    """

    k: jax.Array
    v: jax.Array
    end: jax.Array

    @classmethod
    def empty(cls, batch: int, capacity: int, kv_heads: int, head_dim: int, dtype) -> "LayerKVCache":
        """A zero-filled cache with nothing filled (`end` = 0)."""
        zeros = jnp.zeros((batch, capacity, kv_heads, head_dim), dtype)
        return cls(k=zeros, v=zeros, end=jnp.zeros((), jnp.int32))

    def update(self, k_new: jax.Array, v_new: jax.Array) -> "LayerKVCache":
        """Writes new keys/values at `end` and advances it by `steps`.

        Args:
          k_new: `[batch, steps, kv_heads, head_dim]` keys, cast to the cache dtype.
          v_new: `[batch, steps, kv_heads, head_dim]` values, cast to the cache dtype.

        Returns:
          The updated cache.
        """
        start = (0, self.end, 0, 0)
        return LayerKVCache(
            k=jax.lax.dynamic_update_slice(self.k, k_new.astype(self.k.dtype), start),
            v=jax.lax.dynamic_update_slice(self.v, v_new.astype(self.v.dtype), start),
            end=self.end + k_new.shape[1],
        )
