"""DAPO dynamic sampling: merging prompt batches keeps every prompt's logits; refilling and its fallbacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.rollout.dynamic_sampling import (
    DynamicSamplingError,
    concat_prompts,
    fill_informative,
    informative_groups,
)
from shuffle_r1_jax.rollout.types import Rollouts, ScoredRollouts
from tests.models.qwen2_5_vl.hf_reference import build_sample, pad_batch, random_pixels


def _logits(model, inputs):
    i = jax.tree.map(jnp.asarray, inputs)
    return np.asarray(model(i.input_ids, i.attention_mask, i.position_ids, i.vision, i.image_token_slot))


def test_concatenated_prompt_batches_give_each_prompt_its_own_logits(untied_pair):
    _, model = untied_pair
    rng = np.random.default_rng(0)
    grids_a, grids_b = [(1, 4, 4)], [(1, 8, 12), (1, 6, 10)]
    ids_a, mask_a = pad_batch([build_sample(rng, [2, grids_a[0], 3]), build_sample(rng, [5])], "left")
    ids_b, mask_b = pad_batch([build_sample(rng, [3, grids_b[0], 4]), build_sample(rng, [1, grids_b[1], 9])], "left")
    a = prepare_inputs(model.config, ids_a, mask_a, random_pixels(rng, grids_a), np.asarray(grids_a))
    b = prepare_inputs(model.config, ids_b, mask_b, random_pixels(rng, grids_b), np.asarray(grids_b))
    text_only = prepare_inputs(model.config, *pad_batch([build_sample(rng, [7])], "left"))
    merged = concat_prompts([a, text_only, b], pad_id=0)
    got = _logits(model, merged)
    offset = 0
    for part in (a, text_only, b):
        expected = _logits(model, part)
        rows = slice(offset, offset + part.input_ids.shape[0])
        length = part.input_ids.shape[1]
        np.testing.assert_allclose(
            got[rows, -length:][part.attention_mask == 1], expected[part.attention_mask == 1], atol=1e-5
        )
        offset += part.input_ids.shape[0]


def _fake_scored(scores, n=2, length=3):
    """A ScoredRollouts of len(scores) / n text-only prompts with the given overall scores."""
    rows = len(scores)
    prompts = prepare_inputs(_fake_scored.config, np.arange(1, 1 + 2 * rows // n).reshape(rows // n, 2) % 100)
    return ScoredRollouts(
        rollouts=Rollouts(
            jax.tree.map(jnp.asarray, prompts),
            jnp.zeros((rows, length), jnp.int32),
            jnp.ones((rows, length), jnp.int32),
            jnp.zeros((rows, length)),
        ),
        responses=[f"r{s}" for s in scores],
        parts={"overall": np.asarray(scores, np.float32)},
        reward_failures={"timeout": 0},
        finish=np.zeros(rows, np.int32),
        timings={"generate": 1.0},
    )


def test_refill_until_the_batch_is_informative(untied_pair):
    _fake_scored.config = untied_pair[1].config
    batches = iter([_fake_scored([1, 1, 0, 1, 0, 0]), _fake_scored([0, 1, 1, 1, 1, 0])])
    merged, stats = fill_informative(lambda: next(batches), 3, 2, max_tries=3, fallback="error", pad_id=0)
    assert merged.responses == ["r0", "r1", "r0", "r1", "r1", "r0"]
    assert informative_groups(merged.parts["overall"], 2).all()
    assert stats == {"dapo/tries": 2.0, "dapo/filled_groups": 0.0}
    assert merged.rollouts.tokens.shape == (6, 3) and merged.rollouts.prompts.input_ids.shape[0] == 3


def test_fallbacks_fill_or_raise(untied_pair):
    _fake_scored.config = untied_pair[1].config
    merged, stats = fill_informative(
        lambda: _fake_scored([1, 1, 0, 1, 0, 0]), 3, 2, max_tries=1, fallback="fill", pad_id=0
    )
    assert stats["dapo/filled_groups"] == 2.0 and len(merged.responses) == 6
    with pytest.raises(DynamicSamplingError, match="found 1 of 3"):
        fill_informative(lambda: _fake_scored([1, 1, 0, 1, 0, 0]), 3, 2, max_tries=1, fallback="error", pad_id=0)
