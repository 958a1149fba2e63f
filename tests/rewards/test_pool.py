"""The scoring pool: parallel workers, per-sample time limit, failures zeroed and counted."""

import time

import numpy as np
import pytest

from shuffle_r1_jax.rewards.pool import RewardPool, score_batch, score_in_process

FLAKY = "tests.rewards.faulty_rewards:flaky_reward"
TYPED = "tests.rewards.faulty_rewards:typed_reward"
SLEEPING = "tests.rewards.faulty_rewards:sleeping_reward"
CONTEXT = "tests.rewards.faulty_rewards:context_reward"
SPANS = "tests.rewards.faulty_rewards:span_reward"
RESPONSES = ["a", "raise", "sleep", "b", "exit", "missing", "nan", "c"]
ANSWERS = ["a", "x", "x", "x", "x", "x", "x", "c"]
EXPECTED_REASONS = [None, "exception", "timeout", None, "worker_died", "invalid_output", "invalid_output", None]


@pytest.fixture(scope="module")
def flaky_pool():
    with RewardPool(FLAKY, num_workers=2) as pool:
        pool.wait_ready()
        yield pool


def test_failures_are_zeroed_counted_and_do_not_wait_for_a_hung_sample(flaky_pool):
    start = time.monotonic()
    scores = flaky_pool.score(RESPONSES, ANSWERS, timeout_s=0.5)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0  # the "sleep" sample sleeps 30 s; it is killed at 0.5 s
    assert scores.failure_reasons == EXPECTED_REASONS
    assert scores.failure_counts == {"timeout": 1, "exception": 1, "invalid_output": 2, "worker_died": 1}
    np.testing.assert_array_equal(scores.failed, [r is not None for r in EXPECTED_REASONS])
    assert list(scores.parts) == ["overall", "accuracy", "length"]
    np.testing.assert_array_equal(scores.parts["overall"], [1, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(scores.parts["length"], [1, 0, 0, 1, 0, 0, 0, 1])
    assert all(part.dtype == np.float32 and part.shape == (8,) for part in scores.parts.values())


def test_pool_keeps_working_after_killed_workers(flaky_pool):
    flaky_pool.score(["sleep", "exit"], ["x", "x"], timeout_s=0.3)
    scores = flaky_pool.score(["a", "b", "c"] * 4, ["a"] * 12, timeout_s=5.0)
    assert scores.failure_counts["timeout"] == 0 and scores.failure_counts["worker_died"] == 0
    np.testing.assert_array_equal(scores.parts["overall"], [1, 0, 0] * 4)


def test_score_batch_math_reward_in_workers():
    responses = ["<think>half</think> \\boxed{\\frac{1}{2}}", "\\boxed{3}", "<think>no box</think>"]
    scores = score_batch("math", responses, ["0.5", "3", "1"], timeout_s=10.0, num_workers=2)
    np.testing.assert_allclose(scores.parts["overall"], [1.0, 0.9, 0.0])
    np.testing.assert_allclose(scores.parts["format"], [1.0, 0.0, 0.0])
    assert sum(scores.failure_counts.values()) == 0


def test_in_process_scoring_catches_exceptions():
    scores = score_batch(FLAKY, ["a", "raise", "missing"], ["a", "a", "a"], num_workers=0)
    assert scores.failure_reasons == [None, "exception", "invalid_output"]
    np.testing.assert_array_equal(scores.parts["overall"], [1, 0, 0])
    not_dict = score_in_process("tests.rewards.faulty_rewards:not_a_dict", ["a"], ["a"])
    assert not_dict.failure_counts["invalid_output"] == 1


def test_empty_batch_and_argument_errors():
    scores = score_batch("math", [], [], num_workers=2)
    assert scores.parts["overall"].shape == (0,)
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        score_batch("math", ["a", "b"], ["a"], num_workers=0)
    with pytest.raises(TypeError, match="module level"):
        RewardPool(lambda response, answer: {"overall": 0.0}, num_workers=1)


def test_parts_that_are_not_finite_real_numbers_are_invalid_outputs():
    """A string, a bool or inf in any part is an invalid output; numpy and int numbers are read as floats."""
    responses = ["string", "string_part", "bool", "inf", "float32", "int", "float"]
    scores = score_in_process(TYPED, responses, ["x"] * len(responses))
    assert scores.failure_reasons == ["invalid_output"] * 4 + [None] * 3
    np.testing.assert_array_equal(scores.parts["overall"], [0, 0, 0, 0, 0.5, 1, 0.25])


def test_the_batch_time_limit_fails_the_samples_not_yet_scored_and_the_pool_goes_on():
    """Two workers score the two quick samples, then hang on the next two; at the batch limit those are killed and
    the two never started are failed too, all as timeouts."""
    with RewardPool(SLEEPING, num_workers=2) as pool:
        pool.wait_ready()
        start = time.monotonic()
        scores = pool.score(["0", "0", "30", "30", "0", "0"], ["x"] * 6, timeout_s=60.0, batch_timeout_s=0.5)
        elapsed = time.monotonic() - start
        assert elapsed < 5.0
        assert scores.failure_reasons == [None, None] + ["timeout"] * 4
        assert scores.failure_counts["timeout"] == 4
        np.testing.assert_array_equal(scores.parts["overall"], [1, 1, 0, 0, 0, 0])
        after = pool.score(["0"] * 3, ["x"] * 3, timeout_s=60.0, batch_timeout_s=30.0)
        np.testing.assert_array_equal(after.parts["overall"], [1, 1, 1])


def test_a_sample_context_reaches_only_the_keywords_a_reward_takes():
    contexts = [{"key_steps": ["a", "b"], "image_sizes": [(4, 4, 28, 28)]}, {"image_sizes": []}]
    scores = score_in_process(CONTEXT, ["r", "r"], ["x", "x"], contexts, options={"scale": 0.5})
    np.testing.assert_array_equal(scores.parts["overall"], [1.0, 0.0])  # image_sizes left out, not an error
    assert scores.failure_counts["exception"] == 0
    every = score_in_process("tests.rewards.faulty_rewards:any_context_reward", ["r", "r"], ["x", "x"], contexts)
    np.testing.assert_array_equal(every.parts["overall"], [2.0, 1.0])
    with RewardPool(CONTEXT, num_workers=1, options={"scale": 2.0}) as pool:
        pooled = pool.score(["r", "r"], ["x", "x"], contexts=contexts)
    np.testing.assert_array_equal(pooled.parts["overall"], [4.0, 0.0])


def test_options_a_reward_does_not_take_are_named():
    with pytest.raises(ValueError, match=r"reward.options \['scal'\] are not arguments of the reward 'context_reward'"):
        score_in_process(CONTEXT, ["r"], ["x"], options={"scal": 2.0})
    with pytest.raises(ValueError, match="2 responses but 1 reward contexts"):
        score_in_process(CONTEXT, ["r", "r"], ["x", "x"], [{}])


def test_grounding_and_step_rewards_take_their_context_through_the_pool():
    # original 1000 x 500 resized to 504 x 252: the true box [100, 50, 300, 250] is [50.4, 25.2, 151.2, 126] there
    sizes = [(1000, 500, 504, 252)]
    responses = ['[{"bbox_2d": [50.4, 25.2, 151.2, 126]}]', '[{"bbox_2d": [100, 50, 300, 250]}]']
    contexts = [{"image_sizes": sizes, "key_steps": ["x"]}] * 2
    with RewardPool("grounding_iou", num_workers=1, options={"iou_threshold": 0.5}) as pool:
        scores = pool.score(responses, ["[100, 50, 300, 250]"] * 2, contexts=contexts)
    np.testing.assert_array_equal(scores.parts["accuracy"], [1.0, 0.0])  # the unconverted box misses the threshold
    steps = "### Image Description:\na\n### Rationales:\nb\n### Step 1:\nx = 1/2\n### The final answer is:\n\\boxed{2}"
    with_steps = score_in_process("step_grpo", [steps, steps], ["2", "2"], [{"key_steps": ["x=0.5"]}, {}])
    np.testing.assert_allclose(with_steps.parts["step_rar"], [1.0, 0.0])


SPAN_CASES = {
    "good": ((0, 2, 0.5), (3, 4, -1.0), (1, 4, 2.0)),
    "empty": None,
    "none": None,
    **dict.fromkeys(
        ["not_a_list", "not_a_triple", "float_bound", "bool_bound", "string_value", "nan_value"], "invalid_output"
    ),
    **dict.fromkeys(["empty_span", "negative_start", "past_the_end"], "invalid_output"),
}


def _span_responses():
    return [name.ljust(12, ".") for name in SPAN_CASES]


def _check_span_scores(scores):
    expected = list(SPAN_CASES.values())
    assert scores.failure_reasons == [e if e == "invalid_output" else None for e in expected]
    assert scores.spans == [e if e != "invalid_output" else None for e in expected]
    assert all(type(v) is float and type(a) is int for s in scores.spans if s for a, _, v in s)
    assert list(scores.parts) == ["overall"]  # spans are not a part
    np.testing.assert_array_equal(scores.parts["overall"], [float(e != "invalid_output") for e in expected])


def test_span_rewards_are_validated_in_process():
    """Good spans come back as (int, int, float) triples; an empty list is no spans; a malformed, non-finite, empty
    or out-of-range span makes the sample an invalid output."""
    responses = _span_responses()
    _check_span_scores(score_in_process(SPANS, responses, ["x"] * len(responses)))


def test_span_rewards_come_back_through_the_worker_pipe_the_same():
    responses = _span_responses()
    with RewardPool(SPANS, num_workers=2) as pool:
        _check_span_scores(pool.score(responses, ["x"] * len(responses), timeout_s=10.0))
