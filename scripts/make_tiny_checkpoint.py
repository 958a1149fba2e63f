"""Writes a tiny random Qwen2.5-VL checkpoint in the Hugging Face layout (for tests and the CPU demo).

The directory holds config.json, model.safetensors, the tiny tokenizer, preprocessor_config.json and
generation_config.json; `load_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)` load it.

    python scripts/make_tiny_checkpoint.py OUT_DIR [--preset test|demo] [--seed 0] [--vocab-size 256]
        [--min-pixels 3136] [--max-pixels 12544] [--untied] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import sys

from shuffle_r1_jax.demo.tiny_checkpoint import PRESETS, TINY_IMAGE_CONFIG, make_tiny_checkpoint
from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.models.qwen2_5_vl import count_parameters, load_pretrained
from shuffle_r1_jax.processing.image import ImagePreprocessConfig


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="checkpoint directory to write (created if missing)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="test",
        help="model size: 'test' (text hidden 64, 2 layers; vision depth 2, hidden 32) or "
        "'demo' (text hidden 128, 4 layers; vision depth 2, hidden 64)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=256,
        help="tokenizer budget (at least 109); the model vocabulary is the trained tokenizer's length",
    )
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=TINY_IMAGE_CONFIG.min_pixels,
        help="preprocessor_config.json min_pixels (images smaller are upscaled)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=TINY_IMAGE_CONFIG.max_pixels,
        help="preprocessor_config.json max_pixels (images larger are downscaled)",
    )
    parser.add_argument("--untied", action="store_true", help="write a separate lm_head (default: tied embeddings)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="storage dtype of the weights")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    image_config = ImagePreprocessConfig(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    config = make_tiny_checkpoint(
        args.out_dir,
        args.preset,
        seed=args.seed,
        vocab_size=args.vocab_size,
        image_config=image_config,
        tie_word_embeddings=False if args.untied else None,
        dtype=DTYPES[args.dtype],
    )
    model, _ = load_pretrained(args.out_dir)
    print(
        f"wrote {args.out_dir}: preset {args.preset}, {count_parameters(model):,} parameters, "
        f"vocab {config.text.vocab_size}, text hidden {config.text.hidden_size} x {config.text.num_hidden_layers} "
        f"layers, vision hidden {config.vision.hidden_size} x {config.vision.depth} blocks"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
