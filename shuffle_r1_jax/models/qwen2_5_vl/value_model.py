"""The critic of value-based RL (PPO): the Qwen2.5-VL decoder with a scalar value head in place of the output
projection.

Its parameters are the policy's, less `lm_head` (and less the vision tower when the critic reads the policy's
frozen image features), plus `value_head` (`kernel` `[H]`, `bias` `[]`, N(0, 0.02^2) and 0 initially, as a
Hugging Face token-classification head). Outside the trainer the value head is stored beside a Hugging Face
directory as `value_head.safetensors` (`value_head.weight` `[1, H]`, `value_head.bias` `[1]`, the layout of a
torch `Linear(H, 1)`), so an exported critic can start another run.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError, TensorToWrite, write_safetensors_file
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.models.qwen2_5_vl.layers import Dense
from shuffle_r1_jax.models.qwen2_5_vl.model import Qwen25VL

VALUE_HEAD_FILE = "value_head.safetensors"
_WEIGHT, _BIAS = "value_head.weight", "value_head.bias"


class Qwen25VLValueModel(Qwen25VL):
    """Qwen2.5-VL with a value head: `values(decode(embed(...)))` is V(s_t) at every position.

    Args:
      config: the model's hyper-parameters.
      with_vision: keep the vision tower; without it `embed` needs precomputed `image_features` (the policy's).
      dtype: compute dtype of the decoder (the value head computes in float32).
      param_dtype: storage dtype of the parameters.
      attention_impl: see `Qwen25VL`.
      remat: see `Qwen25VL`.
      rngs: random streams for the parameter initialisation.
    """

    def __init__(
        self,
        config: Qwen25VLConfig,
        *,
        with_vision: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        attention_impl: str = "xla",
        remat: str = "none",
        rngs: nnx.Rngs,
    ):
        super().__init__(
            config, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, remat=remat, rngs=rngs
        )
        self.lm_head = None
        if not with_vision:
            self.visual = None
        hidden = config.text.hidden_size
        self.value_head = Dense(
            (hidden,), (), axes=("embed",), use_bias=True, dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs
        )

    def values(self, hidden: jax.Array) -> jax.Array:
        """V at each position of final hidden states `[..., H]`: `float32[...]`."""
        return self.value_head(hidden.astype(jnp.float32))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Raises TypeError: a value model has no output projection."""
        raise TypeError("the value model has no output projection: use values()")


def abstract_value_model(
    config: Qwen25VLConfig,
    *,
    with_vision: bool = False,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    attention_impl: str = "xla",
    remat: str = "none",
) -> Qwen25VLValueModel:
    """The value model with `ShapeDtypeStruct` parameters (no memory allocated)."""
    return nnx.eval_shape(
        lambda: Qwen25VLValueModel(
            config,
            with_vision=with_vision,
            dtype=dtype,
            param_dtype=param_dtype,
            attention_impl=attention_impl,
            remat=remat,
            rngs=nnx.Rngs(0),
        )
    )


def initial_value_head(hidden_size: int, seed: int, param_dtype=jnp.float32) -> dict:
    """A fresh value head: {"kernel": `param_dtype[H]` N(0, 0.02^2), "bias": `param_dtype[]` 0}."""
    head = Dense((hidden_size,), (), axes=("embed",), use_bias=True, param_dtype=param_dtype, rngs=nnx.Rngs(seed))
    return nnx.to_pure_dict(nnx.state(head, nnx.Param))


def read_value_head(directory: str | os.PathLike, hidden_size: int) -> dict | None:
    """The value head stored in `directory/value_head.safetensors` as {"kernel": f32[H], "bias": f32[]}, or None
    when the directory has no such file.

    Raises:
      CheckpointError: the file lacks a tensor or holds one of another shape; the message names the file.
    """
    path = Path(directory) / VALUE_HEAD_FILE
    if not path.exists():
        return None
    tensors = load_file(str(path))
    expected = {_WEIGHT: (1, hidden_size), _BIAS: (1,)}
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            found = tuple(tensors[name].shape) if name in tensors else "missing"
            raise CheckpointError(f"{path}: tensor {name!r} must have shape {shape}, found {found}")
    return {
        "kernel": tensors[_WEIGHT].reshape(hidden_size).astype(np.float32),
        "bias": tensors[_BIAS].reshape(()).astype(np.float32),
    }


def write_value_head(directory: str | os.PathLike, value_head: dict) -> Path:
    """Writes {"kernel": [H], "bias": []} to `directory/value_head.safetensors` in float32 (torch `Linear(H, 1)`
    layout); returns the file's path."""
    kernel = np.asarray(jax.device_get(value_head["kernel"]), np.float32).reshape(1, -1)
    bias = np.asarray(jax.device_get(value_head["bias"]), np.float32).reshape(1)
    path = Path(directory) / VALUE_HEAD_FILE
    write_safetensors_file(
        path,
        [
            TensorToWrite(_WEIGHT, kernel.shape, np.dtype(np.float32), lambda: kernel),
            TensorToWrite(_BIAS, bias.shape, np.dtype(np.float32), lambda: bias),
        ],
    )
    return path


def value_params_from_policy(policy_params: dict, value_head: dict, *, with_vision: bool) -> dict:
    """The value model's parameter dict from a policy's: the decoder (and the vision tower `with_vision`), without
    `lm_head`, plus `value_head`. Arrays are shared, not copied."""
    params = {k: v for k, v in policy_params.items() if k != "lm_head" and (with_vision or k != "visual")}
    params["value_head"] = value_head
    return params
