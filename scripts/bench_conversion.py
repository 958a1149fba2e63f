"""Peak host memory of `scripts/convert_hf_to_orbax.py` on a random model with real Qwen2.5-VL dimensions.

    python scripts/bench_conversion.py [--size 3b|7b] [--dtype bfloat16] [--workdir /tmp/conversion_bench]

Writes a random-weight HF checkpoint of the chosen size (transformers, bf16 safetensors), runs the
conversion in a fresh process, and records its max RSS against the size of one copy of the weights in the
target dtype in BUILD_NOTES.md.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import shutil
import subprocess
import sys
from pathlib import Path

from shuffle_r1_jax.perf.notes import write_section

NOTES = Path(__file__).resolve().parents[1] / "BUILD_NOTES.md"

# text dimensions of the released models (a checkpoint written by transformers itself, as users download them)
SIZES = {
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}  # fmt: skip


def write_random_checkpoint(size: str, directory: pathlib.Path) -> int:
    """Saves a random bf16 model of `size`; returns its parameter count."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(SIZES[size], rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(
            out_hidden_size=text["hidden_size"],
            hidden_size=1280,
            intermediate_size=3420,
            depth=32,
            num_heads=16,
            fullatt_block_indexes=[7, 15, 23, 31],
            window_size=112,
        ),
        tie_word_embeddings=text["tie_word_embeddings"],
    )
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(directory, max_shard_size="2GB")
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="3b", help="real Qwen2.5-VL dimensions")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="converted dtype")
    parser.add_argument("--workdir", default="/tmp/conversion_bench", help="scratch directory (deleted after)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BUILD_NOTES.md alone")
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    hf_dir, out = work / "hf", work / "orbax"
    count = write_random_checkpoint(args.size, hf_dir)
    script = pathlib.Path(__file__).resolve().parent / "convert_hf_to_orbax.py"
    result = subprocess.run(
        [sys.executable, str(script), "--hf_dir", str(hf_dir), "--out", str(out), "--dtype", args.dtype],
        capture_output=True,
        text=True,
        check=True,
    )
    line = result.stdout.strip().splitlines()[-1]
    one_copy = count * (2 if args.dtype == "bfloat16" else 4) / 2**30
    shutil.rmtree(work, ignore_errors=True)
    body = (
        f"Command: `python scripts/bench_conversion.py --size {args.size} --dtype {args.dtype}`; CPU, 2 cores, "
        f"24 GiB, {datetime.date.today()}.\n\nRandom Qwen2.5-VL-{args.size.upper()} ({count / 1e9:.2f} B parameters): "
        f"one copy of the weights in {args.dtype} is {one_copy:.2f} GiB. Conversion: {line.split('; ')[-1]} "
        f"({line.split(' in ')[-1].split(';')[0]}).\n"
    )
    print(body)
    if not args.no_write:
        write_section(NOTES, "HF -> orbax conversion memory", body)


if __name__ == "__main__":
    main()
