"""LoRA adapters in the PEFT layout (`adapter_config.json` + `adapter_model.safetensors`), which PEFT's
`PeftModel.from_pretrained(<transformers Qwen2.5-VL>, <dir>)` loads over the base model.

Each adapter of our projection at `("layers", i, <attn or mlp>, <proj>)` is written as
`base_model.model.model.language_model.layers.<i>.<self_attn or mlp>.<proj>.lora_A.weight` `[r, in]` and
`...lora_B.weight` `[out, r]` (torch Linear layout: our A `[in, r]` and B `[r, out]` transposed; multi-dim
inputs and outputs flattened in the order HF's q/k/v/o weights use), the module names of transformers'
Qwen2.5-VL (4.52 and later). `target_modules` is a regular expression over those names, so the vision tower's
layers of the same names get no adapter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from flax.nnx import traversals
from safetensors.numpy import save_file

from shuffle_r1_jax.models.qwen2_5_vl.lora import ADAPTER, LoraConfig, is_adapter_path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model.model.language_model.layers"
_PEFT_PARAM = {"lora_a": "lora_A", "lora_b": "lora_B"}


def peft_name(path: tuple) -> str:
    """The PEFT tensor name of the adapter parameter at `path` (`("layers", i, block, proj, "lora", "lora_a")`)."""
    _, layer, block, proj, _, param = path
    return f"{_PREFIX}.{layer}.{block}.{proj}.{_PEFT_PARAM[param]}.weight"


def target_modules(lora: LoraConfig) -> str:
    """PEFT's `target_modules` for `lora.targets`: a regular expression matching the decoder's projections only."""
    attn = [t for t in lora.targets if t in ("q_proj", "k_proj", "v_proj", "o_proj")]
    mlp = [t for t in lora.targets if t in ("gate_proj", "up_proj", "down_proj")]
    groups = [f"self_attn\\.({'|'.join(attn)})"] * bool(attn) + [f"mlp\\.({'|'.join(mlp)})"] * bool(mlp)
    return rf".*language_model\.layers\.\d+\.({'|'.join(groups)})"


def save_peft_adapters(
    params: dict, lora: LoraConfig, out_dir: str | os.PathLike, *, base_model: str = "", dtype=np.float32
) -> Path:
    """Writes the adapters of a LoRA model's parameters in the PEFT layout.

    Args:
      params: a pure dict of the model's parameters with adapters (fully addressable arrays).
      lora: the adapters' config (rank, alpha, targets, dropout go to adapter_config.json).
      out_dir: the directory to write (created).
      base_model: `base_model_name_or_path` of adapter_config.json (the base checkpoint's path or hub name).
      dtype: the stored dtype of the adapter tensors.

    Returns:
      The directory.

    Raises:
      ValueError: `params` holds no adapters.
    """
    tensors = {}
    for path, value in traversals.flatten_mapping(params).items():
        if is_adapter_path(path):
            tensors[peft_name(path)] = np.ascontiguousarray(np.asarray(jax.device_get(value), dtype).T)
    if not tensors:
        raise ValueError(f"the parameters hold no LoRA adapters (no '{ADAPTER}' entries)")
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": target_modules(lora),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, out / ADAPTER_WEIGHTS)
    return out
