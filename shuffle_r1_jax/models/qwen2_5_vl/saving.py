"""Writing our Qwen2.5-VL model as a Hugging Face checkpoint directory (config.json + safetensors).

`hf_config_dict` produces config.json in the transformers 5.x layout (text fields under `text_config` with
`rope_parameters`); `config_from_dict` reads it back to an equal config and transformers'
`Qwen2_5_VLConfig.from_pretrained` reads it too. `save_hf_checkpoint` writes every parameter under its HF hub
name (torch layouts: Linear weights `[out, in]`, the patch-embedding Conv3d `[D, C, T, P, P]`; `lm_head.weight`
only when untied) with `checkpoint.safetensors_io`'s streaming writer: each tensor is fetched from the device
and converted when it is written, so host memory holds one tensor beyond the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from flax.nnx import traversals

from shuffle_r1_jax.checkpoint.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES,
    CheckpointError,
    TensorToWrite,
    write_safetensors_dir,
)
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig, VisionConfig
from shuffle_r1_jax.models.qwen2_5_vl.lora import merged_params
from shuffle_r1_jax.models.qwen2_5_vl.params import TensorRule, expected_hf_shape, ours_to_hf, rules_with_variables

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
WEIGHT_DTYPES = ("float32", "bfloat16", "float16", "float64")
_HF_VISION_RMS_EPS = 1e-6  # transformers hard-codes the vision tower's norm epsilon


def _check_representable(config: Qwen25VLConfig) -> None:
    """Raises ValueError naming the field when transformers' Qwen2.5-VL cannot express `config`."""
    t, v = config.text, config.vision
    if t.head_dim * t.num_attention_heads != t.hidden_size:
        raise ValueError(
            f"text head_dim = {t.head_dim} with num_attention_heads = {t.num_attention_heads} does not give "
            f"hidden_size = {t.hidden_size}; transformers' Qwen2.5-VL derives head_dim = hidden_size / heads"
        )
    if v.rms_norm_eps != _HF_VISION_RMS_EPS:
        raise ValueError(
            f"vision rms_norm_eps = {v.rms_norm_eps}; transformers' Qwen2.5-VL fixes it at {_HF_VISION_RMS_EPS}"
        )


def _vision_dict(v: VisionConfig) -> dict:
    return {
        "model_type": "qwen2_5_vl_vision",
        "depth": v.depth,
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_heads": v.num_heads,
        "in_channels": v.in_channels,
        "patch_size": v.patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "temporal_patch_size": v.temporal_patch_size,
        "window_size": v.window_size,
        "out_hidden_size": v.out_hidden_size,
        "fullatt_block_indexes": list(v.fullatt_block_indexes),
        "tokens_per_second": v.tokens_per_second,
        "hidden_act": "silu",
        "rope_parameters": {"rope_theta": v.rope_theta, "rope_type": "axial"},
    }


def hf_config_dict(config: Qwen25VLConfig, dtype: str = "float32") -> dict:
    """config.json content (transformers 5.x layout) for `config`.

    Round trip: `config_from_dict(hf_config_dict(c)) == c`.

    Args:
      config: the model config.
      dtype: the stored weights' dtype name, written as `dtype` at the root and in `text_config`.

    Returns:
      The config.json content as a JSON-serialisable dict.

    Raises:
      ValueError: naming the field when the config cannot be expressed for transformers (head_dim != hidden/heads,
        vision norm epsilon other than 1e-6).
    """
    _check_representable(config)
    t = config.text
    tokens = {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    }
    text = {
        "model_type": "qwen2_5_vl_text",
        "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_dim": t.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": t.rms_norm_eps,
        "max_position_embeddings": t.max_position_embeddings,
        "rope_parameters": {
            "mrope_section": list(t.mrope_section),
            "rope_type": "default",
            "rope_theta": t.rope_theta,
        },
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "use_cache": True,
        "tie_word_embeddings": config.tie_word_embeddings,
        "dtype": dtype,
        **tokens,
    }
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "qwen2_5_vl",
        "dtype": dtype,
        "tie_word_embeddings": config.tie_word_embeddings,
        "image_token_id": config.image_token_id,
        "video_token_id": config.video_token_id,
        "vision_start_token_id": config.vision_start_token_id,
        "vision_end_token_id": config.vision_end_token_id,
        **tokens,
        "text_config": text,
        "vision_config": _vision_dict(config.vision),
    }


