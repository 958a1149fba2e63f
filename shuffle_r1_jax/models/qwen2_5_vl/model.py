"""Qwen2.5-VL for images and videos: vision tower + Qwen2 decoder + (tied or untied) lm_head, and `forward_logits`.

The jitted forward (`forward_jit`) takes the model split into (graphdef, state): parameters are arguments,
never constants baked into the program. `forward_logits` is the host-side convenience entry point that takes
arrays exactly as the HF processor produces them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl import layout
from shuffle_r1_jax.models.qwen2_5_vl.attention import IMPLEMENTATIONS
from shuffle_r1_jax.models.qwen2_5_vl.cascade_attention import SharedPrefixCache
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.models.qwen2_5_vl.kv_cache import LayerKVCache
from shuffle_r1_jax.models.qwen2_5_vl.layers import Dense, Embed, RMSNorm
from shuffle_r1_jax.models.qwen2_5_vl.lora import LoraConfig
from shuffle_r1_jax.models.qwen2_5_vl.rope import mrope
from shuffle_r1_jax.models.qwen2_5_vl.text import DecoderLayer, causal_mask
from shuffle_r1_jax.models.qwen2_5_vl.vision import VisionTower


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisionInputs:
    """The arrays of a `layout.VisionBatch` as a pytree for jitted functions (B rows: images and video temporal
    patches, L patch slots each).

    Attributes:
      patches: `[B, L, patch_dim]` patch rows.
      patch_pos: `int32[B, L, 2]` (row, column) of each patch in patch units.
      patch_valid: `bool[B, L]`, False at padding slots.
    """

    patches: jax.Array
    patch_pos: jax.Array
    patch_valid: jax.Array

    @classmethod
    def from_batch(cls, batch: layout.VisionBatch) -> "VisionInputs":
        """The arrays of `batch` (its `windows_per_row` follows from the slot count)."""
        return cls(batch.patches, batch.patch_pos, batch.patch_valid)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """A prepared batch of B prompts of S positions (see `prepare_inputs`).

    Attributes:
      input_ids: `int32[B, S]` token ids.
      attention_mask: `int32[B, S]`, 1 at real tokens, 0 at padding.
      position_ids: `int32[3, B, S]` M-RoPE positions (temporal, height, width rows).
      rope_deltas: `int32[B]`, max position + 1 - valid tokens of each row (see `layout.mrope_positions`).
      vision: the laid-out images and videos, or None for a text-only batch.
      vision_token_slot: `int32[B, S]` merged-token slot of each image or video token, -1 elsewhere; None
        without images and videos.
    """

    input_ids: jax.Array
    attention_mask: jax.Array
    position_ids: jax.Array
    rope_deltas: jax.Array
    vision: VisionInputs | None = None
    vision_token_slot: jax.Array | None = None

    def take_rows(self, rows) -> "ModelInputs":
        """The prompts `rows` of this batch.

        Args:
          rows: `int[K]` row indices, repeats allowed.

        Returns:
          A `ModelInputs` of K rows. The vision batch is kept whole, so the taken rows' vision slots still point at
          their images and videos.
        """
        return dataclasses.replace(
            self,
            input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows],
            position_ids=self.position_ids[:, rows],
            rope_deltas=self.rope_deltas[rows],
            vision_token_slot=None if self.vision_token_slot is None else self.vision_token_slot[rows],
        )


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _run_layer(layer, x, cos, sin, mask, cache):
    return layer(x, cos, sin, mask, cache)


class Qwen25VL(nnx.Module):
    """The combined model: vision tower, Qwen2 decoder and (tied or untied) output projection.

    Args:
      config: the model's hyper-parameters.
      dtype: compute dtype.
      param_dtype: storage dtype of the parameters.
      attention_impl: one of `attention.IMPLEMENTATIONS` (its module docstring), used by the vision tower
        and the decoder.
      remat: gradient checkpointing of each decoder layer: "none", "full" (recompute everything in the backward
        pass) or "dots" (keep matmul outputs, recompute the rest). The saving depends on the compiler scheduling
        the recomputation late: the CPU backend's default (concurrency-optimized) scheduler runs it beside the
        forward pass, so on CPU no memory is saved unless compiled with
        `compiler_options={"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}`.
      lora: low-rank adapters on the decoder's projections (`models.qwen2_5_vl.lora`), or None.
      rngs: random streams for the parameter initialisation.

    Raises:
      ValueError: naming the value when `attention_impl` or `remat` is unknown.
    """

    def __init__(
        self,
        config: Qwen25VLConfig,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        attention_impl: str = "xla",
        remat: str = "none",
        lora: LoraConfig | None = None,
        rngs: nnx.Rngs,
    ):
        if attention_impl not in IMPLEMENTATIONS:
            raise ValueError(f"attention_impl = {attention_impl!r}; expected one of {IMPLEMENTATIONS}")
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat = {remat!r}; expected one of {tuple(REMAT_POLICIES)}")
        self.remat = remat
        t = config.text
        self.config = config
        self.dtype = dtype
        self.lora_config = lora
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.visual = VisionTower(config.vision, attention_impl=attention_impl, **kw)
        self.embed_tokens = Embed(t.vocab_size, t.hidden_size, **kw)
        self.layers = nnx.List(
            [DecoderLayer(t, attention_impl=attention_impl, lora=lora, **kw) for _ in range(t.num_hidden_layers)]
        )
        self.norm = RMSNorm(t.hidden_size, eps=t.rms_norm_eps, param_dtype=param_dtype)
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Dense((t.hidden_size,), (t.vocab_size,), axes=("embed", "vocab"), use_bias=False, **kw)
        )

    def image_features(self, vision: VisionInputs) -> jax.Array:
        """Merged-token features of a laid-out vision batch (images and videos): `dtype[rows * slots / 4, H]`."""
        return self.visual(vision.patches, vision.patch_pos, vision.patch_valid).astype(self.dtype)

    def embed(
        self,
        input_ids: jax.Array,
        vision: VisionInputs | None = None,
        vision_token_slot: jax.Array | None = None,
        image_features: jax.Array | None = None,
    ) -> jax.Array:
        """Token embeddings with vision features placed at image- and video-token positions.

        Args:
          input_ids: `int32[B, S]`.
          vision: the laid-out images and videos; used when `image_features` is None.
          vision_token_slot: `int32[B, S]` merged-token slot of each image or video token, -1 for text; needed
            whenever there are images or videos.
          image_features: precomputed merged-token features `[rows * slots / 4, H]` (e.g. from a frozen vision
            tower); when given, the vision tower is not run.

        Returns:
          `dtype[B, S, H]`; plain token embeddings when neither `vision` nor `image_features` is given.
        """
        embeds = self.embed_tokens(input_ids)
        if image_features is None and vision is None:
            return embeds
        features = self.image_features(vision) if image_features is None else image_features.astype(embeds.dtype)
        image_embeds = jnp.take(features, jnp.maximum(vision_token_slot, 0), axis=0)
        return jnp.where((vision_token_slot >= 0)[..., None], image_embeds, embeds)

    def decode(
        self,
        embeds: jax.Array,
        position_ids: jax.Array,
        mask: jax.Array | None,
        caches: list[LayerKVCache] | list[SharedPrefixCache] | None = None,
    ) -> tuple[jax.Array, list[LayerKVCache] | list[SharedPrefixCache] | None]:
        """Runs the decoder layers and the final norm.

        Args:
          embeds: `[B, S, H]` input embeddings.
          position_ids: `int32[3, B, S]` M-RoPE positions.
          mask: `bool[B, S, T]`, True where a query may attend to a key (T = S without caches, the cache capacity
            with `LayerKVCache`s); None with `SharedPrefixCache`s, which hold their own masks.
          caches: one `LayerKVCache` or `SharedPrefixCache` per decoder layer, or None.

        Returns:
          (hidden `[B, S, H]`, the updated caches, or None when `caches` is None).
        """
        t = self.config.text
        cos, sin = mrope(position_ids, t.head_dim, t.rope_theta, t.mrope_section, self.dtype)
        x = embeds
        new_caches = []
        run_layer = _run_layer
        if self.remat != "none":
            run_layer = nnx.remat(_run_layer, policy=REMAT_POLICIES[self.remat])
        for i, layer in enumerate(self.layers):
            x, cache = run_layer(layer, x, cos, sin, mask, None if caches is None else caches[i])
            new_caches.append(cache)
        return self.norm(x), (None if caches is None else new_caches)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Logits `dtype[..., vocab]` of hidden states `[..., H]` (the embedding table when tied, else lm_head)."""
        if self.lm_head is None:
            return self.embed_tokens.attend(hidden)
        return self.lm_head(hidden)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        position_ids: jax.Array,
        vision: VisionInputs | None = None,
        vision_token_slot: jax.Array | None = None,
    ) -> jax.Array:
        """Full-sequence forward under the causal mask of `attention_mask`.

        Args:
          input_ids: `int32[B, S]`.
          attention_mask: `[B, S]`, 1 at real tokens, 0 at padding.
          position_ids: `int32[3, B, S]` M-RoPE positions.
          vision: the laid-out images and videos, or None.
          vision_token_slot: `int32[B, S]` merged-token slot of each image or video token, -1 for text; None
            without images and videos.

        Returns:
          Logits `dtype[B, S, vocab]`.
        """
        embeds = self.embed(input_ids, vision, vision_token_slot)
        hidden, _ = self.decode(embeds, position_ids, causal_mask(attention_mask))
        return self.logits(hidden)


