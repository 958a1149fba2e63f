"""Every attention implementation on one attention-heavy shape: forward + backward time and the largest
difference from float32 "xla" (shuffle_r1_jax/perf/attention_benchmark.py says how each figure is made).

    python scripts/bench_attention.py [--shape gpu|smoke] [--runs 5] [--implementations xla,chunked,...]

Shapes: gpu = Qwen2.5-VL-3B's decoder heads (16 over 2, width 128) on 4 rows of 4096 positions in bf16;
smoke = 2 rows of 256 positions, 4 heads over 2 of width 32, float32 (a CPU runs it in seconds).
Default implementations: those this backend can run fused or plain: xla, chunked, plus cudnn on a GPU, splash on
a TPU or in the smoke shape (interpreted off TPU), tokamax where it is installed.
Prints a markdown table; a failing implementation is a row, not an error.
"""

from __future__ import annotations

import argparse

import jax

from shuffle_r1_jax.models.qwen2_5_vl.fused_attention import tokamax_available
from shuffle_r1_jax.perf.attention_benchmark import SHAPES, format_attention, run_attention_benchmark


def default_implementations(shape: str) -> tuple[str, ...]:
    """The implementations worth timing on this backend (module docstring)."""
    names = ["xla", "chunked"]
    backend = jax.default_backend()
    if backend == "gpu":
        names.append("cudnn")
    if tokamax_available():
        names.append("tokamax")
    if backend == "tpu" or shape == "smoke":
        names.append("splash")
    return tuple(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpu", help="the attention call (see above)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls after the compiling one (median)")
    parser.add_argument("--implementations", default="", help="comma-separated attention_impl names (default above)")
    args = parser.parse_args()
    names = tuple(filter(None, args.implementations.split(","))) or default_implementations(args.shape)
    shape = SHAPES[args.shape]
    results = run_attention_benchmark(shape, names, runs=args.runs, log=lambda line: print(line, flush=True))
    print()
    print(f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}.")
    print(format_attention(results, shape, args.runs))


if __name__ == "__main__":
    main()
