"""Prompt sampling in the trainer: every rollout batch's pass rates reach the training stream's table, which the
checkpoint keeps and a resumed trainer reads back."""

import numpy as np

from shuffle_r1_jax.data.pass_rates import PassRateTable
from tests.train.conftest import make_trainer, tiny_trainer_config


def test_prioritized_sampling_tracks_pass_rates_through_a_checkpoint(demo_cache, tmp_path):
    c = tiny_trainer_config(demo_cache)
    c.data.sampling = "prioritized"
    c.data.pass_rate_update_weight = 0.5
    c.train.total_steps = 3
    trainer = make_trainer(c, tmp_path)
    seen = []
    generate = trainer.generate

    def recorded(params, batch, key):
        scored = generate(params, batch, key)
        seen.append((batch.record_indices.copy(), np.asarray(scored.parts["accuracy"]).reshape(-1, c.rollout.n)))
        return scored

    trainer.generate = recorded
    try:
        trainer.fit()
        table = trainer.train_batches.pass_rates
    finally:
        trainer.close()

    expected = PassRateTable(len(table.rates), 0.5)
    for indices, accuracy in seen:
        for index, row in zip(indices, accuracy):
            expected.observe(np.asarray([index]), np.asarray([row.sum() / len(row)]))
    assert len(seen) == 3 and (np.concatenate([i for i, _ in seen]) >= 0).all()
    np.testing.assert_allclose(table.rates, expected.rates)
    np.testing.assert_array_equal(table.visits, expected.visits)

    resumed = make_trainer(c, tmp_path)
    try:
        assert resumed.step == 3
        np.testing.assert_array_equal(resumed.train_batches.pass_rates.rates, table.rates)
        np.testing.assert_array_equal(resumed.train_batches.pass_rates.visits, table.visits)
    finally:
        resumed.close()
