"""Low-rank adapters (LoRA) on the decoder's projections, with flax NNX's `nnx.LoRA` layer.

A projection with an adapter computes `base(x) + (alpha / rank) * (dropout(x) @ A @ B)`, A `float32[in, r]`
(He-uniform), B `float32[r, out]` (zeros, so a fresh adapter changes nothing), the projection's multi-dim input and
output dims flattened. The adapters' parameters are `nnx.LoRAParam`s (a kind of `nnx.Param`): `is_adapter_path`
tells them apart in a pure parameter dict by their path (`.../<proj>/lora/lora_a|lora_b`).

Dropout on the adapter's input needs a key, which the update step gives with `adapter_dropout(key)`: inside that
context every adapter draws its own mask (the key folded with the adapter's call index); outside it (sampling,
log-prob passes) adapters are deterministic.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER = "lora"  # the adapter module's attribute name in a projection
ADAPTER_PARAMS = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which decoder projections carry adapters, and their shape; static (hashable).

    Attributes:
      rank: the adapters' rank r (>= 1).
      alpha: the scale numerator: the adapter's output is multiplied by alpha / rank.
      targets: the decoder projections that get an adapter, a subset of `TARGETS` (the vision tower gets none).
      dropout: dropout rate on the adapter's input during the update step, in [0, 1).

    Raises:
      ValueError: naming the field and its value when it is out of range or unknown.
    """

    rank: int
    alpha: float = 16.0
    targets: tuple[str, ...] = TARGETS
    dropout: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"lora.rank = {self.rank!r} must be an integer >= 1")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha = {self.alpha!r} must be > 0")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"lora.targets = {self.targets!r}; expected a non-empty subset of {TARGETS}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout = {self.dropout!r} must be in [0, 1)")

    @property
    def scale(self) -> float:
        """alpha / rank, the factor on the adapter's output."""
        return self.alpha / self.rank


def maybe_for(lora: LoraConfig | None, name: str) -> LoraConfig | None:
    """`lora` if the projection `name` is one of its targets, else None (also without LoRA)."""
    return lora if lora is not None and name in lora.targets else None


@dataclasses.dataclass
class _DropoutStream:
    key: jax.Array
    calls: int = 0


_DROPOUT: contextvars.ContextVar[_DropoutStream | None] = contextvars.ContextVar("lora_dropout", default=None)


@contextlib.contextmanager
def adapter_dropout(key: jax.Array | None) -> Iterator[None]:
    """Within this context, adapters with a dropout rate drop their inputs, each with `fold_in(key, call index)`;
    with `key` None (or outside any context) they do not."""
    token = _DROPOUT.set(None if key is None else _DropoutStream(key))
    try:
        yield
    finally:
        _DROPOUT.reset(token)


def dropped(x: jax.Array, rate: float) -> jax.Array:
    """`x` with inverted dropout at `rate` when inside `adapter_dropout(key)`, else `x` itself."""
    stream = _DROPOUT.get()
    if stream is None or rate == 0:
        return x
    key = jax.random.fold_in(stream.key, stream.calls)
    stream.calls += 1
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def is_adapter_path(path: tuple) -> bool:
    """Whether a parameter path (keys of a pure dict or a flat state) is an adapter's A or B."""
    return len(path) >= 2 and path[-2] == ADAPTER and path[-1] in ADAPTER_PARAMS


def merged_params(params: dict, lora: LoraConfig) -> dict:
    """The parameters with every adapter folded into its projection: `kernel + scale * (A @ B)` reshaped to the
    kernel, in the wider of the kernel's and the adapter's dtypes; the adapters removed.

    Args:
      params: a pure dict of the model's parameters with adapters (arrays on any device).
      lora: the adapters' config (its scale).

    Returns:
      A pure dict without `lora` entries, the parameters of the same model without adapters.
    """
    out = {}
    for key, value in params.items():
        if not isinstance(value, dict):
            out[key] = value
        elif ADAPTER in value:
            kernel = value["kernel"]
            a, b = value[ADAPTER]["lora_a"], value[ADAPTER]["lora_b"]
            dtype = jnp.promote_types(kernel.dtype, a.dtype)
            delta = (jnp.asarray(a, jnp.float32) @ jnp.asarray(b, jnp.float32)).reshape(kernel.shape)
            merged = {k: v for k, v in value.items() if k != ADAPTER}
            merged["kernel"] = (jnp.asarray(kernel, jnp.float32) + lora.scale * delta).astype(dtype)
            out[key] = merged
        else:
            out[key] = merged_params(value, lora)
    return out


def adapters_off(params: dict) -> dict:
    """The parameters with every adapter's B zero, so the model computes its base weights' function; the other
    arrays are the same objects (not copies).

    Args:
      params: a pure dict of the model's parameters with adapters.

    Returns:
      A pure dict of the same structure.
    """
    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and key == ADAPTER:
            out[key] = {**value, "lora_b": jnp.zeros_like(value["lora_b"])}
        elif isinstance(value, dict):
            out[key] = adapters_off(value)
        else:
            out[key] = value
    return out


def initial_adapter(path: tuple, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The starting value `float32[shape]` of the adapter parameter at `path`: A He-uniform (bound sqrt(6 / in)),
    drawn from `seed` and the path, B zeros; the same for a path and seed on every process."""
    if path[-1] == "lora_b":
        return np.zeros(shape, np.float32)
    digest = np.frombuffer(repr(tuple(str(p) for p in path)).encode(), np.uint8)
    rng = np.random.default_rng([seed, *digest.tolist()])
    bound = math.sqrt(6.0 / shape[0])
    return rng.uniform(-bound, bound, shape).astype(np.float32)
