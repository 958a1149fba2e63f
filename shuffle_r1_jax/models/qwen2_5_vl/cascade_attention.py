"""Decode attention of n samples per prompt over one shared prompt cache and each sample's own response cache.

A decode step of row r (prompt p = r // n, sample r % n) attends over [the prompt's keys | the row's response keys
written so far]. The two parts are computed apart and merged exactly (cascade, or shared-prefix, attention):
  * prefix: the n samples' queries of prompt p are stacked as n * G query rows per kv head (G = heads / kv heads)
    over that prompt's Lp keys, one matmul per prompt: the prompt's keys and values are read once per prompt,
    not once per sample;
  * suffix: row r's G queries per kv head over its own response keys, `block` keys at a time, in a loop of
    ceil(length / block) blocks: the cost grows with the tokens written, not with the cache's capacity.
Each part yields a `Partial`: unnormalised outputs o = sum_j exp(s_j - m) v_j, the largest score m and the sum
l = sum_j exp(s_j - m). `merge` combines two by log-sum-exp: with M = max(m1, m2),
o = o1 e^(m1 - M) + o2 e^(m2 - M) and l = l1 e^(m1 - M) + l2 e^(m2 - M); the attention output is o / l. The
suffix loop is the same merge applied block after block (an online softmax).

Shapes: prompts P, samples per prompt n, rows R = P * n, prompt keys Lp, response capacity S (a multiple of the
block), heads N, kv heads K, G = N / K, head_dim Dh. Scores, maxima, sums and outputs are fp32.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 64


class Partial(NamedTuple):
    """Attention over part of the keys, before normalisation.

    Attributes:
      out: `float32[..., Dh]`, sum_j exp(s_j - max) v_j.
      max: `float32[...]`, the largest score (-inf when every key is masked).
      sum: `float32[...]`, sum_j exp(s_j - max) (0 when every key is masked).
    """

    out: jax.Array
    max: jax.Array
    sum: jax.Array


def _finite_or_zero(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def partial_attention(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, scale: float) -> Partial:
    """Unnormalised attention of M query rows per kv head over T keys.

    Args:
      q: `[B, K, M, Dh]` queries.
      k: `[B, T, K, Dh]` keys.
      v: `[B, T, K, Dh]` values.
      valid: `bool[B, T]`, the keys every query of the batch row may attend to.
      scale: multiplies the q . k scores.

    Returns:
      A `Partial` with out `float32[B, K, M, Dh]`, max and sum `float32[B, K, M]`.
    """
    scores = jnp.einsum("bkmd,btkd->bkmt", q, k.astype(q.dtype), preferred_element_type=jnp.float32) * scale
    scores = jnp.where(valid[:, None, None, :], scores, -jnp.inf)
    top = jnp.max(scores, axis=-1)
    weights = jnp.exp(scores - _finite_or_zero(top)[..., None])
    out = jnp.einsum("bkmt,btkd->bkmd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return Partial(out, top, weights.sum(-1))


def merge(a: Partial, b: Partial) -> Partial:
    """The `Partial` of the union of two disjoint key sets (same shapes)."""
    top = jnp.maximum(a.max, b.max)
    shift = _finite_or_zero(top)
    wa, wb = jnp.exp(a.max - shift), jnp.exp(b.max - shift)
    return Partial(a.out * wa[..., None] + b.out * wb[..., None], top, a.sum * wa + b.sum * wb)


def prefix_partial(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, scale: float) -> Partial:
    """Each row's attention over its prompt's keys, the n samples of a prompt in one matmul.

    Args:
      q: `[R, N, Dh]` one query per row, rows of a prompt consecutive.
      k: `[P, Lp, K, Dh]` prompt keys.
      v: `[P, Lp, K, Dh]` prompt values.
      valid: `bool[P, Lp]`, False at prompt padding.
      scale: multiplies the q . k scores.

    Returns:
      A `Partial` with out `float32[R, K, G, Dh]`, max and sum `float32[R, K, G]`.
    """
    rows, heads, head_dim = q.shape
    prompts, _, kv_heads, _ = k.shape
    n, groups = rows // prompts, heads // kv_heads
    stacked = q.reshape(prompts, n, kv_heads, groups, head_dim).transpose(0, 2, 1, 3, 4)
    part = partial_attention(stacked.reshape(prompts, kv_heads, n * groups, head_dim), k, v, valid, scale)

    def per_row(x):
        x = x.reshape(prompts, kv_heads, n, groups, *x.shape[3:])
        return jnp.moveaxis(x, 2, 1).reshape(rows, kv_heads, groups, *x.shape[4:])

    return Partial(per_row(part.out), per_row(part.max), per_row(part.sum))


def suffix_partial(q: jax.Array, k: jax.Array, v: jax.Array, length: jax.Array, *, block: int, scale: float) -> Partial:
    """Each row's attention over its first `length` response keys, one block at a time.

    Runs ceil(length / block) blocks (a loop with a traced trip count); keys at or past `length` in the last
    block are masked.

    Args:
      q: `[R, N, Dh]` one query per row.
      k: `[R, S, K, Dh]` response keys, S a multiple of `block`.
      v: `[R, S, K, Dh]` response values.
      length: `int32[]` response positions written (>= 1).
      block: keys per block (static).
      scale: multiplies the q . k scores.

    Returns:
      A `Partial` with out `float32[R, K, G, Dh]`, max and sum `float32[R, K, G]`.
    """
    rows, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    grouped = q.reshape(rows, kv_heads, heads // kv_heads, head_dim)

    def add_block(index, acc: Partial) -> Partial:
        start = index * block
        kb = jax.lax.dynamic_slice_in_dim(k, start, block, axis=1)
        vb = jax.lax.dynamic_slice_in_dim(v, start, block, axis=1)
        valid = jnp.broadcast_to(start + jnp.arange(block) < length, (rows, block))
        return merge(acc, partial_attention(grouped, kb, vb, valid, scale))

    stats_shape = grouped.shape[:-1]
    empty = Partial(
        jnp.zeros(grouped.shape, jnp.float32),
        jnp.full(stats_shape, -jnp.inf, jnp.float32),
        jnp.zeros(stats_shape, jnp.float32),
    )
    return jax.lax.fori_loop(0, (length + block - 1) // block, add_block, empty)


def suffix_layout(max_new: int, block: int) -> tuple[int, int]:
    """(block, capacity) of a response cache for `max_new` tokens: the block shrinks to `max_new` when that is
    smaller, and the capacity is `max_new` rounded up to a whole number of blocks.

    Raises:
      ValueError: naming the value when `block` or `max_new` is below 1.
    """
    if block < 1 or max_new < 1:
        raise ValueError(f"decode block = {block} and max_new = {max_new} must be >= 1")
    block = min(block, max_new)
    return block, -(-max_new // block) * block


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SharedPrefixCache:
    """One decoder layer's cache for n samples per prompt: the prompt's keys once, each row's response keys.

    Attributes:
      prefix_k: `dtype[P, Lp, K, Dh]` prompt keys (written by the prefill).
      prefix_v: `dtype[P, Lp, K, Dh]` prompt values.
      prefix_valid: `bool[P, Lp]`, False at prompt padding.
      suffix_k: `dtype[R, S, K, Dh]` response keys, R = P * n rows (prompt p's samples at rows p * n onwards).
      suffix_v: `dtype[R, S, K, Dh]` response values.
      length: `int32[]` response positions written so far (the same for every row).
      block: response keys per block of the suffix loop (static; S is a multiple of it).
    """

    prefix_k: jax.Array
    prefix_v: jax.Array
    prefix_valid: jax.Array
    suffix_k: jax.Array
    suffix_v: jax.Array
    length: jax.Array
    block: int = dataclasses.field(metadata=dict(static=True))

    def attend(self, q: jax.Array, k_new: jax.Array, v_new: jax.Array, *, scale: float):
        """Writes one new key/value per row at `length` and attends over the prompt and the response so far.

        Args:
          q: `[R, 1, N, Dh]` the new token's queries.
          k_new: `[R, 1, K, Dh]` its keys, cast to the cache dtype.
          v_new: `[R, 1, K, Dh]` its values.
          scale: multiplies the q . k scores.

        Returns:
          (`q.dtype[R, 1, N, Dh]` attention outputs, the cache with `length` advanced by one).
        """
        start = (0, self.length, 0, 0)
        suffix_k = jax.lax.dynamic_update_slice(self.suffix_k, k_new.astype(self.suffix_k.dtype), start)
        suffix_v = jax.lax.dynamic_update_slice(self.suffix_v, v_new.astype(self.suffix_v.dtype), start)
        length = self.length + 1
        query = q[:, 0]
        prefix = prefix_partial(query, self.prefix_k, self.prefix_v, self.prefix_valid, scale)
        suffix = suffix_partial(query, suffix_k, suffix_v, length, block=self.block, scale=scale)
        total = merge(prefix, suffix)
        out = (total.out / total.sum[..., None]).reshape(q.shape).astype(q.dtype)
        return out, dataclasses.replace(self, suffix_k=suffix_k, suffix_v=suffix_v, length=length)