def hf_tensor_shape(config: Qwen25VLConfig, rule: TensorRule, our_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape transformers stores for `rule`: Linear `[out, in]`, the patch embedding `[D, C, T, P, P]`.

    Args:
      config: the model config (the patch embedding's dimensions).
      rule: the tensor rule.
      our_shape: the shape of our parameter.
    """
    if rule.hf_name == "visual.patch_embed.proj.weight":
        v = config.vision
        return (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    return expected_hf_shape(rule, our_shape)


def _weights(model: nnx.Module) -> dict[tuple, jax.Array]:
    """Path -> value of every parameter of the model without adapters: a LoRA model's adapters folded into their
    projections (`lora.merged_params`)."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if model.lora_config is not None:
        params = merged_params(params, model.lora_config)
    return traversals.flatten_mapping(params)


def _tensors(model: nnx.Module, config: Qwen25VLConfig, dtype) -> list[TensorToWrite]:
    """Every parameter as a tensor to write under its HF name, HF shape and the output dtype."""
    tensors = []
    for rule, value in rules_with_variables(_weights(model), config):
        out_dtype = np.dtype(dtype if dtype is not None else value.dtype)
        if out_dtype.name not in WEIGHT_DTYPES:
            raise ValueError(f"dtype {out_dtype} cannot be written; expected one of {', '.join(WEIGHT_DTYPES)}")
        if not value.is_fully_addressable:
            raise CheckpointError(
                f"parameter {'.'.join(map(str, rule.path))} is not fully addressable from this process; "
                "gather it (or save from a single-process model) before exporting"
            )
        shape = hf_tensor_shape(config, rule, tuple(value.shape))
        tensors.append(TensorToWrite(rule.hf_name, shape, out_dtype, _fetch(rule, value, shape, out_dtype)))
    return tensors


def _fetch(rule: TensorRule, value: jax.Array, shape: tuple[int, ...], dtype: np.dtype):
    """Fetches one parameter to the host and converts it to the HF layout and the output dtype."""
    return lambda: ours_to_hf(rule, np.asarray(jax.device_get(value)).astype(dtype, copy=False), shape)


def save_hf_checkpoint(
    model: nnx.Module,
    out_dir: str | os.PathLike,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype=None,
) -> Path:
    """Writes `model` (a `Qwen25VL`) to `out_dir` as config.json + safetensors with HF hub tensor names; a model
    with LoRA adapters is written with them merged into its projections.

    Args:
      model: the model; its parameters must be fully addressable from this process.
      out_dir: created if missing; existing config.json / safetensors files of the same names are replaced.
      max_shard_bytes: above this total, tensors are split over `model-0000i-of-0000n.safetensors` files
        listed in `model.safetensors.index.json`; otherwise one `model.safetensors`.
      dtype: storage dtype of the written tensors (float32, bfloat16, ...); None keeps the parameters' dtype.

    Returns:
      The output directory as a Path.

    Raises:
      ValueError: when `max_shard_bytes` is not positive, the output dtype is not one of `WEIGHT_DTYPES`, or the config
        cannot be expressed for transformers (see `hf_config_dict`).
      CheckpointError: naming a parameter that is not fully addressable from this process.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes = {max_shard_bytes} must be positive")
    config: Qwen25VLConfig = model.config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(model, config, dtype)
    (out / "config.json").write_text(json.dumps(hf_config_dict(config, tensors[0].dtype.name), indent=2) + "\n")
    write_safetensors_dir(out, tensors, max_shard_bytes)
    return out
