"""Peak FLOP/s of this process's devices, for model-FLOP utilisation: a table for GPUs, measured on CPU."""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp

# bf16 dense peak FLOP/s by device kind substring, most specific first (NVIDIA data sheets).
GPU_BF16_PEAK = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200", 989e12), ("H100", 989e12))


def measure_cpu_peak(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` fp32 [size, size] matmuls (an achievable peak of this process)."""
    a, b = (jax.random.normal(jax.random.key(i), (size, size), jnp.float32) for i in range(2))
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


@dataclasses.dataclass(frozen=True)
class Peak:
    """Peak FLOP/s and where it comes from.

    Attributes:
      flops: the peak FLOP/s (None: unknown).
      source: where it comes from, in words.
      per_device: True when `flops` is one device's (GPU), so a program on k devices has k times it; False when
        it is the whole process's (CPU: simulated CPU devices share the same cores).
    """

    flops: float | None
    source: str
    per_device: bool

    def total(self, devices: int) -> float | None:
        """The peak of a program on `devices` devices (None: unknown)."""
        return None if self.flops is None else self.flops * (devices if self.per_device else 1)


def peak_flops(override_tflops: float | None) -> Peak:
    """The peak of this process's first device kind (table for GPUs, measured on CPU, or the override).

    Args:
      override_tflops: a peak in TFLOP/s to use instead (per device on GPUs, for the process on CPU); None or 0
        = none.

    Returns:
      The `Peak`; its `flops` is None for a GPU kind not in `GPU_BF16_PEAK` without an override.
    """
    device = jax.devices()[0]
    if device.platform == "cpu":
        if override_tflops:
            return Peak(override_tflops * 1e12, f"{override_tflops:g} TFLOP/s (--peak_tflops)", per_device=False)
        peak = measure_cpu_peak()
        return Peak(peak, f"{peak / 1e9:.1f} GFLOP/s measured (fp32 2048^3 matmul, best of 5, this process)", False)
    if override_tflops:
        return Peak(override_tflops * 1e12, f"{override_tflops:g} TFLOP/s per device (--peak_tflops)", per_device=True)
    for kind, value in GPU_BF16_PEAK:
        if kind in device.device_kind:
            return Peak(value, f"{value / 1e12:.0f} TFLOP/s per device ({kind} bf16 dense peak)", per_device=True)
    return Peak(None, f"unknown for {device.device_kind} (give --peak_tflops)", per_device=True)
