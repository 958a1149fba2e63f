"""Rotary embeddings: the vision tower's 2D (row, column) rotary and the decoder's multimodal M-RoPE.

Both use the rotate-half convention: angles for the first half of head_dim are repeated for the second half.
Angles are computed in fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rotate_half(x: jax.Array) -> jax.Array:
    """[x1, x2] -> [-x2, x1] over the last dim."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates `x` by the given angles (rotate-half convention), computing in the dtype of cos/sin.

    Args:
      x: `[..., length, heads, head_dim]`.
      cos: `[..., length, head_dim]`, broadcast over heads.
      sin: `[..., length, head_dim]`, broadcast over heads.

    Returns:
      The rotated `x`, same shape and dtype as `x`.
    """
    xc = x.astype(cos.dtype)
    out = xc * cos[..., None, :] + rotate_half(xc) * sin[..., None, :]
    return out.astype(x.dtype)


def vision_rotary(pos_hw: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """2D rotary for vision patches.

    Args:
      pos_hw: `int32[..., 2]` (row, column) of each patch in patch units.
      head_dim: width of one attention head, a multiple of 4.
      theta: rotary base.

    Returns:
      (cos, sin), each `float32[..., head_dim]`; dims [0, hd/4) rotate with the row, [hd/4, hd/2) with the
      column, and the second half repeats the first.
    """
    quarter = head_dim // 4
    inv_freq = 1.0 / (theta ** (np.arange(0, 2 * quarter, 2, dtype=np.float32) / (2 * quarter)))
    angles = pos_hw.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [..., 2, hd/4]
    angles = angles.reshape(*angles.shape[:-2], 2 * quarter)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def mrope_section_index(mrope_section: tuple[int, ...]) -> np.ndarray:
    """`int32[hd/2]`: for each of the head_dim/2 frequencies, which position row (0 t, 1 h, 2 w) drives it.

    Args:
      mrope_section: frequencies per row, in (t, h, w) order; they sum to head_dim/2.
    """
    return np.concatenate([np.full(n, i % 3, dtype=np.int32) for i, n in enumerate(mrope_section)])


def mrope(
    position_ids: jax.Array, head_dim: int, theta: float, mrope_section: tuple[int, ...], dtype
) -> tuple[jax.Array, jax.Array]:
    """Multimodal rotary angles for the decoder.

    Args:
      position_ids: `int32[3, batch, length]` (temporal, height, width rows).
      head_dim: width of one attention head.
      theta: rotary base.
      mrope_section: frequencies driven by each position row, in (t, h, w) order (see `mrope_section_index`).
      dtype: dtype of the returned tables (the angles are computed in fp32).

    Returns:
      (cos, sin), each `dtype[batch, length, head_dim]`.
    """
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))  # [hd/2]
    section = mrope_section_index(mrope_section)  # [hd/2]
    pos = position_ids.astype(jnp.float32)[section]  # [hd/2, batch, length]
    angles = jnp.moveaxis(pos, 0, -1) * jnp.asarray(inv_freq)  # [batch, length, hd/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)
