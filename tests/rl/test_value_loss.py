"""The clipped value loss against hand-computed cases and NumPy written here; gradients and micro-batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.rl.value_loss import clipped_value_loss

B, T = 4, 6
VALUES = jnp.array([[1.3, 0.5, 1.1]])
OLD_VALUES = jnp.array([[1.0, 1.0, 1.0]])
RETURNS = jnp.array([[1.0, 0.0, 3.0]])
MASK = jnp.array([[True, True, True]])


def np_value_loss(values, old_values, returns, mask, clip_range):
    """Token-mean loss and clip fraction, per token with an explicit branch on which term is larger."""
    losses, clipped_count = [], 0
    for v, old, ret in zip(values[mask], old_values[mask], returns[mask]):
        clipped = min(max(v, old - clip_range), old + clip_range)
        if (clipped - ret) ** 2 > (v - ret) ** 2:
            losses.append(0.5 * (clipped - ret) ** 2)
            clipped_count += 1
        else:
            losses.append(0.5 * (v - ret) ** 2)
    count = max(len(losses), 1)
    return sum(losses) / count, clipped_count / count


def random_batch(seed):
    rng = np.random.default_rng(seed)
    old_values = rng.normal(size=(B, T))
    values = old_values + rng.normal(scale=0.4, size=(B, T))
    returns = rng.normal(size=(B, T))
    mask = np.arange(T)[None, :] < np.array([[0], [T], [2], [4]])
    mask[1, 3] = False
    return values, old_values, returns, mask


def test_hand_case():
    loss, metrics = clipped_value_loss(VALUES, OLD_VALUES, RETURNS, MASK, clip_range=0.2)
    expected = (0.5 * (1.3 - 1.0) ** 2 + 0.5 * (0.8 - 0.0) ** 2 + 0.5 * (1.1 - 3.0) ** 2) / 3
    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["critic/value_loss"], expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["critic/value_clip_fraction"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(
        metrics["critic/value_error"], ((1.3 - 1.0) ** 2 + (0.5 - 0.0) ** 2 + (1.1 - 3.0) ** 2) / 3, rtol=1e-6
    )
    np.testing.assert_allclose(metrics["critic/new_values_mean"], (1.3 + 0.5 + 1.1) / 3, rtol=1e-6)
    assert all(value.dtype == jnp.float32 and value.shape == () for value in metrics.values())


def test_no_clip_range_is_plain_squared_error():
    loss, metrics = clipped_value_loss(VALUES, OLD_VALUES, RETURNS, MASK, clip_range=None)
    expected = (0.5 * (1.3 - 1.0) ** 2 + 0.5 * (0.5 - 0.0) ** 2 + 0.5 * (1.1 - 3.0) ** 2) / 3
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert metrics["critic/value_clip_fraction"] == 0.0


def test_zero_clip_range_holds_predictions_at_old_values():
    loss, _ = clipped_value_loss(VALUES, OLD_VALUES, RETURNS, MASK, clip_range=0.0)
    expected = (0.5 * (1.3 - 1.0) ** 2 + 0.5 * (1.0 - 0.0) ** 2 + 0.5 * (1.0 - 3.0) ** 2) / 3
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_gradient_is_cut_where_the_clip_is_active():
    def loss_of(values):
        return clipped_value_loss(values, OLD_VALUES, RETURNS, MASK, clip_range=0.2)[0]

    grad = jax.grad(loss_of)(VALUES)
    np.testing.assert_allclose(grad, [[(1.3 - 1.0) / 3, 0.0, (1.1 - 3.0) / 3]], rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("clip_range", [0.1, 0.5])
def test_random_batches_match_numpy(seed, clip_range):
    values, old_values, returns, mask = random_batch(seed)
    loss, metrics = clipped_value_loss(values, old_values, returns, mask, clip_range=clip_range)
    expected_loss, expected_fraction = np_value_loss(values, old_values, returns, mask, clip_range)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["critic/value_clip_fraction"], expected_fraction, rtol=1e-6)
    np.testing.assert_allclose(metrics["critic/value_error"], ((values - returns) ** 2)[mask].mean(), rtol=1e-5)


@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean"])
def test_micro_batch_losses_and_gradients_sum_to_the_whole_batch(agg_mode):
    values, old_values, returns, mask = random_batch(1)
    counts = {"num_tokens": mask.sum(), "num_sequences": np.any(mask, axis=-1).sum()}

    def loss_of(v, rows, **global_counts):
        return clipped_value_loss(
            v, old_values[rows], returns[rows], mask[rows], clip_range=0.2, agg_mode=agg_mode, **global_counts
        )[0]

    whole, whole_grad = jax.value_and_grad(loss_of)(values, slice(None))
    halves = [jax.value_and_grad(loss_of)(values[rows], rows, **counts) for rows in (slice(0, 2), slice(2, 4))]
    np.testing.assert_allclose(halves[0][0] + halves[1][0], whole, rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([halves[0][1], halves[1][1]]), whole_grad, rtol=1e-6)


def test_empty_mask_is_finite_zero():
    values, old_values, returns, mask = random_batch(0)
    loss, metrics = clipped_value_loss(values, old_values, returns, np.zeros(mask.shape, bool), clip_range=0.2)
    assert loss == 0.0 and all(float(value) == 0.0 for value in metrics.values())


def test_jits_with_static_clip_range():
    values, old_values, returns, mask = random_batch(2)
    jitted = jax.jit(lambda v: clipped_value_loss(v, old_values, returns, mask, clip_range=0.2))
    np.testing.assert_allclose(
        jitted(values)[0], clipped_value_loss(values, old_values, returns, mask, clip_range=0.2)[0], rtol=1e-6
    )


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="clip_range=-0.1"):
        clipped_value_loss(VALUES, OLD_VALUES, RETURNS, MASK, clip_range=-0.1)
    with pytest.raises(ValueError, match="'bogus'"):
        clipped_value_loss(VALUES, OLD_VALUES, RETURNS, MASK, clip_range=0.2, agg_mode="bogus")
