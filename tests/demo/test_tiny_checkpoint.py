"""Tiny checkpoints: load like a real checkpoint (our loader, AutoTokenizer), ids from the tokenizer, seeded."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from shuffle_r1_jax.demo import tiny_checkpoint as tiny
from shuffle_r1_jax.demo import tiny_tokenizer as tt
from shuffle_r1_jax.models.qwen2_5_vl import load_config, load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.random_weights import random_model


def test_loads_like_a_real_checkpoint(tiny_checkpoint):
    model, config = load_pretrained(tiny_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert config.text.vocab_size == len(tokenizer) == model.embed_tokens.embedding.shape[0]
    for field, token in [
        ("image_token_id", tt.IMAGE_PAD),
        ("video_token_id", tt.VIDEO_PAD),
        ("vision_start_token_id", tt.VISION_START),
        ("vision_end_token_id", tt.VISION_END),
        ("eos_token_id", tt.IM_END),
        ("bos_token_id", tt.ENDOFTEXT),
    ]:
        assert getattr(config, field) == tokenizer.convert_tokens_to_ids(token), field
    preset = tiny.PRESETS["test"]
    assert (config.text.hidden_size, config.text.num_hidden_layers) == (64, 2)
    assert (config.vision.hidden_size, config.vision.depth, config.vision.window_size) == (32, 2, 56)
    assert config.vision == preset.vision and config.tie_word_embeddings
    generation = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == config.eos_token_id
    assert generation["pad_token_id"] == tokenizer.pad_token_id
    preprocessor = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    assert preprocessor["max_pixels"] == tiny.TINY_IMAGE_CONFIG.max_pixels


def test_seeded(tmp_path):
    files = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        tiny.make_tiny_checkpoint(tmp_path / name, "test", seed=seed)
        files[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert files["a"] == files["b"] and files["a"] != files["c"]


def test_rope_theta_is_written_and_read_back(tmp_path):
    config = tiny.make_tiny_checkpoint(tmp_path, "test", rope_theta=10.0)
    assert config.text.rope_theta == 10.0 and load_config(tmp_path).text.rope_theta == 10.0
    token_ids = tt.save_tiny_tokenizer(tmp_path / "tokenizer")
    assert tiny.tiny_config("test", token_ids).text.rope_theta == 1e6 == tiny.PRESETS["test"].text.rope_theta


def test_random_model_init_scheme():
    ids = dict(
        vocab_size=256,
        image_token_id=5,
        video_token_id=6,
        vision_start_token_id=3,
        vision_end_token_id=4,
        bos_token_id=0,
        eos_token_id=2,
    )
    model = random_model(tiny.tiny_config("test", ids), seed=0)
    np.testing.assert_array_equal(np.asarray(model.norm.scale[...]), 1.0)
    np.testing.assert_array_equal(np.asarray(model.layers[0].self_attn.q_proj.bias[...]), 0.0)
    kernel = np.asarray(model.layers[0].mlp.up_proj.kernel[...])
    assert 0.015 < kernel.std() < 0.025 and kernel.dtype == np.float32
    with pytest.raises(ValueError, match="preset = 'huge' is unknown"):
        tiny.tiny_config("huge", ids)


def test_cli_demo_preset(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_tiny_checkpoint.py"
    args = [str(tmp_path), "--preset", "demo", "--seed", "1", "--untied", "--max-pixels", "50176"]
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True).stdout
    assert "preset demo" in out
    config = load_config(tmp_path)
    assert (config.text.hidden_size, config.text.num_hidden_layers, config.vision.hidden_size) == (128, 4, 64)
    assert not config.tie_word_embeddings
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["max_pixels"] == 50176
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == tt.CHAT_TEMPLATE
