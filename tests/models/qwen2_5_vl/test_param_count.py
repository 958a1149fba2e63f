"""Parameter counts of the real 3B, 7B, 32B and 72B configs (abstract, nothing allocated) against transformers on
meta."""

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from shuffle_r1_jax.models.qwen2_5_vl import (
    abstract_model,
    count_parameters,
    qwen2_5_vl_3b_config,
    qwen2_5_vl_7b_config,
    qwen2_5_vl_32b_config,
    qwen2_5_vl_72b_config,
)
from tests.models.qwen2_5_vl.test_config import HUB_3B


def _hub(hidden, intermediate, layers, heads, kv_heads, vision_intermediate=None):
    """HUB_3B with the text dimensions of a larger model (untied 152064-token vocabulary); the vision tower's
    merger outputs the text width."""
    vision = {**HUB_3B["vision_config"], "out_hidden_size": hidden}
    if vision_intermediate is not None:
        vision["intermediate_size"] = vision_intermediate
    d = dict(HUB_3B)
    d.update(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=152064,
        tie_word_embeddings=False,
        vision_config=vision,
    )
    return d


@pytest.mark.parametrize(
    "hub, ours",
    [
        (HUB_3B, qwen2_5_vl_3b_config),
        (_hub(3584, 18944, 28, 28, 4), qwen2_5_vl_7b_config),
        (_hub(5120, 27648, 64, 40, 8, vision_intermediate=3456), qwen2_5_vl_32b_config),
        (_hub(8192, 29568, 80, 64, 8, vision_intermediate=3456), qwen2_5_vl_72b_config),
    ],
    ids=["3B", "7B", "32B", "72B"],
)
def test_parameter_count_matches_transformers(hub, ours):
    with torch.device("meta"):
        reference = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_dict(dict(hub)))
    expected = sum(p.numel() for p in reference.parameters())
    assert count_parameters(abstract_model(ours())) == expected
