"""Building blocks shared by the vision tower and the text decoder: dense layers, RMSNorm, SwiGLU, embeddings.

Every parameter is an `nnx.Param` with a `logical_axes` metadata tuple (one name per dimension, or None);
`shuffle_r1_jax.parallel.sharding` maps those names to mesh axes. Parameters are stored in `param_dtype`
and cast to the compute `dtype` at use.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]

_INIT_STD = 0.02


def _normal(rngs: nnx.Rngs, shape: Sequence[int], dtype) -> jax.Array:
    return (_INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Dense(nnx.Module):
    """y = x . kernel (+ bias), contracting the last `len(in_shape)` dims of x.

    kernel: `param_dtype[*in_shape, *out_shape]`, bias: `param_dtype[*out_shape]`.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        *,
        axes: Axes,
        use_bias: bool,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.dtype = dtype
        self.kernel = nnx.Param(_normal(rngs, self.in_shape + self.out_shape, param_dtype), logical_axes=axes)
        self.bias = (
            nnx.Param(jnp.zeros(self.out_shape, param_dtype), logical_axes=axes[len(self.in_shape) :])
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: `[..., *in_shape]` -> `dtype[..., *out_shape]`."""
        n_in = len(self.in_shape)
        x = x.astype(self.dtype)
        kernel = self.kernel[...].astype(self.dtype)
        y = jax.lax.dot_general(x, kernel, (((tuple(range(x.ndim - n_in, x.ndim))), tuple(range(n_in))), ((), ())))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """Root-mean-square norm computed in fp32, cast back to the input dtype, then scaled (weight only).

    scale: `param_dtype[dim]`.
    """

    def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32, axis_name: str = "norm"):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=(axis_name,))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: `[..., dim]` -> same shape and dtype."""
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)); biases optional (the vision tower has them, the decoder does not)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        embed_axis: str,
        mlp_axis: str,
        use_bias: bool,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Dense((dim,), (hidden,), axes=(embed_axis, mlp_axis), **kw)
        self.up_proj = Dense((dim,), (hidden,), axes=(embed_axis, mlp_axis), **kw)
        self.down_proj = Dense((hidden,), (dim,), axes=(mlp_axis, embed_axis), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: `[..., dim]` -> `dtype[..., dim]`."""
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Embed(nnx.Module):
    """Token embedding table `param_dtype[vocab, dim]`; `attend` uses it as a tied output projection."""

    def __init__(self, vocab: int, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = nnx.Param(_normal(rngs, (vocab, dim), param_dtype), logical_axes=("vocab", "embed"))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """ids: `int[...]` -> `dtype[..., dim]`."""
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """x: `[..., dim]` -> logits `dtype[..., vocab]`."""
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding[...].astype(self.dtype))
