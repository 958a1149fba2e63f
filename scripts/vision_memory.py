"""Compiled temporary memory of the vision tower at real Qwen2.5-VL-3B dimensions, from XLA's memory analysis.

Nothing is run: the tower is lowered and compiled on abstract inputs (4 images of N patches, bf16) and the
executable's `memory_analysis()` is read. Prints a table and writes it to BUILD_NOTES.md.

    python scripts/vision_memory.py [--patches 1024,4096,16384] [--images 4] [--impls xla,chunked]
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl import abstract_model, qwen2_5_vl_3b_config
from shuffle_r1_jax.perf.notes import write_section

NOTES = Path(__file__).resolve().parents[1] / "BUILD_NOTES.md"


READING = """\
How to read it: with "xla" attention every full-attention block materializes fp32 scores
`[images, heads, N, N]` (at 16k patches 4 x 16 x 16384^2 x 4 B = 64 GiB per tensor), so memory grows
quadratically with patches per image; window blocks are linear (64-patch windows). "chunked" computes the same
attention 512 queries at a time and grows linearly on any backend (CPU, TPU, GPU). "cudnn" (fused flash attention,
GPU only) cannot be compiled on a CPU-only machine; it is expected to be linear like "chunked" and is to be
measured in a session with a GPU. On CPU about 1.3 GiB of every figure is fp32 copies of the bf16 weights that the
CPU backend makes for its matmuls.
"""


def temp_bytes(impl: str, images: int, patches: int) -> tuple[int, float]:
    """(temporary bytes, compile seconds) of the vision tower for `images` square images of `patches` patches."""
    config = qwen2_5_vl_3b_config()
    model = abstract_model(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention_impl=impl)
    graphdef, state = nnx.split(model.visual)
    side = int(math.isqrt(patches))
    assert side * side == patches and side % 16 == 0, "patches must be a square of a multiple of 16"

    def encode(state, patches_, pos, valid):
        return nnx.merge(graphdef, state)(patches_, pos, valid)

    args = (
        jax.ShapeDtypeStruct((images, patches, config.vision.patch_dim), jnp.bfloat16),
        jax.ShapeDtypeStruct((images, patches, 2), jnp.int32),
        jax.ShapeDtypeStruct((images, patches), jnp.bool_),
    )
    start = time.perf_counter()
    compiled = jax.jit(encode).lower(state, *args).compile()
    return compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", default="1024,4096,16384", help="patches per image (squares), comma-separated")
    parser.add_argument("--images", type=int, default=4, help="images per batch")
    parser.add_argument("--impls", default="xla,chunked", help="attention implementations to compile")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BUILD_NOTES.md alone")
    args = parser.parse_args()
    patches = [int(p) for p in args.patches.split(",")]
    impls = args.impls.split(",")
    rows = ["| attention | " + " | ".join(f"{p} patches/image" for p in patches) + " |"]
    rows.append("|---" * (len(patches) + 1) + "|")
    for impl in impls:
        cells = []
        for p in patches:
            size, secs = temp_bytes(impl, args.images, p)
            print(f"{impl:8s} {p:6d} patches/image: temp {size / 2**30:8.2f} GiB (compile {secs:.0f} s)", flush=True)
            cells.append(f"{size / 2**30:.2f} GiB")
        rows.append(f"| {impl} | " + " | ".join(cells) + " |")
    device = jax.devices()[0]
    body = (
        f"Compiled temporary memory of the vision tower, Qwen2.5-VL-3B dims (depth 32, width 1280, 16 heads), "
        f"bf16, {args.images} images per batch; from `compiled.memory_analysis().temp_size_in_bytes`, nothing run.\n"
        f"Command: `python scripts/vision_memory.py --patches {args.patches} --images {args.images} "
        f"--impls {args.impls}`; backend {device.platform} ({platform.processor() or platform.machine()}), "
        f"jax {jax.__version__}, {datetime.date.today()}.\n\n" + "\n".join(rows) + "\n\n" + READING
    )
    print(body)
    if not args.no_write:
        write_section(NOTES, "Vision tower memory (compile-time analysis)", body)


if __name__ == "__main__":
    main()
