"""LoRA adapters on the decoder: the adapter math against NumPy, fresh adapters change nothing, merged exports equal
the adapter forward (ours and transformers'), dropout, sharding and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.sharding import PartitionSpec
from transformers import Qwen2_5_VLForConditionalGeneration

from shuffle_r1_jax.models.qwen2_5_vl import forward_logits, load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.layers import Dense
from shuffle_r1_jax.models.qwen2_5_vl.lora import (
    LoraConfig,
    adapter_dropout,
    dropped,
    is_adapter_path,
    merged_params,
)
from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint
from shuffle_r1_jax.parallel.sharding import make_mesh
from tests.models.qwen2_5_vl.hf_reference import build_sample, hf_logits, pad_batch, random_pixels

LORA = LoraConfig(rank=4, alpha=8.0)


def _randomize_adapters(model, seed: int, std: float = 0.05):
    """Every adapter's A and B random (a fresh B is zero, which would hide any mistake in the B path)."""
    graphdef, state = nnx.split(model)
    flat = []
    for i, (path, var) in enumerate(nnx.to_flat_state(state)):
        if is_adapter_path(path):
            value = std * np.random.default_rng([seed, i]).standard_normal(var.shape).astype(np.float32)
            var = var.replace(jnp.asarray(value))
        flat.append((path, var))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _batch(config):
    rng = np.random.default_rng(3)
    grids = [(1, 4, 6), (1, 2, 2)]
    samples = [build_sample(rng, [3, grids[0], 5]), build_sample(rng, [2, grids[1], 9]), build_sample(rng, [12])]
    ids, mask = pad_batch(samples, "left")
    return ids, mask, random_pixels(rng, grids), np.asarray(grids)


def test_dense_adapter_equals_numpy():
    lora = LoraConfig(rank=3, alpha=6.0)
    dense = Dense((8,), (2, 5), axes=("embed", "q_heads", "head_dim"), use_bias=True, lora=lora, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal((3, 10)).astype(np.float32)
    dense.lora.lora_a[...] = jnp.asarray(a)
    dense.lora.lora_b[...] = jnp.asarray(b)
    x = rng.standard_normal((2, 7, 8)).astype(np.float32)
    kernel, bias = np.asarray(dense.kernel[...]), np.asarray(dense.bias[...])
    expected = np.einsum("bsi,ihd->bshd", x, kernel) + bias + 2.0 * (x @ a @ b).reshape(2, 7, 2, 5)
    np.testing.assert_allclose(np.asarray(dense(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)
    assert dense.lora.lora_a[...].dtype == jnp.float32 and dense.lora.lora_b.shape == (3, 10)


def test_adapters_go_on_the_decoder_targets_only(untied_checkpoint):
    _, path = untied_checkpoint
    model, _ = load_pretrained(path, lora=LoraConfig(rank=2, targets=("q_proj", "down_proj")))
    paths = [p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)) if is_adapter_path(p)]
    assert paths and all(p[0] == "layers" for p in paths)
    assert {p[-3] for p in paths} == {"q_proj", "down_proj"}
    assert len(paths) == 2 * 2 * model.config.text.num_hidden_layers


def test_fresh_adapters_change_nothing(untied_checkpoint):
    _, path = untied_checkpoint
    base, config = load_pretrained(path)
    adapted, _ = load_pretrained(path, lora=LORA, lora_seed=1)
    ids, mask, pixels, grids = _batch(config)
    np.testing.assert_array_equal(
        np.asarray(forward_logits(adapted, ids, mask, pixels, grids)),
        np.asarray(forward_logits(base, ids, mask, pixels, grids)),
    )
    a = adapted.layers[0].self_attn.q_proj.lora.lora_a[...]
    assert float(jnp.abs(a).max()) > 0 and a.dtype == jnp.float32


def test_merged_export_equals_the_adapter_forward(untied_checkpoint, tmp_path):
    _, path = untied_checkpoint
    adapted, config = load_pretrained(path, lora=LORA)
    adapted = _randomize_adapters(adapted, seed=5)
    ids, mask, pixels, grids = _batch(config)
    expected = np.asarray(forward_logits(adapted, ids, mask, pixels, grids))
    base, _ = load_pretrained(path)
    assert np.abs(np.asarray(forward_logits(base, ids, mask, pixels, grids)) - expected).max() > 1e-3

    save_hf_checkpoint(adapted, tmp_path / "merged")
    merged, _ = load_pretrained(tmp_path / "merged")
    np.testing.assert_allclose(np.asarray(forward_logits(merged, ids, mask, pixels, grids)), expected, atol=1e-5)
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "merged", torch_dtype=torch.float32).eval()
    valid = mask.astype(bool)
    np.testing.assert_allclose(hf_logits(hf, ids, mask, pixels, grids)[valid], expected[valid], atol=1e-4)


