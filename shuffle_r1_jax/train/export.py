"""Trainer checkpoint -> Hugging Face directory: config.json, safetensors with hub names, tokenizer files; for a
value-based run also the critic, with its value head beside the Hugging Face layout.

The trainer copies its starting checkpoint's non-weight files (config, tokenizer, processor, generation
config) into `<workdir>/checkpoints/hf_source/`, and with a critic the critic's into `hf_source_critic/` with
`critic_layout.json` (whether the critic holds its own vision tower), so a workdir alone is enough to export any
saved step.

An exported critic is a Qwen2.5-VL directory transformers loads (`Qwen2_5_VLForConditionalGeneration`) plus
`value_head.safetensors`: the decoder is the critic's; the vision tower is the critic's own or, when the critic
read the policy's image features, the policy's at that step (the features it was trained on); `lm_head.weight`
(untied models) is zeros, as the critic has no output projection. `critic.checkpoint` takes such a directory to
start another run's critic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from shuffle_r1_jax.checkpoint.hf_files import copy_non_weight_files
from shuffle_r1_jax.checkpoint.train_state import TrainCheckpointer
from shuffle_r1_jax.models.qwen2_5_vl import abstract_model, load_config
from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint
from shuffle_r1_jax.models.qwen2_5_vl.value_model import abstract_value_model, write_value_head

HF_SOURCE = "hf_source"
HF_SOURCE_CRITIC = "hf_source_critic"
CRITIC_LAYOUT = "critic_layout.json"


def record_critic_source(checkpoints_dir: str | os.PathLike, source: str | os.PathLike, *, with_vision: bool) -> None:
    """Copies the critic's starting checkpoint's non-weight files into `<checkpoints_dir>/hf_source_critic/` with
    `critic_layout.json` ({"with_vision": bool}), for `export_trainer_checkpoint(..., critic=True)`."""
    destination = Path(checkpoints_dir) / HF_SOURCE_CRITIC
    copy_non_weight_files(source, destination)
    (destination / CRITIC_LAYOUT).write_text(json.dumps({"with_vision": with_vision}) + "\n")


def _pure_shapes(model: nnx.Module):
    return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def export_trainer_checkpoint(
    checkpoints_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    step: int | None = None,
    dtype=None,
    critic: bool = False,
) -> int:
    """Writes one step of a trainer checkpoint directory as a Hugging Face model directory: the policy, or with
    `critic` the critic (see the module docstring).

    Args:
      checkpoints_dir: the trainer's checkpoint directory (`<workdir>/checkpoints`, with `hf_source/`).
      out_dir: the Hugging Face directory to write (safetensors, config and tokenizer files; a critic's
        `value_head.safetensors`).
      step: the step to export (None = the latest).
      dtype: the safetensors dtype (None = float32, the dtype the parameters are restored in); the value head is
        written in float32.
      critic: export the critic of a value-based run instead of the policy.

    Returns:
      The exported step.

    Raises:
      FileNotFoundError: `checkpoints_dir` has no `hf_source/config.json`, or (`critic`) no
        `hf_source_critic/critic_layout.json` (the run had no critic).
    """
    checkpoints_dir = Path(checkpoints_dir)
    source = checkpoints_dir / HF_SOURCE
    if not (source / "config.json").exists():
        raise FileNotFoundError(
            f"{source}/config.json is missing: is {checkpoints_dir} a trainer checkpoint directory?"
        )
    config = load_config(source)
    model = abstract_model(config, dtype=jnp.float32, param_dtype=jnp.float32)
    if not critic:
        with TrainCheckpointer(checkpoints_dir) as checkpointer:
            restored = checkpointer.restore(step, abstract_params=_pure_shapes(model), abstract_opt_state=None)
        graphdef, state = nnx.split(model)
        nnx.replace_by_pure_dict(state, restored.params)
        save_hf_checkpoint(nnx.merge(graphdef, state), out_dir, dtype=dtype)
        copy_non_weight_files(source, out_dir)
        return restored.step
    critic_source = checkpoints_dir / HF_SOURCE_CRITIC
    if not (critic_source / CRITIC_LAYOUT).exists():
        raise FileNotFoundError(
            f"{critic_source / CRITIC_LAYOUT} is missing: the run in {checkpoints_dir} trained no critic "
            "(rl.algorithm ppo, vc_ppo or orz_ppo do)"
        )
    with_vision = json.loads((critic_source / CRITIC_LAYOUT).read_text())["with_vision"]
    critic_config = load_config(critic_source)
    critic_model = abstract_value_model(critic_config, with_vision=with_vision)
    with TrainCheckpointer(checkpoints_dir) as checkpointer:
        restored = checkpointer.restore(
            step,
            abstract_params=_pure_shapes(model),
            abstract_opt_state=None,
            abstract_critic_params=_pure_shapes(critic_model),
        )
    critic_params = dict(restored.critic_params)
    value_head = critic_params.pop("value_head")
    if not with_vision:
        critic_params["visual"] = restored.params["visual"]
    target = abstract_model(critic_config, dtype=jnp.float32, param_dtype=jnp.float32)
    if target.lm_head is not None:
        critic_params["lm_head"] = {"kernel": jnp.zeros(target.lm_head.kernel.shape, jnp.float32)}
    graphdef, state = nnx.split(target)
    nnx.replace_by_pure_dict(state, critic_params)
    save_hf_checkpoint(nnx.merge(graphdef, state), out_dir, dtype=dtype)
    write_value_head(out_dir, value_head)
    copy_non_weight_files(critic_source, out_dir)
    return restored.step
