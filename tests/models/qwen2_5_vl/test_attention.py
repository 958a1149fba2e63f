"""The chunked attention equals the plain one (with padding of the query count to a chunk multiple)."""

import jax
import numpy as np
import pytest

from shuffle_r1_jax.models.qwen2_5_vl import attention


@pytest.mark.parametrize("mask_kind", ["keys", "causal"])
def test_chunked_equals_xla(monkeypatch, mask_kind):
    monkeypatch.setattr(attention, "QUERY_CHUNK", 16)
    rng = np.random.default_rng(0)
    b, t, n, kv, d = 2, 41, 4, 2, 8
    q = rng.standard_normal((b, t, n, d)).astype(np.float32)
    k = rng.standard_normal((b, t, kv, d)).astype(np.float32)
    v = rng.standard_normal((b, t, kv, d)).astype(np.float32)
    valid = rng.random((b, t)) > 0.2
    mask = valid[:, None, :] if mask_kind == "keys" else np.tril(np.ones((t, t), bool))[None] & valid[:, None, :]
    plain = attention.dot_product_attention(q, k, v, mask, scale=0.3, implementation="xla")
    chunked = jax.jit(lambda *a: attention.dot_product_attention(*a, scale=0.3, implementation="chunked"))(
        q, k, v, mask
    )
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(plain), atol=1e-6)


def test_unknown_implementation_is_named():
    x = np.zeros((1, 2, 1, 4), np.float32)
    with pytest.raises(ValueError, match="'flash'"):
        attention.dot_product_attention(x, x, x, np.ones((1, 2, 2), bool), scale=1.0, implementation="flash")
