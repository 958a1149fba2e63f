"""`load_pretrained`: a Hugging Face Qwen2.5-VL directory -> our model, tensor by tensor, no torch."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import traversals

from shuffle_r1_jax.checkpoint.orbax_params import is_orbax_params_dir, restore_params
from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError, SafetensorsCheckpoint
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig, load_config
from shuffle_r1_jax.models.qwen2_5_vl.lora import LoraConfig, initial_adapter, is_adapter_path
from shuffle_r1_jax.models.qwen2_5_vl.model import Qwen25VL
from shuffle_r1_jax.models.qwen2_5_vl.params import alternative_names, hf_to_ours, rules_with_variables
from shuffle_r1_jax.parallel.sharding import DEFAULT_RULES, Rules, param_shardings


def abstract_model(
    config: Qwen25VLConfig,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    attention_impl: str = "xla",
    remat: str = "none",
    lora: LoraConfig | None = None,
) -> Qwen25VL:
    """The model with `ShapeDtypeStruct` parameters: shapes and metadata, no memory allocated."""
    return nnx.eval_shape(
        lambda: Qwen25VL(
            config,
            dtype=dtype,
            param_dtype=param_dtype,
            attention_impl=attention_impl,
            remat=remat,
            lora=lora,
            rngs=nnx.Rngs(0),
        )
    )


def count_parameters(model: nnx.Module) -> int:
    """Number of parameter values in `model` (works on an abstract model)."""
    state = nnx.state(model, nnx.Param)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


def _place(value, sharding):
    return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)


def _load_orbax(path, variables: dict, sharding_of: dict) -> list[tuple]:
    """(path, variable) of every variable of `variables` (path -> variable), restored from a converted (orbax)
    parameter directory onto their shapes, dtypes and shardings (`sharding_of`: path -> sharding)."""
    abstract = {p: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding_of.get(p)) for p, v in variables.items()}
    try:
        params = traversals.flatten_mapping(restore_params(path, traversals.unflatten_mapping(abstract)))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    return [(p, v.replace(params[p])) for p, v in variables.items()]


def _find(checkpoint: SafetensorsCheckpoint, hf_name: str) -> str | None:
    return next((n for n in alternative_names(hf_name) if n in checkpoint), None)


def load_pretrained(
    path: str | os.PathLike,
    dtype=jnp.float32,
    *,
    param_dtype=None,
    attention_impl: str = "xla",
    remat: str = "none",
    shardings: nnx.State | None = None,
    mesh=None,
    rules: Rules = DEFAULT_RULES,
    lora: LoraConfig | None = None,
    lora_seed: int = 0,
) -> tuple[Qwen25VL, Qwen25VLConfig]:
    """Loads an HF-format Qwen2.5-VL directory (config.json + one or many safetensors shards), or a directory
    converted by `scripts/convert_hf_to_orbax.py` (config.json + orbax `params/`).

    Tensors are read one at a time and put on device, so the host never holds the whole model twice. Accepts the
    hub names and the `model.visual.*` / `model.language_model.*` names; `lm_head.weight` may be absent when the
    embeddings are tied.

    Args:
      path: the checkpoint directory.
      dtype: compute dtype of the returned model.
      param_dtype: storage dtype of its parameters (None = dtype; a trainer keeps fp32 master parameters under
        bf16 compute).
      attention_impl: see `Qwen25VL`.
      remat: see `Qwen25VL`.
      shardings: a state-shaped tree of `NamedSharding`s to place the parameters with.
      mesh: used with `rules` to derive the shardings when `shardings` is None; without either, parameters go
        to the default device.
      rules: logical-axis rules (see `shuffle_r1_jax.parallel.sharding`).
      lora: adds fresh low-rank adapters (`models.qwen2_5_vl.lora`: A He-uniform from `lora_seed`, B zeros, in
        float32) to the loaded weights, or None.
      lora_seed: seeds the adapters' A matrices.

    Returns:
      (the model, its config).

    Raises:
      CheckpointError: naming a missing or misshaped tensor (or the directory when it holds no safetensors).
      ConfigError: when config.json is rejected (see `load_config`).
      FileNotFoundError: when `path` has no config.json.
    """
    config = load_config(path)
    model = abstract_model(
        config,
        dtype=dtype,
        param_dtype=dtype if param_dtype is None else param_dtype,
        attention_impl=attention_impl,
        remat=remat,
        lora=lora,
    )
    graphdef, state = nnx.split(model)
    if shardings is None and mesh is not None:
        shardings = param_shardings(state, mesh, rules)
    sharding_of = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    flat = dict(nnx.to_flat_state(state))
    adapters = [
        (p, v.replace(_place(initial_adapter(p, tuple(v.shape), lora_seed), sharding_of.get(p))))
        for p, v in flat.items()
        if is_adapter_path(p)
    ]
    base = {p: v for p, v in flat.items() if not is_adapter_path(p)}
    if is_orbax_params_dir(path):
        return nnx.merge(graphdef, nnx.from_flat_state(_load_orbax(path, base, sharding_of) + adapters)), config
    checkpoint = SafetensorsCheckpoint(path)
    loaded = []
    for rule, var in rules_with_variables(base, config):
        name = _find(checkpoint, rule.hf_name)
        if name is None:
            raise CheckpointError(f"{os.fspath(path)}: tensor {rule.hf_name!r} is missing from the checkpoint")
        try:
            value = hf_to_ours(rule, checkpoint.read(name), tuple(var.shape))
        except ValueError as e:
            raise CheckpointError(f"{os.fspath(path)}: {e}") from e
        loaded.append((rule.path, var.replace(_place(value.astype(var.dtype), sharding_of.get(rule.path)))))
    return nnx.merge(graphdef, nnx.from_flat_state(loaded + adapters)), config
