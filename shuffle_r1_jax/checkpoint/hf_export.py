"""Writing our Qwen2.5-VL model as a Hugging Face checkpoint directory (config.json + safetensors).

`hf_config_dict` produces config.json in the transformers 5.x layout (text fields under `text_config` with
`rope_parameters`); `config_from_dict` reads it back to an equal config and transformers'
`Qwen2_5_VLConfig.from_pretrained` reads it too. `save_hf_checkpoint` writes every parameter under its HF hub
name (torch layouts: Linear weights `[out, in]`, the patch-embedding Conv3d `[D, C, T, P, P]`; `lm_head.weight`
only when untied), one tensor at a time: the safetensors header is computed from shapes first, then each
tensor is fetched from the device, converted and appended, so host memory holds one tensor beyond the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
from flax import nnx

from shuffle_r1_jax.checkpoint.hf_names import TensorRule, expected_hf_shape, ours_to_hf, rules_with_variables
from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig, VisionConfig

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
_HF_VISION_RMS_EPS = 1e-6  # transformers hard-codes the vision tower's norm epsilon

_SAFETENSORS_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.float64): "F64",
}
_TORCH_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


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
    """config.json content (transformers 5.x layout) for `config`; `dtype` is the stored weights' dtype name.

    Round trip: `config_from_dict(hf_config_dict(c)) == c`. Raises ValueError naming the field when the config
    cannot be expressed for transformers (head_dim != hidden/heads, vision norm epsilon other than 1e-6).
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
    """The shape transformers stores for `rule`: Linear `[out, in]`, the patch embedding `[D, C, T, P, P]`."""
    if rule.hf_name == "visual.patch_embed.proj.weight":
        v = config.vision
        return (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    return expected_hf_shape(rule, our_shape)


@dataclasses.dataclass(frozen=True)
class _Planned:
    """One tensor to write: its rule, source variable (an `nnx.Param`), HF shape and output dtype."""

    rule: TensorRule
    variable: nnx.Variable
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _plan(model: nnx.Module, config: Qwen25VLConfig, dtype) -> list[_Planned]:
    planned = []
    for rule, var in rules_with_variables(dict(nnx.to_flat_state(nnx.state(model, nnx.Param))), config):
        out_dtype = np.dtype(dtype if dtype is not None else var.get_value().dtype)
        if out_dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(
                f"dtype {out_dtype} cannot be written; expected one of float32, bfloat16, float16, float64"
            )
        if not var.get_value().is_fully_addressable:
            raise CheckpointError(
                f"parameter {'.'.join(map(str, rule.path))} is not fully addressable from this process; "
                "gather it (or save from a single-process model) before exporting"
            )
        planned.append(_Planned(rule, var, hf_tensor_shape(config, rule, tuple(var.get_value().shape)), out_dtype))
    return planned


def _shards(planned: list[_Planned], max_shard_bytes: int) -> list[list[_Planned]]:
    """Greedy packing in parameter order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[_Planned]] = [[]]
    size = 0
    for item in planned:
        if shards[-1] and size + item.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    return shards


def _header(items: list[_Planned]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for item in items:
        header[item.rule.hf_name] = {
            "dtype": _SAFETENSORS_DTYPES[item.dtype],
            "shape": list(item.shape),
            "data_offsets": [offset, offset + item.nbytes],
        }
        offset += item.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + b" " * (-len(encoded) % 8)


def _host_tensor(item: _Planned) -> np.ndarray:
    """Fetches one parameter to the host and converts it to the HF layout and the output dtype."""
    value = np.asarray(jax.device_get(item.variable.get_value())).astype(item.dtype, copy=False)
    return np.ascontiguousarray(ours_to_hf(item.rule, value, item.shape))


def _write_shard(path: Path, items: list[_Planned]) -> None:
    """One safetensors file: 8-byte header length, JSON header (space-padded to 8 bytes), tensor data."""
    header = _header(items)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for item in items:
            f.write(memoryview(_host_tensor(item).reshape(-1).view(np.uint8)))


def save_hf_checkpoint(
    model: nnx.Module,
    out_dir: str | os.PathLike,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype=None,
) -> Path:
    """Writes `model` (a `Qwen25VL`) to `out_dir` as config.json + safetensors with HF hub tensor names.

    Args:
      model: the model; its parameters must be fully addressable from this process.
      out_dir: created if missing; existing config.json / safetensors files of the same names are replaced.
      max_shard_bytes: above this total, tensors are split over `model-0000i-of-0000n.safetensors` files
        listed in `model.safetensors.index.json`; otherwise one `model.safetensors`.
      dtype: storage dtype of the written tensors (float32, bfloat16, ...); None keeps the parameters' dtype.

    Returns:
      The output directory as a Path.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes = {max_shard_bytes} must be positive")
    config: Qwen25VLConfig = model.config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    planned = _plan(model, config, dtype)
    dtype_name = _TORCH_DTYPE_NAMES[_SAFETENSORS_DTYPES[planned[0].dtype]]
    (out / "config.json").write_text(json.dumps(hf_config_dict(config, dtype_name), indent=2) + "\n")
    shards = _shards(planned, max_shard_bytes)
    if len(shards) == 1:
        _write_shard(out / SINGLE_FILE, shards[0])
        (out / INDEX_FILE).unlink(missing_ok=True)
        return out
    weight_map = {}
    for i, items in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_shard(out / name, items)
        weight_map.update({item.rule.hf_name: name for item in items})
    (out / SINGLE_FILE).unlink(missing_ok=True)
    index = {"metadata": {"total_size": sum(p.nbytes for p in planned)}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return out
