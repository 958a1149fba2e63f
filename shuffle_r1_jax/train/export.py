"""Trainer checkpoint -> Hugging Face directory: config.json, safetensors with hub names, tokenizer files.

The trainer copies its starting checkpoint's non-weight files (config, tokenizer, processor, generation
config) into `<workdir>/checkpoints/hf_source/`, so a workdir alone is enough to export any saved step.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from shuffle_r1_jax.checkpoint.hf_files import copy_non_weight_files
from shuffle_r1_jax.checkpoint.train_state import TrainCheckpointer
from shuffle_r1_jax.models.qwen2_5_vl import abstract_model, load_config
from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint

HF_SOURCE = "hf_source"


def export_trainer_checkpoint(
    checkpoints_dir: str | os.PathLike, out_dir: str | os.PathLike, *, step: int | None = None, dtype=None
) -> int:
    """Writes one step of a trainer checkpoint directory as a Hugging Face model directory.

    Args:
      checkpoints_dir: the trainer's checkpoint directory (`<workdir>/checkpoints`, with `hf_source/`).
      out_dir: the Hugging Face directory to write (safetensors, config and tokenizer files).
      step: the step to export (None = the latest).
      dtype: the safetensors dtype (None = float32, the dtype the parameters are restored in).

    Returns:
      The exported step.

    Raises:
      FileNotFoundError: `checkpoints_dir` has no `hf_source/config.json`.
    """
    checkpoints_dir = Path(checkpoints_dir)
    source = checkpoints_dir / HF_SOURCE
    if not (source / "config.json").exists():
        raise FileNotFoundError(
            f"{source}/config.json is missing: is {checkpoints_dir} a trainer checkpoint directory?"
        )
    config = load_config(source)
    model = abstract_model(config, dtype=jnp.float32, param_dtype=jnp.float32)
    abstract = jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    with TrainCheckpointer(checkpoints_dir) as checkpointer:
        restored = checkpointer.restore(step, abstract_params=abstract, abstract_opt_state=None)
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, restored.params)
    save_hf_checkpoint(nnx.merge(graphdef, state), out_dir, dtype=dtype)
    copy_non_weight_files(source, out_dir)
    return restored.step
