"""Advantage estimators and CPPO pruning against NumPy re-implementations written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.rl import advantages as adv_lib

SETTINGS = settings(max_examples=30, deadline=None)
SHAPES = [(1, 2, 3), (2, 4, 5), (3, 8, 4), (2, 3, 6)]  # (groups, n, T): few shapes, few compilations


# ---------------------------------------------------------------- NumPy references (float64)
def np_group_center(scores):
    out = scores - scores.mean(axis=-1, keepdims=True)
    all_equal = np.array([len(np.unique(row)) == 1 for row in scores])[:, None]
    return np.where(all_equal, 0.0, out)


def np_grpo(scores, eps=1e-6):
    out = np.zeros_like(scores)
    for g, row in enumerate(scores):
        if len(np.unique(row)) == 1:
            continue
        out[g] = (row - row.mean()) / (row.std(ddof=1) + eps)
    return out


def np_rloo(scores):
    n = scores.shape[-1]
    out = np.zeros_like(scores)
    for g, row in enumerate(scores):
        for i in range(n):
            others = np.delete(row, i)
            out[g, i] = 0.0 if len(np.unique(row)) == 1 else row[i] - others.mean()
    return out


def np_returns(rewards, mask, gamma):
    rewards = rewards * mask
    out = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[:-1])
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * running
        out[..., t] = running
        running = running * mask[..., t]
    return out


def np_whiten(x, mask):
    vals = x[mask > 0]
    if vals.size == 0:
        return np.zeros_like(x)
    mean = vals.mean()
    var = vals.var(ddof=1) if vals.size > 1 else 0.0
    return (x - mean) / np.sqrt(var + 1e-8) * mask


def whiten_atol(x, mask):
    """Tolerance of a float32 whitening against `np_whiten`: 1e-4, plus the float32 rounding of the mean (a few
    ulps of the largest value) times the whitening's gain 1 / sqrt(var + eps), which reaches 1e4 when the valid
    values are (nearly) all equal."""
    vals = x[mask > 0]
    var = vals.var(ddof=1) if vals.size > 1 else 0.0
    return 1e-4 + 4 * np.finfo(np.float32).eps * np.abs(x).max() / np.sqrt(var + 1e-8)


def np_rollout_mean(token, mask):
    length = mask.sum(-1)
    return np.where(length > 0, (token * mask).sum(-1) / np.maximum(length, 1), 0.0)


# ---------------------------------------------------------------- strategies
@st.composite
def batches(draw, random_masks=False):
    g, n, t = draw(st.sampled_from(SHAPES))
    # Scores on a 0.25 grid: ties and all-equal groups happen often, distinct values differ enough for a
    # float32 vs float64 comparison.
    scores = np.array(draw(st.lists(st.integers(-8, 8), min_size=g * n, max_size=g * n)), np.float64).reshape(g, n) / 4
    if draw(st.booleans()):
        scores[0] = scores[0, 0]  # an all-equal group
    if random_masks:
        mask = np.array(draw(st.lists(st.booleans(), min_size=g * n * t, max_size=g * n * t))).reshape(g, n, t)
    else:
        lengths = np.array(draw(st.lists(st.integers(0, t), min_size=g * n, max_size=g * n))).reshape(g, n)
        mask = np.arange(t)[None, None, :] < lengths[..., None]
    token_rewards = (
        np.array(draw(st.lists(st.integers(-4, 4), min_size=g * n * t, max_size=g * n * t)), np.float64).reshape(
            g, n, t
        )
        / 4
    )
    return scores, mask.astype(np.float64), token_rewards


OUTCOME = ("grpo", "dr_grpo", "rloo")


@jax.jit
def run_outcome_estimators(scores, mask):
    token_rewards = adv_lib.outcome_token_rewards(scores, mask)
    return {name: adv_lib.get_advantage_estimator(name)(token_rewards, mask) for name in OUTCOME}


def check_close(actual, expected, atol=2e-5):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=1e-4, atol=atol)


# ---------------------------------------------------------------- registry
def test_registry_names_and_errors():
    names = adv_lib.available_advantage_estimators()
    assert set(names) >= {"grpo", "dr_grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline"}
    with pytest.raises(KeyError) as err:
        adv_lib.get_advantage_estimator("ppo_gae")
    assert "ppo_gae" in str(err.value) and "grpo" in str(err.value) and "rloo" in str(err.value)


def test_register_user_estimator():
    name = "test_user_estimator"

    @adv_lib.register_advantage_estimator(name)
    def constant(token_rewards, response_mask):
        rollout = jnp.ones(token_rewards.shape[:-1])
        return adv_lib.Advantages(token=rollout[..., None] * response_mask, rollout=rollout)

    try:
        assert adv_lib.get_advantage_estimator(name) is constant
        assert name in adv_lib.available_advantage_estimators()
        with pytest.raises(ValueError, match=name):
            adv_lib.register_advantage_estimator(name)(constant)
    finally:
        adv_lib._ESTIMATORS.remove(name)


# ---------------------------------------------------------------- outcome estimators
@SETTINGS
@given(batches())
def test_outcome_estimators_match_numpy(batch):
    scores, mask, _ = batch
    results = run_outcome_estimators(jnp.asarray(scores, jnp.float32), jnp.asarray(mask))
    effective = np.where(mask.sum(-1) > 0, scores, 0.0)  # an empty response carries no reward
    for name, ref in zip(OUTCOME, [np_grpo, np_group_center, np_rloo]):
        out = results[name]
        expected = ref(effective)
        check_close(out.rollout, expected)
        check_close(out.token, expected[..., None] * mask)
        assert out.token.dtype == jnp.float32 and out.rollout.shape == scores.shape


def test_all_equal_groups_are_exactly_zero():
    scores = jnp.array([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7]], jnp.float32)
    for fn in (adv_lib.grpo_outcome_advantages, adv_lib.dr_grpo_outcome_advantages, adv_lib.rloo_outcome_advantages):
        assert np.all(np.asarray(jax.jit(fn)(scores)) == 0.0)


def test_grpo_n2_and_rloo_formula():
    scores = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    a = np.asarray(adv_lib.grpo_outcome_advantages(scores))
    std = np.std([1.0, 0.0], ddof=1)
    v = 0.5 / (std + 1e-6)
    np.testing.assert_allclose(a, [[v, -v], [-v, v]], rtol=1e-6)
    s = jnp.array([[3.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(adv_lib.rloo_outcome_advantages(s), 4 / 3 * (np.asarray(s) - 1.0), rtol=1e-6)


def test_group_size_errors():
    with pytest.raises(ValueError, match="n=1"):
        adv_lib.grpo_outcome_advantages(jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="n=1"):
        adv_lib.rloo_outcome_advantages(jnp.ones((3, 1)))
    np.testing.assert_array_equal(adv_lib.dr_grpo_outcome_advantages(jnp.ones((3, 1))), np.zeros((3, 1)))


def test_outcome_token_rewards_places_score_on_last_valid_token():
    mask = jnp.array([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0]], bool)
    out = np.asarray(adv_lib.outcome_token_rewards(jnp.array([2.0, 5.0, -1.0]), mask))
    np.testing.assert_array_equal(out, [[0, 0, 2, 0], [0, 0, 0, 0], [0, 0, -1, 0]])


# ---------------------------------------------------------------- REINFORCE++
@jax.jit
def run_reinforce(token_rewards, mask, gamma):  # gamma is traced: one compilation per shape
    out = adv_lib.reinforce_plus_plus(token_rewards, mask, gamma=gamma)
    return out, adv_lib.discounted_returns(token_rewards, mask, gamma)


@SETTINGS
@given(batches(random_masks=True), st.sampled_from([1.0, 0.9]))
def test_reinforce_plus_plus_matches_numpy(batch, gamma):
    _, mask, token_rewards = batch
    out, returns = run_reinforce(jnp.asarray(token_rewards), jnp.asarray(mask), gamma)
    check_close(returns, np_returns(token_rewards, mask, gamma))
    returns = np_returns(token_rewards, mask, gamma)
    expected = np_whiten(returns, mask)
    check_close(out.token, expected, atol=whiten_atol(returns, mask))
    check_close(out.rollout, np_rollout_mean(expected, mask), atol=whiten_atol(returns, mask))


@SETTINGS
@given(batches())
def test_reinforce_plus_plus_baseline_matches_numpy(batch):
    _, mask, token_rewards = batch
    estimator = jax.jit(adv_lib.get_advantage_estimator("reinforce_plus_plus_baseline"))
    out = estimator(jnp.asarray(token_rewards), jnp.asarray(mask))
    scores = (token_rewards * mask).sum(-1)
    # return-to-go minus the group's mean score (for an all-equal group: minus its score)
    centered = np_returns(token_rewards, mask, 1.0) - scores[..., None] + np_group_center(scores)[..., None]
    expected = np_whiten(centered, mask)
    check_close(out.token, expected, atol=whiten_atol(centered, mask))
    check_close(out.rollout, np_rollout_mean(expected, mask), atol=whiten_atol(centered, mask))


# ---------------------------------------------------------------- span rewards (token-level rewards of a reward)
# One group of n = 2 rollouts, T = 4, row 1 one token shorter. Row 0: score 1, a span reward 0.5 on token 0;
# row 1: score 0, a span reward -0.25 on token 1 and one of 9 on its padding (never read).
SPAN_SCORES = np.array([1.0, 0.0], np.float32)
SPAN_MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int32)
SPAN_REWARDS = np.array([[0.5, 0, 0, 0], [0, -0.25, 0, 9.0]], np.float32)
SPAN_TOKEN_REWARDS = np.array([[0.5, 0, 0, 1.0], [0, -0.25, 0, 0]])  # by hand: score on the last valid token
SPAN_RETURNS = np.array([[1.5, 1.0, 1.0, 1.0], [-0.25, -0.25, 0, 0]])  # by hand: returns-to-go, gamma 1
SPAN_TOTALS = np.array([1.5, -0.25])  # score + sum of the span rewards


def test_response_token_rewards_add_span_rewards_to_the_outcome_inside_the_mask():
    got = adv_lib.response_token_rewards(jnp.asarray(SPAN_SCORES), jnp.asarray(SPAN_MASK), jnp.asarray(SPAN_REWARDS))
    np.testing.assert_array_equal(got, SPAN_TOKEN_REWARDS)
    outcome = adv_lib.outcome_token_rewards(jnp.asarray(SPAN_SCORES), jnp.asarray(SPAN_MASK))
    np.testing.assert_array_equal(adv_lib.response_token_rewards(jnp.asarray(SPAN_SCORES), SPAN_MASK), outcome)


@pytest.mark.parametrize("name, reference", [("grpo", np_grpo), ("dr_grpo", np_group_center), ("rloo", np_rloo)])
def test_outcome_estimators_use_score_plus_span_sum(name, reference):
    out = adv_lib.advantages_from_scores(name, SPAN_SCORES, SPAN_MASK, 2, SPAN_REWARDS)
    expected = reference(SPAN_TOTALS[None])  # dr_grpo: [0.875, -0.875]
    check_close(out.rollout, expected)
    check_close(out.token, expected[..., None] * SPAN_MASK[None])


def test_reinforce_plus_plus_spreads_span_rewards_as_returns_to_go():
    out = adv_lib.advantages_from_scores("reinforce_plus_plus", SPAN_SCORES, SPAN_MASK, 2, SPAN_REWARDS)
    expected = np_whiten(SPAN_RETURNS, SPAN_MASK)
    check_close(out.token[0], expected)
    check_close(out.rollout[0], np_rollout_mean(expected, SPAN_MASK))


def test_reinforce_plus_plus_baseline_subtracts_the_group_mean_score_from_returns_to_go():
    out = adv_lib.advantages_from_scores("reinforce_plus_plus_baseline", SPAN_SCORES, SPAN_MASK, 2, SPAN_REWARDS)
    centered = SPAN_RETURNS - SPAN_TOTALS.mean()  # mean score 0.625
    np.testing.assert_allclose(centered[0], [0.875, 0.375, 0.375, 0.375])
    expected = np_whiten(centered, SPAN_MASK)
    check_close(out.token[0], expected)
    check_close(out.rollout[0], np_rollout_mean(expected, SPAN_MASK))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline"])
def test_zero_span_rewards_change_no_bit(name):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, 12).astype(np.float32) / 2
    scores[:4] = 0.5  # an all-equal group
    mask = (np.arange(5)[None] < rng.integers(0, 6, 12)[:, None]).astype(np.int32)
    run = jax.jit(adv_lib.advantages_from_scores, static_argnames=("estimator", "n"))
    without = run(name, scores, mask, 4)
    with_zeros = run(name, scores, mask, 4, np.zeros((12, 5), np.float32))
    for a, b in zip(without, with_zeros):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_whiten_degenerate_masks_are_finite():
    x = jnp.arange(6.0).reshape(2, 3)
    assert np.all(np.asarray(adv_lib.masked_whiten(x, jnp.zeros((2, 3)))) == 0)
    one = jnp.zeros((2, 3)).at[0, 1].set(1)
    assert np.all(np.asarray(adv_lib.masked_whiten(x, one)) == 0)


# ---------------------------------------------------------------- CPPO
@SETTINGS
@given(st.sampled_from([(2, 4), (3, 8), (1, 6)]), st.sampled_from([0.0, 0.25, 0.5, 0.75]), st.data())
def test_cppo_keeps_largest_magnitudes(shape, prune_ratio, data):
    g, n = shape
    a = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=g * n, max_size=g * n)), np.float32).reshape(g, n) / 2
    k = int(n * (1 - prune_ratio))
    out = np.asarray(jax.jit(adv_lib.cppo_prune, static_argnums=1)(jnp.asarray(a), prune_ratio))
    expected = np.stack([np.argsort(-np.abs(row), kind="stable")[:k] for row in a])
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int32


def test_cppo_errors():
    with pytest.raises(ValueError, match="1.0"):
        adv_lib.cppo_prune(jnp.zeros((2, 4)), 1.0)
    with pytest.raises(ValueError, match="at least 1"):
        adv_lib.cppo_prune(jnp.zeros((2, 2)), 0.6)
