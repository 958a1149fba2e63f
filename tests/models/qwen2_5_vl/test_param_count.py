"""Parameter counts of the real 3B and 7B configs (abstract, nothing allocated) against transformers on meta."""

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from shuffle_r1_jax.models.qwen2_5_vl import (
    abstract_model,
    count_parameters,
    qwen2_5_vl_3b_config,
    qwen2_5_vl_7b_config,
)
from tests.models.qwen2_5_vl.test_config import HUB_3B


def _hub_7b():
    d = dict(HUB_3B)
    d.update(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
        vision_config={**HUB_3B["vision_config"], "out_hidden_size": 3584},
    )
    return d


@pytest.mark.parametrize(
    "hub, ours",
    [(HUB_3B, qwen2_5_vl_3b_config), (_hub_7b(), qwen2_5_vl_7b_config)],
    ids=["3B", "7B"],
)
def test_parameter_count_matches_transformers(hub, ours):
    with torch.device("meta"):
        reference = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_dict(dict(hub)))
    expected = sum(p.numel() for p in reference.parameters())
    assert count_parameters(abstract_model(ours())) == expected
