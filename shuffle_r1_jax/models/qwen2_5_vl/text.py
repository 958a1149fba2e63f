"""The Qwen2 text decoder with grouped-query attention and M-RoPE.

Shapes: batch B, new tokens S, attended keys T (S without a cache, the cache capacity with one),
hidden H, heads N, kv heads K, head_dim Dh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl.attention import dot_product_attention
from shuffle_r1_jax.models.qwen2_5_vl.cascade_attention import SharedPrefixCache
from shuffle_r1_jax.models.qwen2_5_vl.config import TextConfig
from shuffle_r1_jax.models.qwen2_5_vl.kv_cache import LayerKVCache
from shuffle_r1_jax.models.qwen2_5_vl.layers import Dense, RMSNorm, SwiGLU
from shuffle_r1_jax.models.qwen2_5_vl.lora import LoraConfig, maybe_for
from shuffle_r1_jax.models.qwen2_5_vl.rope import apply_rotary


class DecoderAttention(nnx.Module):
    """q/k/v projections with bias (kernels `[H, heads, Dh]`), o_proj without bias, GQA under the given mask; the
    projections `lora.targets` names carry low-rank adapters."""

    def __init__(
        self,
        cfg: TextConfig,
        *,
        dtype,
        param_dtype,
        attention_impl: str,
        lora: LoraConfig | None = None,
        rngs: nnx.Rngs,
    ):
        h, n, k, dh = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.head_dim = dh
        self.attention_impl = attention_impl
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        q_axes, kv_axes, o_axes = (
            ("embed", "q_heads", "head_dim"),
            ("embed", "kv_heads", "head_dim"),
            ("q_heads", "head_dim", "embed"),
        )
        self.q_proj = Dense((h,), (n, dh), axes=q_axes, use_bias=True, lora=maybe_for(lora, "q_proj"), **kw)
        self.k_proj = Dense((h,), (k, dh), axes=kv_axes, use_bias=True, lora=maybe_for(lora, "k_proj"), **kw)
        self.v_proj = Dense((h,), (k, dh), axes=kv_axes, use_bias=True, lora=maybe_for(lora, "v_proj"), **kw)
        self.o_proj = Dense((n, dh), (h,), axes=o_axes, use_bias=False, lora=maybe_for(lora, "o_proj"), **kw)

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        mask: jax.Array | None,
        cache: LayerKVCache | SharedPrefixCache | None = None,
    ) -> tuple[jax.Array, LayerKVCache | SharedPrefixCache | None]:
        """Attention of the S new tokens.

        Without a cache T = S; with a `LayerKVCache`, the new keys/values are written at `cache.end` and the
        queries attend over the whole cache (T = capacity; the mask hides unfilled and padded slots). With a
        `SharedPrefixCache` (one decode step, S = 1), the cache writes the new key/value and attends over the
        prompt and the response so far itself (`cascade_attention`); `mask` is then unused (None).

        Args:
          x: `[B, S, H]` normalised hidden states.
          cos: `[B, S, Dh]` M-RoPE cosines of the new positions.
          sin: `[B, S, Dh]` M-RoPE sines.
          mask: `bool[B, S, T]`, True where a query may attend to a key; None with a `SharedPrefixCache`.
          cache: this layer's key/value cache, or None.

        Returns:
          (`[B, S, H]`, the updated cache or None).
        """
        q = apply_rotary(self.q_proj(x), cos, sin)
        k = apply_rotary(self.k_proj(x), cos, sin)
        v = self.v_proj(x)
        if isinstance(cache, SharedPrefixCache):
            out, cache = cache.attend(q, k, v, scale=self.head_dim**-0.5)
            return self.o_proj(out), cache
        if cache is not None:
            cache = cache.update(k, v)
            k, v = cache.k.astype(q.dtype), cache.v.astype(q.dtype)
        out = dot_product_attention(q, k, v, mask, scale=self.head_dim**-0.5, implementation=self.attention_impl)
        return self.o_proj(out), cache


class DecoderLayer(nnx.Module):
    """x + attn(input_layernorm(x)); x + mlp(post_attention_layernorm(x)); `lora` adapts its projections."""

    def __init__(
        self,
        cfg: TextConfig,
        *,
        dtype,
        param_dtype,
        attention_impl: str,
        lora: LoraConfig | None = None,
        rngs: nnx.Rngs,
    ):
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = DecoderAttention(
            cfg, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, lora=lora, rngs=rngs
        )
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = SwiGLU(
            cfg.hidden_size,
            cfg.intermediate_size,
            embed_axis="embed",
            mlp_axis="mlp",
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            lora=lora,
            rngs=rngs,
        )

    def __call__(self, x, cos, sin, mask, cache: LayerKVCache | None = None):
        """One decoder layer.

        Args:
          x: `[B, S, H]` hidden states.
          cos: `[B, S, Dh]` M-RoPE cosines.
          sin: `[B, S, Dh]` M-RoPE sines.
          mask: `bool[B, S, T]`, True where a query may attend to a key; None with a `SharedPrefixCache`.
          cache: this layer's key/value cache (`LayerKVCache` or `SharedPrefixCache`), or None.

        Returns:
          (`[B, S, H]`, the updated cache or None).
        """
        attn, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), cache


def causal_mask(attention_mask: jax.Array) -> jax.Array:
    """`bool[B, S, S]`: query i sees key j when j <= i and key j is not padding.

    Args:
      attention_mask: `[B, S]`, nonzero at real tokens, 0 at padding.
    """
    length = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    return causal[None] & attention_mask.astype(bool)[:, None, :]


def segment_causal_mask(segment_ids: jax.Array) -> jax.Array:
    """`bool[B, S, S]` of packed rows: query i sees key j when j <= i and both belong to the same sequence.

    Args:
      segment_ids: `int32[B, S]`, the sequence of each position (> 0), 0 at unused positions (which see nothing
        and are seen by nothing).
    """
    length = segment_ids.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal[None] & same & (segment_ids > 0)[:, None, :]
