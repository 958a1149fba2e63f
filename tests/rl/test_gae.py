"""GAE, decoupled GAE and the critic's statistics against NumPy loops written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.rl import gae as gae_lib
from shuffle_r1_jax.rl.gae import decoupled_gae, gae, value_metrics

B, T = 6, 7


# ---------------------------------------------------------------- NumPy reference (float64)
def np_gae(rewards, values, mask, gamma, lam):
    """Per row: walk the valid positions from the last to the first, skipping the masked ones."""
    advantages = np.zeros(rewards.shape)
    returns = np.zeros(rewards.shape)
    for row in np.ndindex(rewards.shape[:-1]):
        positions = [t for t in range(rewards.shape[-1]) if mask[row][t]]
        next_value, next_advantage = 0.0, 0.0
        for t in reversed(positions):
            delta = rewards[row][t] + gamma * next_value - values[row][t]
            advantages[row][t] = delta + gamma * lam * next_advantage
            returns[row][t] = advantages[row][t] + values[row][t]
            next_value, next_advantage = values[row][t], advantages[row][t]
    return advantages, returns


def random_batch(seed, shape=(B, T)):
    """Rewards, values and a mask whose rows are right-padded, have holes, or are empty (row 0 is empty)."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=shape)
    values = rng.normal(size=shape)
    mask = np.zeros(shape, bool)
    for i, row in enumerate(np.ndindex(shape[:-1])):
        length = rng.integers(0, shape[-1] + 1)
        if i == 0:
            continue
        if i % 2:
            mask[row][:length] = True
        else:
            mask[row] = rng.random(shape[-1]) < 0.6
    return rewards, values, mask


def garbage_outside(array, mask):
    """`array` with NaN at the invalid positions, which the kernels must never read."""
    return np.where(mask, array, np.nan)


# ---------------------------------------------------------------- gae
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma, lam", [(0.9, 0.8), (1.0, 0.95), (0.99, 1.0)])
def test_gae_matches_numpy(seed, gamma, lam):
    rewards, values, mask = random_batch(seed)
    assert (~mask[0]).all() and any(not m[: m.sum()].all() for m in mask)  # an empty row and a row with holes
    advantages, returns = gae(
        jnp.asarray(garbage_outside(rewards, mask), jnp.float32),
        jnp.asarray(garbage_outside(values, mask), jnp.float32),
        jnp.asarray(mask),
        gamma=gamma,
        lam=lam,
    )
    expected_advantages, expected_returns = np_gae(rewards, values, mask, gamma, lam)
    assert advantages.dtype == returns.dtype == jnp.float32
    np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-5, atol=1e-5)
    assert (np.asarray(advantages)[~mask] == 0).all() and (np.asarray(returns)[~mask] == 0).all()


def test_gae_any_leading_dims_and_float_mask():
    rewards, values, mask = random_batch(7, shape=(2, 3, T))
    advantages, returns = gae(
        jnp.asarray(rewards, jnp.bfloat16), jnp.asarray(values), jnp.asarray(mask, jnp.float32), gamma=0.9, lam=0.8
    )
    rounded_rewards = np.asarray(jnp.asarray(rewards, jnp.bfloat16), np.float64)
    expected_advantages, expected_returns = np_gae(rounded_rewards, values, mask, 0.9, 0.8)
    assert advantages.shape == returns.shape == (2, 3, T) and advantages.dtype == jnp.float32
    np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-5, atol=1e-5)


