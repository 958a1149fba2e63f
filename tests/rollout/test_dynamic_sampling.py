"""DAPO dynamic sampling: refilling until the batch is informative, and its fallbacks."""

import pytest

from shuffle_r1_jax.rollout.dynamic_sampling import DynamicSamplingError, fill_informative, informative_groups
from tests.rollout.fakes import fake_scored


def test_refill_until_the_batch_is_informative():
    batches = iter([fake_scored([1, 1, 0, 1, 0, 0]), fake_scored([0, 1, 1, 1, 1, 0])])
    merged, stats = fill_informative(lambda: next(batches), 3, 2, max_tries=3, fallback="error", pad_id=0)
    assert merged.responses == ["r0", "r1", "r0", "r1", "r1", "r0"]
    assert informative_groups(merged.parts["overall"], 2).all()
    assert stats == {"dapo/tries": 2.0, "dapo/filled_groups": 0.0}
    assert merged.rollouts.tokens.shape == (6, 3) and merged.rollouts.prompts.input_ids.shape[0] == 3


def test_fallbacks_fill_or_raise():
    merged, stats = fill_informative(
        lambda: fake_scored([1, 1, 0, 1, 0, 0]), 3, 2, max_tries=1, fallback="fill", pad_id=0
    )
    assert stats["dapo/filled_groups"] == 2.0 and len(merged.responses) == 6
    with pytest.raises(DynamicSamplingError, match="found 1 of 3"):
        fill_informative(lambda: fake_scored([1, 1, 0, 1, 0, 0]), 3, 2, max_tries=1, fallback="error", pad_id=0)
