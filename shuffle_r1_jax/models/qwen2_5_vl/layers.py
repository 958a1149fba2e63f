"""Building blocks shared by the vision tower and the text decoder: dense layers, RMSNorm, SwiGLU, embeddings.

Every parameter is an `nnx.Param` with a `logical_axes` metadata tuple (one name per dimension, or None);
`shuffle_r1_jax.parallel.sharding` maps those names to mesh axes. Parameters are stored in `param_dtype`
and cast to the compute `dtype` at use.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl.lora import LoraConfig, dropped, maybe_for

Axes = tuple[str | None, ...]

_INIT_STD = 0.02


def _normal(rngs: nnx.Rngs, shape: Sequence[int], dtype) -> jax.Array:
    return (_INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Dense(nnx.Module):
    """y = x . kernel (+ bias), contracting the last `len(in_shape)` dims of x.

    Args:
      in_shape: the contracted trailing dims of the input.
      out_shape: the dims that replace them in the output.
      axes: logical axis names of the kernel's dims (`in_shape` then `out_shape`); the bias takes the
        `out_shape` names.
      use_bias: whether to add a bias (initialised to zeros).
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
      lora: a low-rank adapter's config, or None for none (`models.qwen2_5_vl.lora`).
      rngs: random streams for the N(0, 0.02^2) kernel initialisation.

    Attributes:
      kernel: `param_dtype[*in_shape, *out_shape]`.
      bias: `param_dtype[*out_shape]`, or None without `use_bias`.
      lora: an `nnx.LoRA` over the flattened dims (`lora_a` `float32[prod(in_shape), r]` with logical axes (first
        input axis, "lora_rank"), `lora_b` `float32[r, prod(out_shape)]` with ("lora_rank", first output axis)), or
        None.
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
        lora: LoraConfig | None = None,
        rngs: nnx.Rngs,
    ):
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        self.dtype = dtype
        self.lora_config = lora
        self.lora = (
            nnx.LoRA(
                math.prod(self.in_shape),
                lora.rank,
                math.prod(self.out_shape),
                dtype=dtype,
                param_dtype=jnp.float32,
                a_metadata={"logical_axes": (axes[0], "lora_rank")},
                b_metadata={"logical_axes": ("lora_rank", axes[len(self.in_shape)])},
                rngs=rngs,
            )
            if lora is not None
            else None
        )
        self.kernel = nnx.Param(_normal(rngs, self.in_shape + self.out_shape, param_dtype), logical_axes=axes)
        self.bias = (
            nnx.Param(jnp.zeros(self.out_shape, param_dtype), logical_axes=axes[len(self.in_shape) :])
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layer to `x` `[..., *in_shape]`, giving `dtype[..., *out_shape]`."""
        n_in = len(self.in_shape)
        x = x.astype(self.dtype)
        kernel = self.kernel[...].astype(self.dtype)
        y = jax.lax.dot_general(x, kernel, (((tuple(range(x.ndim - n_in, x.ndim))), tuple(range(n_in))), ((), ())))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            flat = dropped(x, self.lora_config.dropout).reshape(*x.shape[: x.ndim - n_in], -1)
            y = y + self.lora_config.scale * self.lora(flat).reshape(y.shape).astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """Root-mean-square norm computed in fp32, cast back to the input dtype, then scaled (weight only).

    Args:
      dim: size of the normalised last dim.
      eps: added to the mean square before the reciprocal square root.
      param_dtype: storage dtype of the scale.
      axis_name: logical axis name of the scale.

    Attributes:
      scale: `param_dtype[dim]`, initialised to ones.
    """

    def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32, axis_name: str = "norm"):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=(axis_name,))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalises `x` `[..., dim]` over its last dim; the result has x's shape and dtype."""
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)); biases optional (the vision tower has them, the decoder does not).

    Args:
      dim: input and output width.
      hidden: width of the gate and up projections.
      embed_axis: logical axis name of the `dim` dims.
      mlp_axis: logical axis name of the `hidden` dims.
      use_bias: whether the three projections have biases.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
      lora: adapters for the projections `lora.targets` names, or None.
      rngs: random streams for the initialisation.
    """

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
        lora: LoraConfig | None = None,
        rngs: nnx.Rngs,
    ):
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        axes_in, axes_out = (embed_axis, mlp_axis), (mlp_axis, embed_axis)
        self.gate_proj = Dense((dim,), (hidden,), axes=axes_in, lora=maybe_for(lora, "gate_proj"), **kw)
        self.up_proj = Dense((dim,), (hidden,), axes=axes_in, lora=maybe_for(lora, "up_proj"), **kw)
        self.down_proj = Dense((hidden,), (dim,), axes=axes_out, lora=maybe_for(lora, "down_proj"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the MLP to `x` `[..., dim]`, giving `dtype[..., dim]`."""
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Embed(nnx.Module):
    """Token embedding table; `attend` uses it as a tied output projection.

    Attributes:
      embedding: `param_dtype[vocab, dim]`, logical axes ("vocab", "embed").
    """

    def __init__(self, vocab: int, dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = nnx.Param(_normal(rngs, (vocab, dim), param_dtype), logical_axes=("vocab", "embed"))

    def __call__(self, ids: jax.Array) -> jax.Array:
        """The embeddings `dtype[..., dim]` of token ids `int[...]`."""
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits `dtype[..., vocab]` of `x` `[..., dim]` against every embedding row."""
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding[...].astype(self.dtype))
