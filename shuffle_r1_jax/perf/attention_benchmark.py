"""Each attention implementation on one shape: seconds of a forward + backward pass, and its largest difference
from the exact "xla" path computed in float32 on the same inputs.

The inputs are a decoder's full-sequence pass: random q, k, v with grouped key/value heads under the causal mask of
rows padded on the left (prompts) and on the right (finished responses), as `text.causal_mask` builds it. The
difference is taken over the queries that see at least one key (a query with none has no defined output).
FLOPs count the two attention matmuls over the causal half of the score matrix, forward (2 x 2 x B x N x S^2 x Dh
/ 2) plus backward (2.5 times the forward), without recompute.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.models.qwen2_5_vl.attention import dot_product_attention
from shuffle_r1_jax.models.qwen2_5_vl.text import causal_mask


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    """One attention call: `batch` rows of `length` positions, `heads` query heads over `kv_heads` key/value heads
    of width `head_dim`, computed in `dtype` (a name in `models.dtypes.DTYPES`)."""

    batch: int
    length: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str

    def describe(self) -> str:
        return (
            f"{self.batch} rows x {self.length} positions, {self.heads} query heads over {self.kv_heads} key/value "
            f"heads of {self.head_dim}, {self.dtype}, causal with left and right padding"
        )


SHAPES = {
    # Qwen2.5-VL-3B's decoder heads over a 4096-position rollout row (2048 prompt + 2048 response)
    "gpu": AttentionShape(batch=4, length=4096, heads=16, kv_heads=2, head_dim=128, dtype="bfloat16"),
    # what a CPU runs in seconds, still above the splash kernel's smallest block
    "smoke": AttentionShape(batch=2, length=256, heads=4, kv_heads=2, head_dim=32, dtype="float32"),
}


@dataclasses.dataclass(frozen=True)
class AttentionResult:
    """One implementation on the shape.

    Attributes:
      implementation: the `attention_impl`.
      seconds: median seconds of one jitted forward + backward (None when it failed).
      max_abs_error: the largest |output - float32 xla output| over the queries that see a key (None when failed).
      error: why it failed, in one line (None when it ran).
    """

    implementation: str
    seconds: float | None = None
    max_abs_error: float | None = None
    error: str | None = None


def attention_inputs(shape: AttentionShape, seed: int = 0):
    """Random q `[B, S, N, Dh]`, k and v `[B, S, K, Dh]` in the shape's dtype, and the causal padded mask
    `bool[B, S, S]` (row b is left-padded by b * S / 16 and right-padded after S - b * S / 8 positions)."""
    rng = np.random.default_rng(seed)
    s = shape

    def normal(*dims):
        return jnp.asarray(rng.standard_normal(dims), DTYPES[s.dtype])

    valid = np.ones((s.batch, s.length), np.int32)
    for b in range(s.batch):
        valid[b, : b * s.length // 16] = 0
        valid[b, s.length - b * s.length // 8 :] = 0
    q = normal(s.batch, s.length, s.heads, s.head_dim)
    k, v = (normal(s.batch, s.length, s.kv_heads, s.head_dim) for _ in range(2))
    return q, k, v, causal_mask(jnp.asarray(valid))


def attention_flops(shape: AttentionShape) -> float:
    """Forward + backward FLOPs of the causal attention matmuls (module docstring)."""
    forward = 2 * 2 * shape.batch * shape.heads * shape.length**2 * shape.head_dim / 2
    return forward * 3.5


def _forward_backward(implementation: str, mask, scale: float) -> Callable:
    """A jitted (q, k, v, cotangent) -> (output, grads of <output, cotangent> w.r.t. q, k, v)."""

    def loss(q, k, v, cotangent):
        out = dot_product_attention(q, k, v, mask, scale=scale, implementation=implementation)
        return jnp.sum(out.astype(jnp.float32) * cotangent), out

    def step(q, k, v, cotangent):
        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, cotangent)
        return out, grads

    return jax.jit(step)


def run_attention_benchmark(
    shape: AttentionShape, implementations: tuple[str, ...], runs: int = 5, log: Callable[[str], None] = print
) -> list[AttentionResult]:
    """Times each implementation and compares its output with float32 "xla".

    Args:
      shape: the attention call.
      implementations: `attention_impl` names to time.
      runs: timed calls after the compiling one (the median is reported).
      log: prints progress.

    Returns:
      One result per implementation, in the given order; a failure (e.g. a kernel this backend lacks) is recorded,
      not raised.
    """
    q, k, v, mask = attention_inputs(shape)
    scale = shape.head_dim**-0.5
    reference = dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)), mask, scale=scale)
    seen = jnp.any(mask, axis=2)[:, :, None, None]
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)
    results = []
    for name in implementations:
        log(f"attention {name} ...")
        try:
            step = _forward_backward(name, mask, scale)
            out, _ = jax.block_until_ready(step(q, k, v, cotangent))
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                jax.block_until_ready(step(q, k, v, cotangent))
                times.append(time.perf_counter() - start)
        except Exception as err:  # noqa: BLE001 - a backend without this kernel is a finding to report
            message = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            results.append(AttentionResult(name, error=f"{type(err).__name__}: {message}"))
            log(f"  {name} failed: {results[-1].error}")
            continue
        diff = float(jnp.max(jnp.where(seen, jnp.abs(out.astype(jnp.float32) - reference), 0.0)))
        results.append(AttentionResult(name, seconds=float(np.median(times)), max_abs_error=diff))
        log(f"  {name}: {results[-1].seconds * 1e3:.2f} ms, max |diff| {diff:.2e}")
    return results


def format_attention(results: list[AttentionResult], shape: AttentionShape, runs: int) -> str:
    """The results as markdown: one row per implementation (ms, TFLOP/s, largest difference from float32 xla)."""
    flops = attention_flops(shape)
    lines = [
        f"Shape: {shape.describe()}; forward + backward, median of {runs} after compilation; "
        f"{flops / 1e12:.3g} TFLOP per call (causal half, backward 2.5x forward, no recompute).",
        "",
        "| implementation | ms | TFLOP/s | max abs diff vs float32 xla |",
        "|---|---|---|---|",
    ]
    for r in results:
        if r.error is not None:
            lines.append(f"| {r.implementation} | failed: {r.error} | | |")
        else:
            tflops = flops / r.seconds / 1e12
            lines.append(f"| {r.implementation} | {r.seconds * 1e3:.2f} | {tflops:.3g} | {r.max_abs_error:.2e} |")
    return "\n".join(lines)
