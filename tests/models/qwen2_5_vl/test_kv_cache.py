"""Prefill into a KV cache, then one-token decode steps, gives the logits of the full-sequence forward."""

import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.models.qwen2_5_vl.kv_cache import LayerKVCache
from tests.models.qwen2_5_vl.hf_reference import TEXT_VOCAB, build_sample, pad_batch, random_pixels


def test_prefill_then_decode_equals_full_forward(untied_pair):
    _, model = untied_pair
    config = model.config
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 4, 4)]
    prompts = [build_sample(rng, [3, grids[0], 5]), build_sample(rng, [9, grids[1], 2])]
    steps = 4
    continuations = rng.integers(0, TEXT_VOCAB, (2, steps))
    pixels = random_pixels(rng, grids)

    # reference: the whole (left-padded prompt + continuation) sequence in one forward
    prompt_ids, prompt_mask = pad_batch(prompts, "left")
    full_ids = np.concatenate([prompt_ids, continuations], 1)
    full_mask = np.concatenate([prompt_mask, np.ones_like(continuations)], 1)
    full = prepare_inputs(config, full_ids, full_mask, pixels, np.asarray(grids))
    expected = np.asarray(
        model(full.input_ids, full.attention_mask, full.position_ids, full.vision, full.vision_token_slot)
    )

    # prefill the prompt into a cache with room for the continuation, then decode token by token
    prompt = prepare_inputs(config, prompt_ids, prompt_mask, pixels, np.asarray(grids))
    batch, length = prompt_ids.shape
    capacity = length + steps
    t = config.text
    caches = [LayerKVCache.empty(batch, capacity, t.num_key_value_heads, t.head_dim, jnp.float32) for _ in model.layers]
    key_valid = np.concatenate([prompt_mask, np.zeros((batch, steps), prompt_mask.dtype)], 1).astype(bool)
    prefill_mask = np.tril(np.ones((length, capacity), bool))[None] & key_valid[:, None, :]
    embeds = model.embed(prompt.input_ids, prompt.vision, prompt.vision_token_slot)
    hidden, caches = model.decode(embeds, prompt.position_ids, prefill_mask, caches)
    got = [np.asarray(model.logits(hidden))]
    valid_count = prompt_mask.sum(1)
    for s in range(steps):
        token = continuations[:, s : s + 1]
        key_valid[:, length + s] = True
        pos = np.broadcast_to((valid_count + prompt.rope_deltas)[None, :, None], (3, batch, 1)).astype(np.int32)
        step_mask = key_valid[:, None, :] & (np.arange(capacity) <= length + s)[None, None, :]
        hidden, caches = model.decode(model.embed(jnp.asarray(token, jnp.int32)), pos, step_mask, caches)
        got.append(np.asarray(model.logits(hidden)))
        valid_count = valid_count + 1
    got = np.concatenate(got, 1)
    valid = full_mask.astype(bool)
    np.testing.assert_allclose(got[valid], expected[valid], atol=1e-4, rtol=0)
