"""Pass-rate tracking, prioritized draws and curriculum order: hand cases and draw frequencies against the
probabilities the pass rates give."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from shuffle_r1_jax.data.examples import BadRecord
from shuffle_r1_jax.data.pass_rates import PassRateTable
from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
from shuffle_r1_jax.data.record_order import PrioritizedDraws, SamplingConfig, curriculum_order
from shuffle_r1_jax.models.qwen2_5_vl import load_config
from shuffle_r1_jax.processing.batch import BucketConfig
from shuffle_r1_jax.processing.prompts import PromptEncoder
from tests.tiny_assets import IMAGE_CONFIG

BUCKETS = BucketConfig(prompt_lengths=(64, 128, 256), vision_rows=(4, 8), windows=(1, 4))


def test_pass_rates_are_a_moving_average_from_the_first_visit():
    table = PassRateTable(4, update_weight=0.5)
    table.observe(np.asarray([0, 1, -1]), np.asarray([0.25, 1.0, 0.0]))
    table.observe(np.asarray([0, 0]), np.asarray([0.75, 0.75]))
    # record 0: 0.25, then 0.25 + 0.5 (0.75 - 0.25) = 0.5, then 0.5 + 0.5 (0.75 - 0.5) = 0.625
    np.testing.assert_allclose(table.rates[:2], [0.625, 1.0])
    assert np.isnan(table.rates[2:]).all()
    assert table.visits.tolist() == [3, 1, 0, 0]
    assert table.counts() == {"pass_rate/tracked": 2, "pass_rate/solved": 1, "pass_rate/unsolved": 0}

    restored = PassRateTable(4, update_weight=0.5)
    restored.set_state(json.loads(json.dumps(table.get_state())))
    np.testing.assert_array_equal(restored.rates, table.rates)
    np.testing.assert_array_equal(restored.visits, table.visits)
    with pytest.raises(ValueError, match="of 4 records; this dataset has 5"):
        PassRateTable(5, 0.5).set_state(table.get_state())
    with pytest.raises(ValueError, match="data.pass_rate_update_weight = 0"):
        PassRateTable(4, 0.0)


def test_priorities_are_one_minus_the_pass_rate_with_a_floor():
    table = PassRateTable(5, update_weight=1.0)
    table.observe(np.asarray([0, 1, 2, 3]), np.asarray([0.0, 0.5, 1.0, 0.95]))
    np.testing.assert_allclose(table.priorities(0.1), [1.0, 0.5, 0.1, 0.1, 1.0])


def _draws(table, example=lambda i: i, **kwargs):
    settings = dict(batch_size=1, floor=0.1, seed=0, process_index=0, process_count=1, num_threads=0) | kwargs
    return PrioritizedDraws(len(table.rates), example, table, **settings)


def test_draw_frequencies_follow_the_priorities():
    table = PassRateTable(4, update_weight=1.0)
    table.observe(np.asarray([0, 1, 2]), np.asarray([0.0, 0.5, 1.0]))
    draws = _draws(table)
    counts = np.bincount([next(draws) for _ in range(6000)], minlength=4)
    expected = np.asarray([1.0, 0.5, 0.1, 1.0]) / 2.6
    sigma = np.sqrt(expected * (1 - expected) / 6000)
    assert np.all(np.abs(counts / 6000 - expected) < 4 * sigma), (counts / 6000, expected)


def test_a_draw_holds_distinct_records_of_this_process_share():
    table = PassRateTable(10, update_weight=1.0)
    draws = _draws(table, batch_size=4, process_index=1, process_count=3)
    for _ in range(20):
        batch = [next(draws) for _ in range(3)]  # the share is records 1, 4, 7: one draw of 3
        assert sorted(batch) == [1, 4, 7]


def test_bad_records_are_not_drawn_again():
    table = PassRateTable(3, update_weight=1.0)
    draws = _draws(table, example=lambda i: BadRecord(str(i), "bad_image", "x") if i == 1 else i)
    drawn = [next(draws) for _ in range(200)]
    bad = [d for d in drawn if isinstance(d, BadRecord)]
    assert len(bad) == 1 and sorted(set(d for d in drawn if not isinstance(d, BadRecord))) == [0, 2]


def test_draws_resume_exactly_from_their_state():
    table = PassRateTable(20, update_weight=0.5)
    draws = _draws(table, batch_size=4, seed=7)
    for step in range(3):
        batch = [next(draws) for _ in range(3)]  # not a whole draw: one drawn record stays pending
        table.observe(np.asarray(batch), np.full(3, step / 3))
    state = json.loads(json.dumps({"draws": draws.get_state(), "table": table.get_state()}))
    expected = []
    for step in range(3, 6):
        batch = [next(draws) for _ in range(3)]
        expected.append(batch)
        table.observe(np.asarray(batch), np.full(3, step / 3))

    resumed_table = PassRateTable(20, update_weight=0.5)
    resumed_table.set_state(state["table"])
    resumed = _draws(resumed_table, batch_size=4, seed=7)
    resumed.set_state(state["draws"])
    for step in range(3, 6):
        batch = [next(resumed) for _ in range(3)]
        assert batch == expected[step - 3]
        resumed_table.observe(np.asarray(batch), np.full(3, step / 3))


def test_curriculum_order_sorts_with_seeded_ties_and_missing_values_last():
    values = np.asarray([3.0, 1.0, np.nan, 1.0, 2.0])
    ascending = curriculum_order(values, True, seed=0).tolist()
    assert sorted(ascending[:2]) == [1, 3] and ascending[2:] == [4, 0, 2]
    assert curriculum_order(values, True, seed=0).tolist() == ascending
    descending = curriculum_order(values, False, seed=0).tolist()
    assert descending[:2] == [0, 4] and sorted(descending[2:4]) == [1, 3] and descending[4] == 2
    ties = {tuple(curriculum_order(np.zeros(6), True, seed=s).tolist()) for s in range(5)}
    assert len(ties) > 1  # the seed decides the order of equal values


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    return PromptEncoder.from_checkpoint(tiny_checkpoint, image_config=IMAGE_CONFIG, max_prompt_length=256)


def test_curriculum_pipeline_reads_easy_to_hard(synthetic_data, tiny_checkpoint, encoder):
    path = synthetic_data / "train.parquet"
    difficulty = pq.read_table(path, columns=["difficulty"]).column("difficulty").to_pylist()
    config = PipelineConfig(batch_size=5, num_epochs=1, sampling=SamplingConfig("curriculum"))
    batches = prompt_batches(str(path), encoder, load_config(tiny_checkpoint), config, buckets=BUCKETS)
    order = [int(i) for batch in batches for i in batch.record_indices]
    assert sorted(order) == list(range(len(difficulty)))
    levels = [difficulty[i] for i in order]
    assert levels == sorted(levels) and len(set(levels)) > 1

    missing = PipelineConfig(
        batch_size=5, num_epochs=1, sampling=SamplingConfig("curriculum", curriculum_column="level")
    )
    with pytest.raises(ValueError, match="column 'level' not found"):
        next(prompt_batches(str(path), encoder, load_config(tiny_checkpoint), missing, buckets=BUCKETS))


def test_prioritized_pipeline_resumes_with_its_pass_rates(synthetic_data, tiny_checkpoint, encoder):
    path = str(synthetic_data / "train.parquet")
    config = PipelineConfig(batch_size=4, sampling=SamplingConfig("prioritized", priority_floor=0.05), seed=3)
    model_config = load_config(tiny_checkpoint)

    def step(iterator, k):
        batch = next(iterator)
        # records with an even index always pass, the others fail half the time
        iterator.observe(batch.record_indices, np.where(batch.record_indices % 2 == 0, 1.0, 0.5 * (k % 2)))
        return batch.record_indices.tolist()

    original = prompt_batches(path, encoder, model_config, config, buckets=BUCKETS)
    for k in range(4):
        step(original, k)
    state = json.loads(json.dumps(original.get_state()))
    expected = [step(original, k) for k in range(4, 8)]
    resumed = prompt_batches(path, encoder, model_config, config, buckets=BUCKETS)
    resumed.set_state(state)
    assert [step(resumed, k) for k in range(4, 8)] == expected
    assert resumed.counts()["pass_rate/tracked"] == original.counts()["pass_rate/tracked"] > 4

    with pytest.raises(ValueError, match="num_epochs = 1 must be None"):
        PipelineConfig(batch_size=4, sampling=SamplingConfig("prioritized"), num_epochs=1)
    with pytest.raises(ValueError, match="data.priority_floor = 0"):
        SamplingConfig("prioritized", priority_floor=0.0)
    with pytest.raises(ValueError, match="data.sampling = 'hard_first'"):
        SamplingConfig("hard_first")
    uniform = prompt_batches(path, encoder, model_config, PipelineConfig(batch_size=4, seed=3), buckets=BUCKETS)
    with pytest.raises(ValueError, match=r"'sampling': \('prioritized', 'uniform'\)"):
        uniform.set_state(state)
