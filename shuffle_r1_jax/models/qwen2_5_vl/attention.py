"""Scaled dot-product attention with grouped key/value heads and a boolean mask.

Implementations (the `attention_impl` of the model and `model.attention_impl` of a run's config):
  * "xla": einsums with an fp32 softmax; runs everywhere; its score tensor is `[batch, heads, q, k]`. The exact
    reference every other implementation is tested against.
  * "chunked": the same maths one block of `QUERY_CHUNK` queries at a time; its score tensor is
    `[batch, heads, QUERY_CHUNK, k]`, so memory grows linearly with the sequence on any backend.
  * "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, a fused kernel on NVIDIA GPUs whose
    memory does not grow with q * k.
  * "tokamax": tokamax's best fused kernel for the backend (Pallas flash attention on GPU), its XLA implementation
    where no kernel takes the inputs; needs `pip install -e ".[kernels]"` (`fused_attention.py`).
  * "splash": JAX's Pallas splash attention, the fused kernel for TPU, for the vision tower's key-only masks and
    the decoder's causal padded masks; other shapes (decoding over a KV cache, short sequences) use "chunked"
    (`fused_attention.py`). Off TPU it runs interpreted, for tests only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shuffle_r1_jax.models.qwen2_5_vl.fused_attention import (
    splash_attention,
    splash_supports,
    tokamax_attention,
)

IMPLEMENTATIONS = ("xla", "chunked", "cudnn", "tokamax", "splash")
QUERY_CHUNK = 512


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    scale: float,
    implementation: str = "xla",
) -> jax.Array:
    """Attention of q over k/v.

    A query whose keys are all masked gets a finite (meaningless) output rather than NaN (with "splash", a
    square mask that is not causal with padded keys gives NaN rows instead; `fused_attention.py`).

    Args:
      q: `[batch, q_len, heads, head_dim]`, heads a multiple of kv_heads.
      k: `[batch, k_len, kv_heads, head_dim]`.
      v: `[batch, k_len, kv_heads, head_dim]`.
      mask: `bool[batch, q_len, k_len]`, True where attention is allowed; its q_len dim may be 1 (a key-only
        mask shared by every query).
      scale: multiplies the q . k scores (usually head_dim ** -0.5).
      implementation: one of `IMPLEMENTATIONS` (see the module docstring).

    Returns:
      `q.dtype[batch, q_len, heads, head_dim]`.

    Raises:
      ValueError: naming the value when `implementation` is unknown.
      ImportError: "tokamax" without the tokamax package installed.
    """
    if implementation == "xla":
        return _xla_attention(q, k, v, mask, scale)
    if implementation == "chunked":
        return _chunked_attention(q, k, v, mask, scale)
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=scale, implementation="cudnn").astype(
            q.dtype
        )
    if implementation == "tokamax":
        return tokamax_attention(q, k, v, mask, scale=scale)
    if implementation == "splash":
        if splash_supports(q, k, mask):
            return splash_attention(q, k, v, mask, scale=scale)
        return _chunked_attention(q, k, v, mask, scale)
    raise ValueError(f"attention implementation = {implementation!r}; expected one of {IMPLEMENTATIONS}")


def _chunked_attention(q, k, v, mask, scale):
    """Exact attention one block of QUERY_CHUNK queries at a time (a sequential `lax.map`)."""
    q_len = q.shape[1]
    if q_len <= QUERY_CHUNK:
        return _xla_attention(q, k, v, mask, scale)
    n_chunks = -(-q_len // QUERY_CHUNK)
    pad = n_chunks * QUERY_CHUNK - q_len
    q_blocks = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    q_blocks = jnp.moveaxis(q_blocks.reshape(q.shape[0], n_chunks, QUERY_CHUNK, *q.shape[2:]), 1, 0)
    if mask.shape[1] == 1:  # a key-only mask is shared by every query block
        out = jax.lax.map(lambda qb: _xla_attention(qb, k, v, mask, scale), q_blocks)
    else:
        m = jnp.pad(mask, ((0, 0), (0, pad), (0, 0)))
        m_blocks = jnp.moveaxis(m.reshape(mask.shape[0], n_chunks, QUERY_CHUNK, mask.shape[2]), 1, 0)
        out = jax.lax.map(lambda args: _xla_attention(args[0], k, v, args[1], scale), (q_blocks, m_blocks))
    out = jnp.moveaxis(out, 0, 1).reshape(q.shape[0], n_chunks * QUERY_CHUNK, *q.shape[2:])
    return out[:, :q_len]


def _xla_attention(q, k, v, mask, scale):
    batch, q_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    groups = heads // kv_heads
    qg = q.reshape(batch, q_len, kv_heads, groups, head_dim)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", qg, k).astype(jnp.float32) * scale
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v)
    return out.reshape(batch, q_len, heads, head_dim)
