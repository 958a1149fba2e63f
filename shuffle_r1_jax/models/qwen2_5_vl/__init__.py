"""Qwen2.5-VL (images and videos) in Flax NNX: config reading, the model, host-side layouts, HF checkpoint loading."""

from shuffle_r1_jax.models.qwen2_5_vl.config import (
    ConfigError,
    Qwen25VLConfig,
    TextConfig,
    VisionConfig,
    config_from_dict,
    load_config,
    qwen2_5_vl_3b_config,
    qwen2_5_vl_7b_config,
    qwen2_5_vl_32b_config,
    qwen2_5_vl_72b_config,
)
from shuffle_r1_jax.models.qwen2_5_vl.layout import LayoutError, layout_vision, mrope_positions
from shuffle_r1_jax.models.qwen2_5_vl.loading import abstract_model, count_parameters, load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.model import (
    ModelInputs,
    Qwen25VL,
    VisionInputs,
    forward_jit,
    forward_logits,
    prepare_inputs,
)

__all__ = [
    "ConfigError",
    "LayoutError",
    "ModelInputs",
    "Qwen25VL",
    "Qwen25VLConfig",
    "TextConfig",
    "VisionConfig",
    "VisionInputs",
    "abstract_model",
    "config_from_dict",
    "count_parameters",
    "forward_jit",
    "forward_logits",
    "layout_vision",
    "load_config",
    "load_pretrained",
    "mrope_positions",
    "prepare_inputs",
    "qwen2_5_vl_3b_config",
    "qwen2_5_vl_7b_config",
    "qwen2_5_vl_32b_config",
    "qwen2_5_vl_72b_config",
]
