"""config.json in the three layouts (hub flat, 4.x text_config + rope_scaling, 5.x rope_parameters), and errors."""

import copy
import json

import pytest

from shuffle_r1_jax.models.qwen2_5_vl import ConfigError, config_from_dict, load_config, qwen2_5_vl_3b_config

# The fields of Qwen/Qwen2.5-VL-3B-Instruct's hub config.json (flat layout).
HUB_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 128000,
    "max_window_layers": 70,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}

TEXT_KEYS = [
    "hidden_act",
    "hidden_size",
    "intermediate_size",
    "max_position_embeddings",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "rms_norm_eps",
    "use_sliding_window",
    "vocab_size",
]


def _v4_layout(flat):
    """transformers 4.x save_pretrained: text fields under text_config, rope_scaling kept."""
    out = {k: v for k, v in flat.items() if k not in TEXT_KEYS + ["rope_scaling", "rope_theta"]}
    out["text_config"] = {k: flat[k] for k in TEXT_KEYS}
    out["text_config"].update(
        rope_theta=flat["rope_theta"],
        rope_scaling={**flat["rope_scaling"], "rope_type": "default"},
        model_type="qwen2_5_vl_text",
    )
    return out


def _v5_layout(flat):
    """transformers 5.x save_pretrained: text_config.rope_parameters with mrope_section and rope_theta."""
    out = _v4_layout(flat)
    rope = out["text_config"].pop("rope_scaling")
    out["text_config"].pop("rope_theta")
    out["text_config"]["rope_parameters"] = {
        "mrope_section": rope["mrope_section"],
        "rope_type": "default",
        "rope_theta": flat["rope_theta"],
    }
    return out


@pytest.mark.parametrize("layout", [lambda d: d, _v4_layout, _v5_layout], ids=["hub", "4.x", "5.x"])
def test_three_layouts_read_the_same_3b_config(layout):
    assert config_from_dict(layout(copy.deepcopy(HUB_3B))) == qwen2_5_vl_3b_config()


def test_reads_what_transformers_saves(tmp_path):
    from tests.models.qwen2_5_vl.hf_reference import tiny_hf_config

    tiny_hf_config(tie_word_embeddings=True).save_pretrained(tmp_path)
    config = load_config(tmp_path)
    assert config.tie_word_embeddings
    assert config.text.mrope_section == (2, 3, 3) and config.text.head_dim == 16
    assert config.vision.window_size == 56 and config.vision.fullatt_block_indexes == (1, 3)
    assert config.image_token_id == 152


def _broken(edit):
    d = copy.deepcopy(HUB_3B)
    edit(d)
    return d


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(model_type="llava"), "'model_type' = 'llava'"),
        (lambda d: d.pop("hidden_size"), "missing required field 'hidden_size'"),
        (lambda d: d["vision_config"].pop("depth"), "'vision_config.depth'"),
        (lambda d: d.update(rope_scaling={"type": "mrope", "mrope_section": [16, 24, 20]}), "mrope_section"),
        (lambda d: d.update(rope_scaling={"type": "yarn", "mrope_section": [16, 24, 24]}), "'yarn' is not supported"),
        (lambda d: d.pop("rope_scaling"), "rope_scaling"),
        (lambda d: d["vision_config"].update(out_hidden_size=3584), "out_hidden_size = 3584"),
        (lambda d: d.update(num_key_value_heads=3), "num_key_value_heads = 3"),
        (lambda d: d.update(use_sliding_window=True), "use_sliding_window"),
        (lambda d: d["vision_config"].update(fullatt_block_indexes=[7, 40]), r"fullatt_block_indexes = \[40\]"),
    ],
)
def test_bad_configs_raise_errors_naming_the_key(edit, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_broken(edit))


def test_invalid_json_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(HUB_3B))
    assert load_config(tmp_path) == qwen2_5_vl_3b_config()
