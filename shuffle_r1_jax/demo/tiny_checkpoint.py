"""Tiny random Qwen2.5-VL checkpoints in the Hugging Face layout, for tests and the CPU demo.

A tiny checkpoint directory looks like a real one: config.json (transformers 5.x layout), model.safetensors
with hub tensor names, the tiny tokenizer (tokenizer.json, tokenizer_config.json with the chat template),
preprocessor_config.json and generation_config.json. `load_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)` load it like a downloaded model. The vocabulary is the tiny tokenizer's
and the special token ids are its ids; weights are random (`random_model`: the model's initialisation
scheme, drawn with numpy), seeded.

Presets (`PRESETS`):
  "test": text hidden 64, 2 layers, 4 heads (2 kv), vision depth 2, hidden 32: the smallest, for tests.
  "demo": text hidden 128, 4 layers, 4 heads (2 kv), vision depth 2, hidden 64: small enough to train on CPU.
Both use window_size 56 (windows of 2x2 merged tokens), so a 112 px image has 4 windows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax.numpy as jnp

from shuffle_r1_jax.demo.tiny_tokenizer import save_tiny_tokenizer
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig, TextConfig, VisionConfig
from shuffle_r1_jax.models.qwen2_5_vl.random_weights import random_model
from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint
from shuffle_r1_jax.processing.image import ImagePreprocessConfig

TINY_IMAGE_CONFIG = ImagePreprocessConfig(min_pixels=56 * 56, max_pixels=112 * 112)


@dataclasses.dataclass(frozen=True)
class TinyPreset:
    """Model dimensions of a tiny checkpoint; the vocabulary and token ids come from the tokenizer.

    Attributes:
      text: the text model's config; its `vocab_size` is a placeholder that `tiny_config` replaces.
      vision: the vision tower's config.
      tie_word_embeddings: whether the LM head shares the token embedding.
    """

    text: TextConfig
    vision: VisionConfig
    tie_word_embeddings: bool = True


PRESETS: dict[str, TinyPreset] = {
    "test": TinyPreset(
        text=TextConfig(
            vocab_size=0,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            mrope_section=(2, 3, 3),
            max_position_embeddings=4096,
        ),
        vision=VisionConfig(
            depth=2,
            hidden_size=32,
            intermediate_size=48,
            num_heads=2,
            out_hidden_size=64,
            window_size=56,
            fullatt_block_indexes=(1,),
        ),
    ),
    "demo": TinyPreset(
        text=TextConfig(
            vocab_size=0,
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            mrope_section=(4, 6, 6),
            max_position_embeddings=4096,
        ),
        vision=VisionConfig(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            out_hidden_size=128,
            window_size=56,
            fullatt_block_indexes=(1,),
        ),
    ),
}


def tiny_config(
    preset: str | TinyPreset,
    token_ids: dict[str, int],
    tie_word_embeddings: bool | None = None,
    rope_theta: float | None = None,
) -> Qwen25VLConfig:
    """The model config of a preset with the tokenizer's vocabulary size and special token ids.

    Args:
      preset: "test", "demo" or a `TinyPreset`.
      token_ids: as returned by `save_tiny_tokenizer` (vocab_size, bos/eos/image/video/vision_start/end ids).
      tie_word_embeddings: None keeps the preset's choice.
      rope_theta: the text model's M-RoPE base; None keeps the preset's (Qwen2.5-VL's 1e6). With a 32-wide head
        and sections (4, 6, 6), base 1e6 turns the height rows by at most 0.032 rad and the width rows by at most
        0.0002 rad per merged image token, so a tiny model cannot tell its image tokens apart by place; base 10
        turns them by 0.27-0.56 and 0.12-0.24 rad.

    Returns:
      The `Qwen25VLConfig`.

    Raises:
      ValueError: if `preset` is a name not in `PRESETS`.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"preset = {preset!r} is unknown; expected one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    tie = preset.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings
    return Qwen25VLConfig(
        text=dataclasses.replace(
            preset.text,
            vocab_size=token_ids["vocab_size"],
            rope_theta=preset.text.rope_theta if rope_theta is None else rope_theta,
        ),
        vision=preset.vision,
        tie_word_embeddings=tie,
        image_token_id=token_ids["image_token_id"],
        video_token_id=token_ids["video_token_id"],
        vision_start_token_id=token_ids["vision_start_token_id"],
        vision_end_token_id=token_ids["vision_end_token_id"],
        bos_token_id=token_ids["bos_token_id"],
        eos_token_id=token_ids["eos_token_id"],
    )


def _generation_config(token_ids: dict[str, int]) -> dict:
    """generation_config.json: stop at <|im_end|> or <|endoftext|>, pad with <|endoftext|>."""
    return {
        "bos_token_id": token_ids["bos_token_id"],
        "eos_token_id": [token_ids["eos_token_id"], token_ids["pad_token_id"]],
        "pad_token_id": token_ids["pad_token_id"],
    }


def make_tiny_checkpoint(
    out_dir: str | os.PathLike,
    preset: str | TinyPreset = "test",
    *,
    seed: int = 0,
    vocab_size: int = 256,
    image_config: ImagePreprocessConfig = TINY_IMAGE_CONFIG,
    tie_word_embeddings: bool | None = None,
    rope_theta: float | None = None,
    dtype=jnp.float32,
) -> Qwen25VLConfig:
    """Writes a complete tiny HF-format checkpoint directory and returns its model config.

    Args:
      out_dir: the checkpoint directory (created).
      preset: "test", "demo" or a `TinyPreset`.
      seed: seeds the weights (`random_model`); the tokenizer is deterministic for a vocab_size.
      vocab_size: the tokenizer's budget; the model's vocabulary is the trained tokenizer's length.
      image_config: written as preprocessor_config.json (min/max pixels for the demo's small images).
      tie_word_embeddings: None keeps the preset's choice.
      rope_theta: the text model's M-RoPE base; None keeps the preset's (see `tiny_config`).
      dtype: storage dtype of the written weights.

    Returns:
      The written model's `Qwen25VLConfig`.

    Raises:
      ValueError: if `preset` is a name not in `PRESETS`, or `vocab_size` is below the tokenizer's reserved
        tokens.
    """
    out = Path(out_dir)
    token_ids = save_tiny_tokenizer(out, vocab_size=vocab_size, image_config=image_config)
    config = tiny_config(preset, token_ids, tie_word_embeddings, rope_theta)
    save_hf_checkpoint(random_model(config, seed), out, dtype=dtype)
    (out / "generation_config.json").write_text(json.dumps(_generation_config(token_ids), indent=2) + "\n")
    return config
