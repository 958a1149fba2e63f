"""load_image_config: preprocessor_config.json in the layouts transformers writes and the hub ships."""

import json

import pytest
from transformers import Qwen2VLImageProcessorPil

from shuffle_r1_jax.processing.image import ImagePreprocessConfig, load_image_config
from tests.tiny_assets import IMAGE_CONFIG


def test_tiny_checkpoint_and_transformers_layouts(tiny_checkpoint, tmp_path):
    assert load_image_config(tiny_checkpoint) == IMAGE_CONFIG
    Qwen2VLImageProcessorPil(min_pixels=100 * 28 * 28, max_pixels=200 * 28 * 28).save_pretrained(tmp_path)
    assert load_image_config(tmp_path) == ImagePreprocessConfig(min_pixels=78400, max_pixels=156800)
    hub = tmp_path / "hub.json"
    size = {"shortest_edge": 1, "longest_edge": 2}  # min_pixels / max_pixels override size
    hub.write_text(json.dumps({"min_pixels": 3136, "max_pixels": 12845056, "size": size}))
    assert load_image_config(hub) == ImagePreprocessConfig()
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        load_image_config(tmp_path / "missing")
