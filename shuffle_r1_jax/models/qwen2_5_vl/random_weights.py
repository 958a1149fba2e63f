"""Seeded random weights for any Qwen2.5-VL config, drawn on the host (tests, the demo, benchmarks)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.models.qwen2_5_vl.loading import abstract_model
from shuffle_r1_jax.models.qwen2_5_vl.model import Qwen25VL


def random_model(
    config: Qwen25VLConfig, seed: int, *, dtype=jnp.float32, init_std: float = 0.02, perturb_std: float = 0.0
) -> Qwen25VL:
    """A model with seeded random weights drawn on the host with numpy (no per-shape XLA compilations).

    Each parameter has its own generator seeded with (seed, parameter index), in a fixed path order.

    Args:
      config: the model config.
      seed: the base seed.
      dtype: compute and storage dtype of the model.
      init_std: kernels and embeddings ~ N(0, init_std^2).
      perturb_std: biases ~ N(0, perturb_std^2) and norm scales ~ 1 + N(0, perturb_std^2); 0 gives the usual
        zeros and ones (tests use > 0 so no layout mistake hides behind them).

    Returns:
      The model, parameters on the default device.
    """
    graphdef, state = nnx.split(abstract_model(config, dtype=dtype, param_dtype=dtype))
    filled = []
    for index, (path, var) in enumerate(sorted(nnx.to_flat_state(state), key=lambda item: str(item[0]))):
        rng = np.random.default_rng([seed, index])
        noise = rng.standard_normal(var.shape, dtype=np.float32)
        if path[-1] == "scale":
            value = 1.0 + perturb_std * noise
        elif path[-1] == "bias":
            value = perturb_std * noise
        else:
            value = init_std * noise
        filled.append((path, var.replace(jnp.asarray(value, dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))
