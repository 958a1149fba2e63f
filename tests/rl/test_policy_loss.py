"""Clipped policy loss, aggregation modes and gradient accumulation against NumPy written here."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.rl import aggregation
from shuffle_r1_jax.rl.policy_loss import ppo_policy_loss

SETTINGS = settings(max_examples=40, deadline=None)
B, T = 4, 6
NORM = 8.0
GROUP = 2  # rows per group of micro-token-mean
CLIPS = [(0.2, 0.2, 3.0), (0.2, 0.28, 3.0), (0.2, 0.2, None), (3e-4, 4e-4, None)]


# ---------------------------------------------------------------- NumPy reference (float64)
def np_denominators(mask, mode):
    lengths = mask.sum(-1)
    nseq = max(np.count_nonzero(lengths), 1)
    if mode == "token-mean":
        return np.full(mask.shape, max(mask.sum(), 1.0))
    if mode == "seq-mean-token-mean":
        return np.maximum(lengths, 1.0)[:, None] * nseq * np.ones(mask.shape)
    if mode == "micro-token-mean":  # row b's group token count, times the number of groups
        groups = mask.shape[0] // GROUP
        group_tokens = np.repeat(np.maximum(lengths.reshape(groups, GROUP).sum(-1), 1.0), GROUP)
        return group_tokens[:, None] * groups * np.ones(mask.shape)
    return np.full(mask.shape, nseq * NORM)


def np_ppo(lp, old, adv, mask, clip_low, clip_high, dual, level, mode):
    """Loss, d loss / d logp, and metrics, written per case (A > 0: -A min(r, 1+h); A < 0: |A| max(r, 1-l),
    capped at |A| c by the dual clip), so it shares no formula with the implementation."""
    raw = lp - old
    in_range = np.abs(raw) < 20
    lr = np.clip(raw, -20, 20)
    if level == "sequence":
        lengths = np.maximum(mask.sum(-1, keepdims=True), 1)
        lr = np.broadcast_to((lr * mask).sum(-1, keepdims=True) / lengths, lr.shape)
    r = np.exp(lr)
    loss_t = np.zeros_like(r)
    slope = np.zeros_like(r)  # d loss_t / d log r
    higher = (adv > 0) & (r > 1 + clip_high)
    lower = (adv < 0) & (r < 1 - clip_low)
    dual_on = (adv < 0) & (r > dual) if dual is not None else np.zeros_like(higher)
    pos, neg = adv > 0, adv < 0
    loss_t[pos] = -adv[pos] * np.minimum(r[pos], 1 + clip_high)
    loss_t[neg] = -adv[neg] * np.maximum(r[neg], 1 - clip_low)
    if dual is not None:
        loss_t[neg] = np.minimum(loss_t[neg], -adv[neg] * dual)
    free = ~(higher | lower | dual_on)
    slope[free] = -adv[free] * r[free]
    denom = np_denominators(mask, mode)
    loss = (loss_t * mask / denom).sum()
    if level == "token":
        grad = slope * mask / denom * in_range
    else:  # log r_b = mean of the row's valid log-ratios: d log r_b / d logp_t = m_t / length_b
        seq_slope = (slope * mask / denom).sum(-1, keepdims=True)
        grad = seq_slope * mask / np.maximum(mask.sum(-1, keepdims=True), 1) * in_range
    n = max(mask.sum(), 1)
    active = (np.abs(adv) >= 1e-6) & free & (mask > 0)
    rows = mask.sum(-1) > 0
    metrics = {
        "pg_clipfrac_higher": (higher * mask).sum() / n,
        "pg_clipfrac_lower": (lower * mask).sum() / n,
        "pg_clipfrac_dual": (dual_on * mask).sum() / n,
        "approx_kl": ((old - lp) * mask).sum() / n,
        "token_utilization": active.sum() / n,
        "rollout_utilization": (active.any(-1) & rows).sum() / max(rows.sum(), 1),
        "advantage_collapse": ((np.abs(adv) < 1e-6) * mask).sum() / n,
    }
    return loss, grad, metrics


# ---------------------------------------------------------------- strategies
def grid(draw, lo, hi, size, scale):
    return np.array(draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size)), np.float64) / scale


@st.composite
def loss_inputs(draw, per_sequence_adv=False):
    old = grid(draw, -64, 0, B * T, 16).reshape(B, T)
    lp = old + grid(draw, -12, 12, B * T, 16).reshape(B, T)  # ratios from 0.47 to 2.1, never on a clip edge
    if draw(st.booleans()):
        lp[0, 0] = old[0, 0] + 30.0  # exercises the log-ratio clamp
    if per_sequence_adv:
        adv = np.broadcast_to(grid(draw, -6, 6, B, 4)[:, None], (B, T)).copy()
    else:
        adv = grid(draw, -6, 6, B * T, 4).reshape(B, T)
    lengths = np.array(draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
    return lp, old, adv, mask


@functools.partial(jax.jit, static_argnames=("clip_low", "clip_high", "dual", "level"))
def loss_and_grad(lp, old, adv, mask, clip_low, clip_high, dual, level):
    """{mode: (loss, grad, metrics)} for every aggregation mode, in one compilation."""
    out = {}
    for mode in aggregation.AGG_MODES:

        def f(x, mode=mode):
            return ppo_policy_loss(
                x,
                old,
                adv,
                mask,
                clip_low=clip_low,
                clip_high=clip_high,
                dual_clip=dual,
                ratio_level=level,
                agg_mode=mode,
                norm_constant=NORM,
                group_rows=GROUP,
            )

        (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(lp)
        out[mode] = (loss, grad, metrics)
    return out


def f32(x):
    return jnp.asarray(x, jnp.float32)


@SETTINGS
@given(loss_inputs(), st.sampled_from(CLIPS), st.sampled_from(aggregation.AGG_MODES))
def test_token_level_loss_grad_and_metrics(inputs, clips, mode):
    lp, old, adv, mask = inputs
    loss, grad, metrics = loss_and_grad(f32(lp), f32(old), f32(adv), f32(mask), *clips, "token")[mode]
    ref_loss, ref_grad, ref_metrics = np_ppo(lp, old, adv, mask, *clips, "token", mode)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=1e-7)
    for name, value in ref_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(metrics["pg_loss"]) == float(loss)


@SETTINGS
@given(loss_inputs(per_sequence_adv=True), st.sampled_from(CLIPS), st.sampled_from(aggregation.AGG_MODES))
def test_sequence_level_gspo_loss_and_grad(inputs, clips, mode):
    lp, old, adv, mask = inputs
    lp = np.clip(lp, old - 19, old + 19)  # per-sequence ratios: keep every token inside the clamp
    loss, grad, metrics = loss_and_grad(f32(lp), f32(old), f32(adv), f32(mask), *clips, "sequence")[mode]
    ref_loss, ref_grad, ref_metrics = np_ppo(lp, old, adv, mask, *clips, "sequence", mode)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["pg_clipfrac_higher"], ref_metrics["pg_clipfrac_higher"], atol=1e-6)


@pytest.mark.parametrize("clips", CLIPS)
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_dense_random_batch(clips, level):
    """Many tokens per case, so every clip branch (higher, lower, dual, free) occurs."""
    rows, length = 64, 32
    rng = np.random.default_rng(0)
    old = rng.integers(-64, 1, (rows, length)) / 16
    lp = old + rng.integers(-20, 21, (rows, 1 if level == "sequence" else length)) / 16  # ratios 0.29 .. 3.5
    adv = rng.integers(-6, 7, (rows, 1 if level == "sequence" else length)) / 4 * np.ones((rows, length))
    mask = (np.arange(length)[None, :] < rng.integers(0, length + 1, (rows, 1))).astype(np.float64)
    results = loss_and_grad(f32(lp), f32(old), f32(adv), f32(mask), *clips, level)
    for mode, (loss, grad, metrics) in results.items():
        ref_loss, ref_grad, ref_metrics = np_ppo(lp, old, adv, mask, *clips, level, mode)
        np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(grad, ref_grad, rtol=2e-5, atol=1e-7)
        for name, value in ref_metrics.items():
            np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_per_sequence_advantages_broadcast():
    key = jax.random.key(0)
    lp, old = jax.random.normal(key, (2, 3, 5)) * 0.1
    adv = jnp.array([1.0, -2.0, 0.5])
    mask = jnp.ones((3, 5))
    a, _ = ppo_policy_loss(lp, old, adv, mask)
    b, _ = ppo_policy_loss(lp, old, jnp.broadcast_to(adv[:, None], (3, 5)), mask)
    assert float(a) == float(b)


def test_empty_mask_gives_zero_loss_and_finite_metrics():
    z = jnp.zeros((3, 4))
    loss, metrics = jax.jit(ppo_policy_loss)(z, z, jnp.ones((3, 4)), z)
    assert float(loss) == 0.0
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_log_ratio_clamp_keeps_the_loss_finite():
    lp, old = jnp.array([[60.0]]), jnp.array([[0.0]])
    loss, _ = ppo_policy_loss(lp, old, jnp.array([[-1.0]]), jnp.ones((1, 1)), dual_clip=None)
    np.testing.assert_allclose(loss, np.exp(20.0), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clip_low": 1.0}, "clip_low=1.0"),
        ({"clip_high": -0.1}, "clip_high=-0.1"),
        ({"dual_clip": 1.0}, "dual_clip=1.0"),
        ({"ratio_level": "group"}, "group"),
        ({"agg_mode": "sum"}, "sum"),
        ({"agg_mode": "seq-mean-token-sum-norm"}, "norm_constant"),
        ({"agg_mode": "micro-token-mean", "group_rows": 3}, "group_rows dividing 2"),
    ],
)
def test_argument_errors(kwargs, match):
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=match):
        ppo_policy_loss(z, z, z, jnp.ones((2, 3)), **kwargs)


# ---------------------------------------------------------------- gradient accumulation
MICRO = 4


def accumulation_problem():
    """A tiny softmax policy: logp of sampled tokens depends on shared weights W, 8 rows of uneven length."""
    kx, kw, kt, ko, ka = jax.random.split(jax.random.key(42), 5)
    rows, length, dim, vocab = 8, 12, 5, 7
    x = jax.random.normal(kx, (rows, length, dim))
    w = jax.random.normal(kw, (dim, vocab)) * 0.5
    tokens = jax.random.randint(kt, (rows, length), 0, vocab)
    lengths = jnp.array([12, 1, 7, 0, 3, 12, 9, 2])  # micro-batches of 2 rows hold 13, 10, 15, 11 tokens
    mask = (jnp.arange(length)[None, :] < lengths[:, None]).astype(jnp.float32)
    old = jax.random.normal(ko, (rows, length)) * 0.3 - 2.0
    adv = jax.random.normal(ka, (rows, length))
    return x, w, tokens, mask, old, adv


def policy_logp(w, x, tokens):
    logits = jnp.einsum("btd,dv->btv", x, w)
    return jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnames=("mode", "num_groups"))
def loss_and_weight_grad(w, x, tokens, old, adv, mask, mode, num_tokens=None, num_sequences=None, num_groups=None):
    def loss_fn(w):
        return ppo_policy_loss(
            policy_logp(w, x, tokens),
            old,
            adv,
            mask,
            agg_mode=mode,
            norm_constant=NORM,
            num_tokens=num_tokens,
            num_sequences=num_sequences,
            group_rows=2,
            num_groups=num_groups,
        )[0]

    return jax.value_and_grad(loss_fn)(w)


@pytest.mark.parametrize("mode", aggregation.AGG_MODES)
def test_gradient_accumulation_over_micro_batches_equals_full_batch(mode):
    x, w, tokens, mask, old, adv = accumulation_problem()
    full_loss, full_grad = loss_and_weight_grad(w, x, tokens, old, adv, mask, mode)
    num_tokens, num_sequences = aggregation.count_tokens(mask), aggregation.count_sequences(mask)
    acc_loss, acc_grad, naive_grad = 0.0, jnp.zeros_like(w), jnp.zeros_like(w)
    for i in range(MICRO):
        sl = slice(2 * i, 2 * i + 2)
        args = (w, x[sl], tokens[sl], old[sl], adv[sl], mask[sl], mode)
        loss, grad = loss_and_weight_grad(*args, num_tokens, num_sequences, 8 // 2)
        acc_loss, acc_grad = acc_loss + loss, acc_grad + grad
        naive_grad = naive_grad + loss_and_weight_grad(*args)[1] / MICRO
    np.testing.assert_allclose(acc_loss, full_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(acc_grad, full_grad, rtol=1e-5, atol=1e-7)
    if mode == "token-mean":
        # Normalizing each micro-batch by its own token count (the verl/EasyR1 bug) gives another gradient.
        assert not np.allclose(naive_grad, full_grad, rtol=1e-3, atol=1e-5)
    if mode == "micro-token-mean":
        # ... which is exactly micro-token-mean over groups of the micro-batch's rows: the official loss
        np.testing.assert_allclose(naive_grad, full_grad, rtol=1e-5, atol=1e-7)
