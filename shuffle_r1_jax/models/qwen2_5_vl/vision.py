"""The Qwen2.5-VL vision tower over a batch laid out by `layout.layout_vision`.

Shapes: rows B (an image or one temporal patch of a video each), patch slots per row
L = windows_per_row * window_patches, vision width D.
"""

from __future__ import annotations

import jax
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl.attention import dot_product_attention
from shuffle_r1_jax.models.qwen2_5_vl.config import VisionConfig
from shuffle_r1_jax.models.qwen2_5_vl.layers import Dense, RMSNorm, SwiGLU
from shuffle_r1_jax.models.qwen2_5_vl.rope import apply_rotary, vision_rotary


class VisionAttention(nnx.Module):
    """Bidirectional attention with a fused qkv projection (kernel `[D, 3, D]`, rows q, k, v head-major)."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, attention_impl: str, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.attention_impl = attention_impl
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = Dense((d,), (3, d), axes=("vision_embed", None, "vision_heads"), **kw)
        self.proj = Dense((d,), (d,), axes=("vision_heads", "vision_embed"), **kw)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, valid: jax.Array) -> jax.Array:
        """Attention within each of N segments of S patch slots.

        Args:
          x: `[N, S, D]`.
          cos: `float32[N, S, head_dim]` 2D rotary cosines.
          sin: `float32[N, S, head_dim]` 2D rotary sines.
          valid: `bool[N, S]` key mask, False at padding slots.

        Returns:
          `[N, S, D]`.
        """
        n, s, _ = x.shape
        qkv = self.qkv(x).reshape(n, s, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = dot_product_attention(
            q, k, v, valid[:, None, :], scale=self.head_dim**-0.5, implementation=self.attention_impl
        )
        return self.proj(out.reshape(n, s, -1))


class VisionBlock(nnx.Module):
    """Pre-norm block: x + attn(norm1(x)); x + mlp(norm2(x)); the MLP is SwiGLU with biases."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, attention_impl: str, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.attn = VisionAttention(cfg, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, rngs=rngs)
        self.norm2 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = SwiGLU(
            cfg.hidden_size,
            cfg.intermediate_size,
            embed_axis="vision_embed",
            mlp_axis="vision_mlp",
            use_bias=True,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, valid: jax.Array) -> jax.Array:
        """One block over N segments; attention stays inside each segment.

        Args:
          x: `[N, S, D]`.
          cos: `float32[N, S, head_dim]` 2D rotary cosines.
          sin: `float32[N, S, head_dim]` 2D rotary sines.
          valid: `bool[N, S]` key mask, False at padding slots.

        Returns:
          `[N, S, D]`.
        """
        x = x + self.attn(self.norm1(x), cos, sin, valid)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """RMSNorm per patch, concatenate the 4 patches of a merged token, Linear -> exact GELU -> Linear."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        wide = cfg.hidden_size * cfg.merge_unit
        self.merge_unit = cfg.merge_unit
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_q = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.fc1 = Dense((wide,), (wide,), axes=(None, "vision_mlp"), **kw)
        self.fc2 = Dense((wide,), (cfg.out_hidden_size,), axes=("vision_mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Merges every 4 consecutive slots of `x` `[B, L, D]` (L a multiple of 4) into `[B, L / 4, out_hidden]`."""
        b, length, d = x.shape
        x = self.ln_q(x).reshape(b, length // self.merge_unit, self.merge_unit * d)
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class VisionTower(nnx.Module):
    """Patch embedding -> blocks (window or full attention) -> merger."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, attention_impl: str, rngs: nnx.Rngs):
        self.cfg = cfg
        self.patch_embed = Dense(
            (cfg.patch_dim,),
            (cfg.hidden_size,),
            axes=("patch", "vision_embed"),
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.blocks = nnx.List(
            [
                VisionBlock(cfg, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, rngs=rngs)
                for _ in range(cfg.depth)
            ]
        )
        self.merger = PatchMerger(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, patches: jax.Array, patch_pos: jax.Array, patch_valid: jax.Array) -> jax.Array:
        """Encodes a laid-out image batch.

        Args:
          patches: `float[B, L, patch_dim]` patch rows.
          patch_pos: `int32[B, L, 2]` (row, column) of each patch in patch units.
          patch_valid: `bool[B, L]`, False at padding slots.

        Returns:
          Merged-token features `[B * L / 4, out_hidden]` (padding slots hold junk values).
        """
        b, length, _ = patches.shape
        wp = self.cfg.window_patches
        n_win = length // wp
        x = self.patch_embed(patches)
        cos, sin = vision_rotary(patch_pos, self.cfg.head_dim, self.cfg.rope_theta)

        def windowed(a: jax.Array) -> jax.Array:
            return a.reshape(b * n_win, wp, *a.shape[2:])

        win_cos, win_sin, win_valid = windowed(cos), windowed(sin), windowed(patch_valid)
        full = set(self.cfg.fullatt_block_indexes)
        for i, block in enumerate(self.blocks):
            if i in full:
                x = block(x, cos, sin, patch_valid)
            else:
                x = block(windowed(x), win_cos, win_sin, win_valid).reshape(x.shape)
        merged = self.merger(x)
        return merged.reshape(b * (length // self.cfg.merge_unit), -1)
