"""A random-weight checkpoint of real Qwen2.5-VL-3B dimensions in the Hugging Face layout, with synthetic image
prompts, for benchmarking the trainer at full size where no real weights can be downloaded."""

from __future__ import annotations

import dataclasses
import os
import pathlib

from shuffle_r1_jax.demo.synthetic import write_synthetic_dataset
from shuffle_r1_jax.demo.tiny_tokenizer import save_tiny_tokenizer
from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.models.qwen2_5_vl.config import qwen2_5_vl_3b_config
from shuffle_r1_jax.models.qwen2_5_vl.random_weights import random_model
from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint
from shuffle_r1_jax.processing.image import ImagePreprocessConfig

TOKEN_FIELDS = (
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "bos_token_id",
    "eos_token_id",
)


def random_3b_assets(
    cache_dir: str, *, layers: int, vision_layers: int, dtype: str, image_size: int, seed: int = 0
) -> dict[str, str]:
    """Writes once under `cache_dir` a random checkpoint of Qwen2.5-VL-3B dimensions and synthetic prompts.

    The checkpoint has the 3B widths (text 2048 wide, vocabulary 151936, vision tower of width 1280) with the
    demo's tokenizer and its special token ids; the data set has 512 training prompts (and 8 validation
    prompts) of square images. Assets already in the cache are reused.

    Args:
      cache_dir: the cache directory (`~` expanded); the assets go in a subdirectory named by the other
        arguments.
      layers: decoder layers (fewer than the 3B's for a CPU smoke test).
      vision_layers: vision tower blocks.
      dtype: the weights' dtype name, a key of `DTYPES`.
      image_size: the images' side in pixels (the saved image processor's min and max pixels are its area).
      seed: seeds the weights and the data set.

    Returns:
      {"checkpoint": the checkpoint directory, "train": the training parquet file}.
    """
    name = f"3b-l{layers}-v{vision_layers}-{dtype}-img{image_size}-s{seed}"
    root = pathlib.Path(os.path.expanduser(cache_dir)) / name
    checkpoint, data = root / "checkpoint", root / "data"
    if not (checkpoint / "config.json").exists():
        pixels = image_size * image_size
        image_config = ImagePreprocessConfig(min_pixels=pixels, max_pixels=pixels)
        token_ids = save_tiny_tokenizer(checkpoint, image_config=image_config)
        base = qwen2_5_vl_3b_config()
        full = tuple(i for i in base.vision.fullatt_block_indexes if i < vision_layers) or (vision_layers - 1,)
        config = dataclasses.replace(
            base,
            text=dataclasses.replace(base.text, num_hidden_layers=layers),
            vision=dataclasses.replace(base.vision, depth=vision_layers, fullatt_block_indexes=full),
            **{k: token_ids[k] for k in TOKEN_FIELDS},
        )
        save_hf_checkpoint(random_model(config, seed, dtype=DTYPES[dtype]), checkpoint)
    if not (data / "train.parquet").exists():
        write_synthetic_dataset(data, num_train=512, num_val=8, seed=seed, image_size=image_size)
    return {"checkpoint": str(checkpoint), "train": str(data / "train.parquet")}
