"""Convert a Hugging Face Qwen2.5-VL directory to an orbax parameter checkpoint the trainer starts from.

    python scripts/convert_hf_to_orbax.py --hf_dir /path/to/Qwen2.5-VL-7B-Instruct --out ckpt/qwen7b \\
        [--dtype bfloat16|float32] [--mesh DATA,FSDP,TENSOR]

Safetensors are read tensor by tensor and placed on device (sharded over the mesh when given) as they are
read, so host memory holds about one copy of the weights at most; then orbax writes `<out>/params` and the
config, tokenizer and processor files are copied next to it. Prints the peak host memory (max RSS).
Use the output directory as `--config.model.checkpoint`.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from flax import nnx

from shuffle_r1_jax.checkpoint.hf_files import copy_non_weight_files
from shuffle_r1_jax.checkpoint.orbax_params import save_params
from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError
from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.models.qwen2_5_vl import ConfigError, load_pretrained
from shuffle_r1_jax.parallel.sharding import make_mesh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf_dir", required=True, help="Hugging Face model directory (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="output directory (params/ + config and tokenizer files)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="stored parameter dtype")
    parser.add_argument("--mesh", default=None, help="DATA,FSDP,TENSOR sizes to shard over (default: one device)")
    args = parser.parse_args()
    mesh = make_mesh(*(int(x) for x in args.mesh.split(","))) if args.mesh else None
    start = time.perf_counter()
    try:
        model, _ = load_pretrained(args.hf_dir, DTYPES[args.dtype], mesh=mesh)
    except (CheckpointError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    save_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)), args.out)
    copy_non_weight_files(args.hf_dir, args.out)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"converted {args.hf_dir} -> {args.out} ({args.dtype}) in {time.perf_counter() - start:.1f} s; "
        f"peak host memory (max RSS) {peak_gib:.2f} GiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