def test_holes_are_skipped_like_a_right_padded_row():
    rewards, values, _ = random_batch(3, shape=(1, 5))
    with_holes = np.array([[True, False, True, False, True]])
    packed = np.array([[True, True, True, False, False]])
    kept = [0, 2, 4]
    packed_rewards, packed_values = np.zeros((1, 5)), np.zeros((1, 5))
    packed_rewards[0, :3], packed_values[0, :3] = rewards[0, kept], values[0, kept]
    advantages, returns = gae(rewards, values, with_holes, gamma=0.9, lam=0.8)
    packed_advantages, packed_returns = gae(packed_rewards, packed_values, packed, gamma=0.9, lam=0.8)
    np.testing.assert_allclose(np.asarray(advantages)[0, kept], np.asarray(packed_advantages)[0, :3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(returns)[0, kept], np.asarray(packed_returns)[0, :3], rtol=1e-6)


def test_gamma_lam_one_returns_are_remaining_reward_sums():
    rewards = jnp.array([[1.0, 2.0, 3.0, 100.0], [0.0, 5.0, 0.0, 7.0]])
    values = jnp.array([[0.5, -1.0, 2.0, 9.0], [3.0, 1.0, 4.0, 1.0]])
    mask = jnp.array([[True, True, True, False], [True, False, True, True]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(returns, [[1.0 + 2.0 + 3.0, 2.0 + 3.0, 3.0, 0.0], [0.0 + 0.0 + 7.0, 0.0, 7.0, 7.0]])
    np.testing.assert_allclose(
        advantages, [[1.0 + 2.0 + 3.0 - 0.5, 2.0 + 3.0 + 1.0, 3.0 - 2.0, 0.0], [7.0 - 3.0, 0.0, 7.0 - 4.0, 7.0 - 1.0]]
    )


def test_gae_jits_with_traced_gamma_and_lam():
    rewards, values, mask = random_batch(11)
    jitted = jax.jit(lambda r, v, m, g, lam: gae(r, v, m, gamma=g, lam=lam))
    for gamma, lam in [(0.9, 0.8), (0.95, 0.5)]:
        advantages, returns = jitted(rewards, values, mask, jnp.float32(gamma), jnp.float32(lam))
        expected_advantages, expected_returns = np_gae(rewards, values, mask, gamma, lam)
        np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(returns, expected_returns, rtol=1e-5, atol=1e-5)
    assert jitted._cache_size() == 1


# ---------------------------------------------------------------- decoupled_gae
def test_decoupled_gae_takes_each_estimate_from_its_lambda():
    rewards, values, mask = random_batch(5)
    advantages, returns = decoupled_gae(rewards, values, mask, gamma=0.9, actor_lam=0.8, critic_lam=1.0)
    actor_advantages, actor_returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    _, critic_returns = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    np.testing.assert_array_equal(advantages, actor_advantages)
    np.testing.assert_array_equal(returns, critic_returns)
    assert not np.allclose(returns, actor_returns)


def test_decoupled_gae_equal_lambdas_is_one_gae_call(monkeypatch):
    calls = []

    def counting_gae(*args, **kwargs):
        calls.append(kwargs["lam"])
        return gae(*args, **kwargs)

    monkeypatch.setattr(gae_lib, "gae", counting_gae)
    rewards, values, mask = random_batch(2)
    advantages, returns = gae_lib.decoupled_gae(rewards, values, mask, gamma=0.9, actor_lam=0.95, critic_lam=0.95)
    expected_advantages, expected_returns = gae(rewards, values, mask, gamma=0.9, lam=0.95)
    assert calls == [0.95]
    np.testing.assert_array_equal(advantages, expected_advantages)
    np.testing.assert_array_equal(returns, expected_returns)
    gae_lib.decoupled_gae(rewards, values, mask, gamma=0.9, actor_lam=0.95, critic_lam=1.0)
    assert calls == [0.95, 0.95, 1.0]


def test_critic_lam_one_targets_ignore_the_values():
    rewards, values, mask = random_batch(9)
    remaining_sums = np.zeros(rewards.shape)
    for b in range(B):
        for t in range(T):
            remaining_sums[b, t] = (rewards[b, t:] * mask[b, t:]).sum() if mask[b, t] else 0.0
    for scaled_values in (values, 10.0 * values + 3.0):
        _, returns = decoupled_gae(rewards, scaled_values, mask, gamma=1.0, actor_lam=0.9, critic_lam=1.0)
        np.testing.assert_allclose(returns, remaining_sums, rtol=1e-5, atol=1e-4)


def test_decoupled_gae_jits_with_traced_lambdas():
    rewards, values, mask = random_batch(4)
    jitted = jax.jit(lambda g, a, c: decoupled_gae(rewards, values, mask, gamma=g, actor_lam=a, critic_lam=c))
    advantages, returns = jitted(0.9, 0.8, 1.0)
    np.testing.assert_allclose(advantages, np_gae(rewards, values, mask, 0.9, 0.8)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, np_gae(rewards, values, mask, 0.9, 1.0)[1], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- value_metrics
def test_value_metrics_statistics():
    rewards, values, mask = random_batch(6)
    _, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    metrics = value_metrics(values, returns, mask)
    valid_values, valid_returns = values[mask], np.asarray(returns, np.float64)[mask]
    expected_ev = 1.0 - np.var(valid_returns - valid_values) / np.var(valid_returns)
    assert all(value.dtype == jnp.float32 and value.shape == () for value in metrics.values())
    np.testing.assert_allclose(metrics["critic/values_mean"], valid_values.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["critic/values_max"], valid_values.max(), rtol=1e-6)
    np.testing.assert_allclose(metrics["critic/values_min"], valid_values.min(), rtol=1e-6)
    np.testing.assert_allclose(metrics["critic/returns_mean"], valid_returns.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["critic/explained_variance"], expected_ev, rtol=1e-4)


def test_explained_variance_cases():
    rewards, values, mask = random_batch(8)
    returns = np.where(mask, rewards, 0.0)
    perfect = value_metrics(returns, returns, mask)["critic/explained_variance"]
    mean_critic = np.full(returns.shape, returns[mask].mean())
    uninformed = value_metrics(mean_critic, returns, mask)["critic/explained_variance"]
    constant = value_metrics(values, np.full(returns.shape, 0.1), mask)["critic/explained_variance"]
    empty = value_metrics(values, returns, np.zeros(mask.shape, bool))
    assert perfect == 1.0
    assert abs(float(uninformed)) < 1e-5
    assert constant == 0.0
    assert all(float(value) == 0.0 for value in empty.values())


# ---------------------------------------------------------------- span rewards
def test_gae_takes_span_rewards_at_their_tokens():
    """gamma = lambda = 1, zero values, no whitening: the advantages are the returns-to-go of score + span rewards.
    Row 0: score 1 and a span reward 0.5 on token 0; row 1: score 0 and -0.25 on token 1 (9 on its padding, unread)."""
    cfg = gae_lib.GAEConfig(gamma=1.0, actor_lam=1.0, critic_lam=1.0, whiten=False)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int32)
    spans = np.array([[0.5, 0, 0, 0], [0, -0.25, 0, 9.0]], np.float32)
    values = np.zeros((2, 4), np.float32)
    advantages, returns, _ = gae_lib.advantages_from_values(np.array([1.0, 0.0]), mask, values, 2, cfg, spans)
    expected = np.array([[1.5, 1.0, 1.0, 1.0], [-0.25, -0.25, 0, 0]])
    np.testing.assert_allclose(advantages.token[0], expected)
    np.testing.assert_allclose(returns, expected)


def test_gae_zero_span_rewards_change_no_bit():
    rewards, values, mask = random_batch(1)
    scores = rewards[:, 0].astype(np.float32)
    cfg = gae_lib.GAEConfig(gamma=0.99, actor_lam=0.95, critic_lam=1.0)
    without = gae_lib.advantages_from_values(scores, mask, values, 2, cfg)
    with_zeros = gae_lib.advantages_from_values(scores, mask, values, 2, cfg, np.zeros((B, T), np.float32))
    for a, b in zip(jax.tree.leaves(without), jax.tree.leaves(with_zeros)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