def test_merged_params_fold_each_adapter_into_its_kernel():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((4, 2, 3)).astype(np.float32)
    a, b = rng.standard_normal((4, 2)).astype(np.float32), rng.standard_normal((2, 6)).astype(np.float32)
    params = {"layers": {0: {"q": {"kernel": kernel, "bias": np.ones(3), "lora": {"lora_a": a, "lora_b": b}}}}}
    merged = merged_params(params, LoraConfig(rank=2, alpha=3.0))
    assert set(merged["layers"][0]["q"]) == {"kernel", "bias"}
    np.testing.assert_allclose(merged["layers"][0]["q"]["kernel"], kernel + 1.5 * (a @ b).reshape(4, 2, 3), rtol=1e-6)


def test_dropout_only_inside_the_context_and_only_on_the_adapter_input():
    x = jnp.ones((200, 50))
    assert dropped(x, 0.3) is x
    with adapter_dropout(jax.random.key(0)):
        first = np.asarray(dropped(x, 0.3))
        second = np.asarray(dropped(x, 0.3))
    values = np.unique(first)
    assert len(values) == 2 and values[0] == 0 and np.isclose(values[1], 1 / 0.7)
    assert abs((first == 0).mean() - 0.3) < 0.02 and not np.array_equal(first, second)

    lora = LoraConfig(rank=2, alpha=2.0, dropout=0.5)
    dense = Dense((6,), (4,), axes=("embed", "mlp"), use_bias=False, lora=lora, rngs=nnx.Rngs(0))
    dense.lora.lora_b[...] = jnp.ones((2, 4))
    inputs = jnp.asarray(np.random.default_rng(0).standard_normal((3, 6)), jnp.float32)
    base = inputs @ dense.kernel[...]
    key = jax.random.key(7)
    with adapter_dropout(key):
        got = dense(inputs)
    kept = jax.random.bernoulli(jax.random.fold_in(key, 0), 0.5, inputs.shape)
    expected = base + 1.0 * (jnp.where(kept, inputs / 0.5, 0.0) @ dense.lora.lora_a[...] @ dense.lora.lora_b[...])
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(dense(inputs)),
        np.asarray(base + inputs @ dense.lora.lora_a[...] @ dense.lora.lora_b[...]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_adapters_shard_like_their_kernels_dims(untied_checkpoint):
    _, path = untied_checkpoint
    model, _ = load_pretrained(path, mesh=make_mesh(data=2, fsdp=2, tensor=2), lora=LORA)
    q = model.layers[0].self_attn.q_proj
    assert q.kernel[...].sharding.spec == PartitionSpec("fsdp", "tensor", None)
    assert q.lora.lora_a[...].sharding.spec == PartitionSpec("fsdp", None)  # the rank dim: fsdp is taken
    assert q.lora.lora_b[...].sharding.spec == PartitionSpec("fsdp", "tensor")
    down = model.layers[0].mlp.down_proj
    assert down.lora.lora_a[...].sharding.spec == PartitionSpec("tensor", "fsdp")
    assert down.lora.lora_b[...].sharding.spec == PartitionSpec("fsdp", None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rank=0), "rank = 0"),
        (dict(rank=2, alpha=0.0), "alpha = 0.0"),
        (dict(rank=2, targets=("qkv",)), "targets = \\('qkv',\\)"),
        (dict(rank=2, targets=()), "targets = \\(\\)"),
        (dict(rank=2, dropout=1.0), "dropout = 1.0"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoraConfig(**kwargs)
