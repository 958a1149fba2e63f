"""The fused attention implementations ("tokamax", "splash") against the exact "xla" path, on CPU.

What CPU can run: tokamax's own XLA implementation (the one tokamax falls back to where no fused kernel takes the
inputs; its GPU kernels are checked by scripts/gpu_check.py) and the splash kernel itself in Pallas' interpret
mode. Shapes: grouped key/value heads (4 query heads over 2), sequences that are not a multiple of the kernels'
blocks, left and right padding, a query whose keys are all masked.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl import Qwen25VL, attention, fused_attention
from shuffle_r1_jax.models.qwen2_5_vl.text import causal_mask, segment_causal_mask
from shuffle_r1_jax.parallel.sharding import make_mesh
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.defaults import base_config
from tests.models.qwen2_5_vl.test_remat import _config as small_decoder_config

B, S, N, K, D = 4, 200, 4, 2, 16
SCALE = D**-0.5
needs_tokamax = pytest.mark.skipif(
    not fused_attention.tokamax_available(), reason="tokamax is not installed (pip install -e '.[kernels]')"
)


def _qkv(length=S, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, length, N, D)).astype(np.float32)
    k = rng.standard_normal((B, length, K, D)).astype(np.float32)
    v = rng.standard_normal((B, length, K, D)).astype(np.float32)
    return q, k, v


def _padding(length=S):
    """`int32[B, length]`: row 0 left-padded by 30, row 1 right-padded after 150, row 2 both, row 3 no padding."""
    valid = np.ones((B, length), np.int32)
    valid[0, :30] = 0
    valid[1, 150:] = 0
    valid[2, :7], valid[2, 190:] = 0, 0
    return valid


def _masks():
    """A causal padded mask and a key-only mask whose row 3 has no valid key (every query of it all masked)."""
    valid = _padding()
    keys = valid.astype(bool)[:, None, :]
    keys[3] = False
    # packed rows (learner.packing): sequences of 50, 90 and 40 tokens then 20 unused positions; one sequence; ...
    segments = np.zeros((B, S), np.int32)
    for row, lengths in enumerate([(50, 90, 40), (S,), (1, 120, 3, 60), (199,)]):
        starts = np.cumsum((0,) + lengths)
        for index, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            segments[row, a:b] = index + 1
    packed = np.asarray(segment_causal_mask(jnp.asarray(segments)))
    return {"causal": np.asarray(causal_mask(jnp.asarray(valid))), "keys": keys, "packed": packed}


def _attend(implementation, q, k, v, mask):
    return jax.jit(lambda *a: attention.dot_product_attention(*a, scale=SCALE, implementation=implementation))(
        q, k, v, mask
    )


def _rows_with_keys(mask):
    """`bool[B, S, 1, 1]`: the queries that see at least one key."""
    return np.broadcast_to(mask.any(axis=2), (B, S))[:, :, None, None]


@needs_tokamax
@pytest.mark.parametrize("kind", ["causal", "keys"])
def test_tokamax_equals_xla_also_where_all_keys_are_masked(kind):
    q, k, v = _qkv()
    mask = _masks()[kind]
    expected = _attend("xla", q, k, v, mask)
    # its XLA implementation also averages all values for a query with no key, like ours
    np.testing.assert_allclose(np.asarray(_attend("tokamax", q, k, v, mask)), np.asarray(expected), atol=2e-6)


@needs_tokamax
def test_tokamax_gradients_equal_xla():
    q, k, v = _qkv()
    mask = _masks()["causal"]

    def grads(implementation):
        def loss(q, k, v):
            return (
                attention.dot_product_attention(q, k, v, mask, scale=SCALE, implementation=implementation) ** 2
            ).sum()

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    for got, want in zip(grads("tokamax"), grads("xla")):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)


def test_tokamax_missing_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setattr(fused_attention, "tokamax_available", lambda: False)
    q, k, v = _qkv(length=8)
    with pytest.raises(ImportError, match=r'tokamax.*pip install -e "\.\[kernels\]"'):
        attention.dot_product_attention(q, k, v, np.ones((B, 1, 8), bool), scale=SCALE, implementation="tokamax")
    monkeypatch.setattr(settings, "tokamax_available", lambda: False)
    c = base_config()
    c.model.attention_impl = "tokamax"
    with pytest.raises(settings.ConfigError, match=r"model.attention_impl = 'tokamax'.*\[kernels\]"):
        settings.resolve(c, check_inputs=False)


@pytest.mark.parametrize("kind", ["causal", "keys", "packed"])
def test_splash_equals_xla_on_every_query_that_sees_a_key(kind):
    q, k, v = _qkv()
    mask = _masks()[kind]
    got, expected = np.asarray(_attend("splash", q, k, v, mask)), np.asarray(_attend("xla", q, k, v, mask))
    seen = _rows_with_keys(mask)
    np.testing.assert_allclose(np.where(seen, got, 0), np.where(seen, expected, 0), atol=2e-6)
    # a query with no key gets a finite output that means nothing (the module docstring says which)
    assert np.isfinite(got).all()


def test_splash_gradients_equal_xla_through_the_queries_that_see_keys():
    q, k, v = _qkv()
    mask = _masks()["causal"]
    seen = jnp.asarray(_rows_with_keys(mask))

    def grads(implementation):
        def loss(q, k, v):
            out = attention.dot_product_attention(q, k, v, mask, scale=SCALE, implementation=implementation)
            return (jnp.where(seen, out, 0) ** 2).sum()

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    for got, want in zip(grads("splash"), grads("xla")):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)


def test_splash_gives_nan_rows_for_a_square_mask_it_cannot_translate():
    q, k, v = _qkv()
    mask = _masks()["causal"].copy()
    mask[1, 100, 120] = True  # a key after the query: not causal
    out = np.asarray(_attend("splash", q, k, v, mask))
    assert np.isnan(out[1]).all() and np.isfinite(np.delete(out, 1, axis=0)).all()


@pytest.mark.parametrize("case", ["short", "cache"])
def test_splash_leaves_other_shapes_to_the_chunked_path(case):
    if case == "short":  # fewer queries than a kernel block
        q, k, v = _qkv(length=40)
        mask = np.asarray(causal_mask(jnp.asarray(_padding(40))))
    else:  # a block of queries over a longer KV cache
        q, _, _ = _qkv()
        _, k, v = _qkv(length=256, seed=1)
        mask = np.tril(np.ones((S, 256), bool), k=56)[None].repeat(B, 0)
    np.testing.assert_allclose(
        np.asarray(_attend("splash", q, k, v, mask)), np.asarray(_attend("chunked", q, k, v, mask)), atol=0
    )


@pytest.mark.parametrize("implementation", ["splash", pytest.param("tokamax", marks=needs_tokamax)])
def test_fused_kernels_under_a_mesh_equal_xla(implementation):
    """Under a (data, fsdp, tensor) = (2, 2, 2) mesh the kernels run per shard (rows over data x fsdp, heads over
    tensor) and still equal the unsharded reference."""
    q, k, v = _qkv()
    mask = _masks()["causal"]
    expected = np.asarray(_attend("xla", q, k, v, mask))
    with jax.set_mesh(make_mesh(data=2, fsdp=2, tensor=2)):
        got = np.asarray(_attend(implementation, q, k, v, mask))
    seen = _rows_with_keys(mask)
    np.testing.assert_allclose(np.where(seen, got, 0), np.where(seen, expected, 0), atol=2e-6)


def test_the_decoder_with_splash_equals_xla_on_its_real_tokens():
    """The decoder's own mask (`causal_mask` of a padded batch) through two layers: splash, translated, gives the
    xla decoder's hidden states at every real token."""
    length = 160
    valid = np.ones((2, length), np.int32)
    valid[0, :25], valid[1, 130:] = 0, 0
    rng = np.random.default_rng(3)
    embeds = jnp.asarray(rng.standard_normal((2, length, 128)), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(length), (3, 2, length))
    hidden = {}
    for implementation in ("xla", "splash"):
        model = Qwen25VL(small_decoder_config(2), attention_impl=implementation, rngs=nnx.Rngs(0))
        hidden[implementation] = np.asarray(model.decode(embeds, positions, causal_mask(jnp.asarray(valid)))[0])
    real = valid.astype(bool)[:, :, None]
    np.testing.assert_allclose(np.where(real, hidden["splash"], 0), np.where(real, hidden["xla"], 0), atol=2e-5)