@functools.partial(jax.jit, static_argnums=0)
def forward_jit(graphdef, state, inputs: ModelInputs):
    """Jitted full forward over a split model; parameters are traced arguments.

    Args:
      graphdef: the model's graph definition (static).
      state: the model's state.
      inputs: the prepared batch.

    Returns:
      Logits `[B, S, vocab]` in the model's compute dtype.
    """
    model = nnx.merge(graphdef, state)
    return model(inputs.input_ids, inputs.attention_mask, inputs.position_ids, inputs.vision, inputs.vision_token_slot)


@functools.partial(jax.jit, static_argnums=0)
def image_features_jit(graphdef, state, vision: VisionInputs):
    """Jitted vision tower + merger over a split model (one program per graphdef and vision shapes, shared by
    every caller).

    Args:
      graphdef: the model's graph definition (static).
      state: the model's state.
      vision: the laid-out images and videos.

    Returns:
      The merged-token features `[vision rows * patch slots / merge unit, H]` in the compute dtype.
    """
    return nnx.merge(graphdef, state).image_features(vision)


def prepare_inputs(
    config: Qwen25VLConfig,
    input_ids,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    *,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    rows_bucket: int | None = None,
    windows_bucket: int | None = None,
) -> ModelInputs:
    """Host-side preparation of HF-processor-style arrays for `forward_jit`.

    Images and videos are laid out together (images first) for one vision-tower call.

    Args:
      config: the model config (vision layout and special token ids).
      input_ids: `[B, S]` token ids.
      attention_mask: `[B, S]`, 1 at real tokens; None means all ones.
      pixel_values: `[patches, patch_dim]` patch rows of all images; given together with `image_grid_thw`.
      image_grid_thw: `[images, 3]` (1, h, w) patch grid of each image.
      pixel_values_videos: `[patches, patch_dim]` patch rows of all videos; given together with `video_grid_thw`.
      video_grid_thw: `[videos, 3]` (t, h, w) patch grid of each video (t temporal patches).
      second_per_grid_ts: `float[videos]` seconds one temporal patch spans; None means 1.0 each (as in HF).
      rows_bucket: pad the vision rows (images plus video temporal patches) up to at least this (see
        `layout.layout_vision`).
      windows_bucket: pad the windows per row up to at least this.

    Returns:
      `ModelInputs` of numpy arrays.

    Raises:
      ValueError: when `input_ids` is not 2-D, the mask's shape differs, or only one array of an
        (pixels, grid) pair is given.
      LayoutError: when the images or videos cannot be laid out or do not match their tokens, or image or
        video tokens come without pixels.
    """
    input_ids = np.asarray(input_ids, np.int32)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length]; got shape {input_ids.shape}")
    attention_mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape {input_ids.shape}")
    items = {}
    for kind, pixels, grid in (("image", pixel_values, image_grid_thw), ("video", pixel_values_videos, video_grid_thw)):
        names = ("pixel_values", "image_grid_thw") if kind == "image" else ("pixel_values_videos", "video_grid_thw")
        if (pixels is None) != (grid is None):
            raise ValueError(f"{names[0]} and {names[1]} must be given together")
        if grid is not None and len(grid):
            items[kind] = (np.asarray(pixels), layout.check_grid(grid, config.vision, names[1]))
        else:
            token_id = config.image_token_id if kind == "image" else config.video_token_id
            if np.any(input_ids == token_id):
                raise layout.LayoutError(
                    f"input_ids contain {int(np.sum(input_ids == token_id))} {kind} tokens (id {token_id}) but no "
                    f"{names[0]} were given"
                )
    vision, slots = None, None
    if items:
        pixels = np.concatenate([p for p, _ in items.values()])
        grids = np.concatenate([g for _, g in items.values()])
        batch, vision_slots = layout.layout_vision(
            pixels, grids, config.vision, rows_bucket=rows_bucket, windows_bucket=windows_bucket
        )
        num_images = len(items["image"][1]) if "image" in items else 0
        slots = layout.vision_token_slots(input_ids, config, vision_slots, num_images)
        vision = VisionInputs.from_batch(batch)
    position_ids, rope_deltas = layout.mrope_positions(
        input_ids,
        attention_mask,
        items["image"][1] if "image" in items else None,
        config,
        items["video"][1] if "video" in items else None,
        second_per_grid_ts if "video" in items else None,
    )
    return ModelInputs(input_ids, attention_mask, position_ids, rope_deltas, vision, slots)


def forward_logits(
    model: Qwen25VL,
    input_ids,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    *,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
):
    """Logits for arrays laid out as the HF processor produces them; positions are computed here.

    Args:
      model: the model.
      input_ids: `int[B, S]`.
      attention_mask: `int[B, S]`, 1 at real tokens; None means all ones.
      pixel_values: `float[patches, patch_dim]`, or None without images.
      image_grid_thw: `int[images, 3]`, or None without images.
      pixel_values_videos: `float[patches, patch_dim]`, or None without videos.
      video_grid_thw: `int[videos, 3]`, or None without videos.
      second_per_grid_ts: `float[videos]` seconds per temporal patch; None means 1.0 each.

    Returns:
      Logits `[B, S, vocab]` in the model's compute dtype.
    """
    inputs = prepare_inputs(
        model.config,
        input_ids,
        attention_mask,
        pixel_values,
        image_grid_thw,
        pixel_values_videos=pixel_values_videos,
        video_grid_thw=video_grid_thw,
        second_per_grid_ts=second_per_grid_ts,
    )
    graphdef, state = nnx.split(model)
    return forward_jit(graphdef, state, inputs)
