"""save_hf_checkpoint / hf_config_dict: transformers loads what we write and agrees on logits; we load it back."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from shuffle_r1_jax.checkpoint.safetensors_io import SafetensorsCheckpoint
from shuffle_r1_jax.models.qwen2_5_vl import (
    Qwen25VLConfig,
    TextConfig,
    VisionConfig,
    config_from_dict,
    forward_logits,
    load_pretrained,
    qwen2_5_vl_3b_config,
    qwen2_5_vl_7b_config,
    random_weights,
)
from shuffle_r1_jax.models.qwen2_5_vl.saving import hf_config_dict, save_hf_checkpoint
from tests.models.qwen2_5_vl.hf_reference import TOKENS, build_sample, hf_logits, pad_batch, random_pixels


def tiny_config(tie: bool) -> Qwen25VLConfig:
    text = TextConfig(
        vocab_size=160,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        mrope_section=(2, 3, 3),
        max_position_embeddings=4096,
    )
    vision = VisionConfig(
        depth=4,
        hidden_size=32,
        intermediate_size=48,
        num_heads=2,
        out_hidden_size=64,
        window_size=56,
        fullatt_block_indexes=(1, 3),
    )
    return Qwen25VLConfig(text=text, vision=vision, tie_word_embeddings=tie, **TOKENS)


def random_model(config: Qwen25VLConfig, seed: int):
    """Every parameter random (biases and norm scales too), so no layout mistake can hide behind zeros/ones."""
    return random_weights.random_model(config, seed, perturb_std=0.05)


@pytest.mark.parametrize(
    "config",
    [tiny_config(True), tiny_config(False), qwen2_5_vl_3b_config(), qwen2_5_vl_7b_config()],
    ids=["tiny-tied", "tiny-untied", "3b", "7b"],
)
def test_config_round_trip_and_transformers_reads_it(config, tmp_path):
    raw = hf_config_dict(config)
    assert config_from_dict(raw) == config
    (tmp_path / "config.json").write_text(json.dumps(raw))
    hf = Qwen2_5_VLConfig.from_pretrained(tmp_path)
    assert hf.text_config.hidden_size == config.text.hidden_size
    assert hf.text_config.rope_parameters["mrope_section"] == list(config.text.mrope_section)
    assert hf.vision_config.fullatt_block_indexes == list(config.vision.fullatt_block_indexes)
    assert hf.image_token_id == config.image_token_id and hf.tie_word_embeddings == config.tie_word_embeddings


def test_unrepresentable_config_is_refused():
    config = tiny_config(True)
    odd_head = dataclasses.replace(config, text=dataclasses.replace(config.text, head_dim=32, mrope_section=(4, 6, 6)))
    with pytest.raises(ValueError, match="head_dim = 32"):
        hf_config_dict(odd_head)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_transformers_loads_our_checkpoint_with_the_same_logits(tie, tmp_path):
    model = random_model(tiny_config(tie), seed=3)
    save_hf_checkpoint(model, tmp_path)
    checkpoint = SafetensorsCheckpoint(tmp_path)
    assert checkpoint.shape("visual.patch_embed.proj.weight") == (32, 3, 2, 14, 14)
    assert ("lm_head.weight" in checkpoint) == (not tie)

    hf_model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hf_model.eval()
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 6, 10)]
    samples = [build_sample(rng, [3, grids[0], 4, grids[1], 2]), build_sample(rng, [7])]
    ids, mask = pad_batch(samples, "left")
    pixels = random_pixels(rng, grids)
    ref = hf_logits(hf_model, ids, mask, pixels, np.asarray(grids))
    got = np.asarray(forward_logits(model, ids, mask, pixels, np.asarray(grids)))
    valid = mask.astype(bool)
    assert np.abs(ref - got)[valid].max() <= 1e-4


def test_sharded_save_loads_back_bit_identically(tmp_path):
    model = random_model(tiny_config(False), seed=5)
    save_hf_checkpoint(model, tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and not (tmp_path / "model.safetensors").exists()
    assert all((tmp_path / f).stat().st_size <= 200_000 + 16_384 for f in files[:-1])
    loaded, config = load_pretrained(tmp_path)
    assert config == model.config
    ours = nnx.to_flat_state(nnx.state(model, nnx.Param))
    back = dict(nnx.to_flat_state(nnx.state(loaded, nnx.Param)))
    for path, var in ours:
        np.testing.assert_array_equal(np.asarray(back[path][...]), np.asarray(var[...]), err_msg=str(path))


def test_bfloat16_export(tmp_path):
    model = random_model(tiny_config(True), seed=7)
    save_hf_checkpoint(model, tmp_path, dtype=jnp.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded, _ = load_pretrained(tmp_path, dtype=jnp.bfloat16)
    embed = np.asarray(model.embed_tokens.embedding[...]).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(loaded.embed_tokens.embedding[...]), embed)
