"""Token processors: the support of top-p / top-k / masks against a NumPy sort-based reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.sampling import processors
from shuffle_r1_jax.sampling.processors import SamplingConfig, choose_tokens, inverse_cdf, top_k_mask, top_p_mask


def nucleus_reference(logits: np.ndarray, p: float) -> np.ndarray:
    """bool[V]: the smallest most-likely set whose probability reaches p (by a full sort)."""
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    mass_before = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])
    keep = np.zeros(len(logits), bool)
    keep[order[mass_before < p]] = True
    return keep


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p=st.floats(0.05, 0.999), vocab=st.sampled_from([7, 50, 1000]))
def test_top_p_keeps_exactly_the_nucleus(seed, p, vocab):
    logits = np.random.default_rng(seed).standard_normal((3, vocab)).astype(np.float32) * 3
    got = np.isfinite(np.asarray(top_p_mask(jnp.asarray(logits), p)))
    for row in range(3):
        probs = np.sort(np.exp(logits[row] - logits[row].max()) / np.exp(logits[row] - logits[row].max()).sum())[::-1]
        if np.min(np.abs(np.cumsum(probs) - p)) < 1e-5:
            continue  # the boundary is within float rounding of p: either answer is right
        np.testing.assert_array_equal(got[row], nucleus_reference(logits[row].astype(np.float64), p))


def test_top_k_keeps_the_k_largest():
    logits = np.random.default_rng(0).standard_normal((4, 30)).astype(np.float32)
    got = np.isfinite(np.asarray(top_k_mask(jnp.asarray(logits), 5)))
    expected = logits >= np.sort(logits, axis=1)[:, -5][:, None]
    np.testing.assert_array_equal(got, expected)
    assert got.sum(1).tolist() == [5] * 4


def _draws(logits, config, count=4000):
    keys = jax.random.split(jax.random.key(0), count)
    batch = jnp.broadcast_to(jnp.asarray(logits)[None], (1, len(logits)))
    tokens = jax.vmap(lambda k: choose_tokens(batch, k[None], config)[0][0])(keys)
    return np.asarray(tokens)


def test_sampled_support_is_exactly_top_k_then_top_p_minus_forbidden():
    # probabilities (softmax of the logits) 0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02
    probs = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
    logits = np.log(probs).astype(np.float32)
    only_p = _draws(logits, SamplingConfig(temperature=1.0, top_p=0.75))
    assert set(only_p.tolist()) == {0, 1, 2}  # 0.4 + 0.25 = 0.65 < 0.75, + 0.15 reaches it
    only_k = _draws(logits, SamplingConfig(temperature=1.0, top_k=4))
    assert set(only_k.tolist()) == {0, 1, 2, 3}
    forbidden = _draws(logits, SamplingConfig(temperature=1.0, top_k=4, forbidden_token_ids=(1,)))
    assert set(forbidden.tolist()) == {0, 2, 3, 4}  # the mask comes first: top-4 of what may be sampled
    # frequencies inside the support follow the renormalised probabilities (4000 draws: 4 sigma < 0.031)
    freq = np.bincount(only_p, minlength=7)[:3] / len(only_p)
    np.testing.assert_allclose(freq, probs[:3] / probs[:3].sum(), atol=0.031)


def test_greedy_and_logprobs():
    logits = jnp.asarray([[0.1, 2.0, -1.0, 1.5], [3.0, 0.0, 0.0, 0.0]])
    tokens, logprobs = choose_tokens(
        logits, jax.random.split(jax.random.key(0), 2), SamplingConfig(temperature=0.0, forbidden_token_ids=(0,))
    )
    assert tokens.tolist() == [1, 1]  # row 1's best token 0 is forbidden
    expected = jax.nn.log_softmax(logits, -1)[jnp.arange(2), tokens]
    np.testing.assert_allclose(logprobs, expected, rtol=1e-6)
    _, tempered = choose_tokens(logits, jax.random.split(jax.random.key(1), 2), SamplingConfig(temperature=0.5))
    assert np.all(np.asarray(tempered) <= 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(temperature=-1.0), "temperature = -1.0"), (dict(top_p=0.0), "top_p = 0.0"), (dict(top_k=-2), "top_k = -2")],
)
def test_bad_sampling_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_inverse_cdf_follows_the_probabilities_and_skips_zeros():
    probs = np.zeros((1, 600), np.float32)
    probs[0, [3, 255, 256, 599]] = [0.1, 0.2, 0.3, 0.4]  # block edges of the 256-wide blocks, last token
    u = jnp.asarray(np.random.default_rng(0).random(20000, dtype=np.float32))
    tokens = jax.vmap(lambda ui: inverse_cdf(jnp.asarray(probs), ui[None])[0])(u)
    counts = np.bincount(np.asarray(tokens), minlength=600)
    assert set(np.flatnonzero(counts)) == {3, 255, 256, 599}
    np.testing.assert_allclose(counts[[3, 255, 256, 599]] / 20000, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    assert inverse_cdf(jnp.asarray(probs), jnp.asarray([0.9999999], jnp.float32))[0] == 599


def test_fallback_path_samples_the_nucleus_exactly(monkeypatch):
    monkeypatch.setattr(processors, "REJECTION_ROUNDS", 1)  # most rows reach the explicit-nucleus fallback
    probs = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    draws = _draws(np.log(probs).astype(np.float32), SamplingConfig(temperature=1.0, top_p=0.5))
    assert set(draws.tolist()) == {0, 1}
    freq = np.bincount(draws, minlength=5)[:2] / len(draws)
    np.testing.assert_allclose(freq, probs[:2] / probs[:2].sum(), atol=0.031)
