"""The jitted sampler: greedy parity with transformers' generate, log-probs, seeds, stops, prefill once, sharding."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl import Qwen25VL, load_pretrained, prepare_inputs
from shuffle_r1_jax.parallel.sharding import make_mesh
from shuffle_r1_jax.sampling import FINISH_EOS, FINISH_LENGTH, Sampler, SamplingConfig
from shuffle_r1_jax.sampling import sampler as sampler_module
from shuffle_r1_jax.sampling.chunks import merge_chunks, take_chunk
from shuffle_r1_jax.sampling.sampler import DEFAULT_DECODE_STAGES, decode_stages
from tests.models.qwen2_5_vl.hf_reference import TEXT_VOCAB, TOKENS, build_sample, pad_batch, random_pixels

FORBIDDEN = (TOKENS["image_token_id"], TOKENS["video_token_id"])
GRIDS = [(1, 8, 12), (1, 4, 4), (1, 6, 10)]
PROMPT_IMAGES = [[0], [], [1, 2]]  # which of GRIDS each prompt of the `prompts` fixture holds


@pytest.fixture(scope="module")
def prompts():
    """A left-padded batch of 3 prompts: two images of different sizes, a text-only one, one with an image."""
    rng = np.random.default_rng(0)
    samples = [
        build_sample(rng, [3, GRIDS[0], 5]),
        build_sample(rng, [14]),
        build_sample(rng, [9, GRIDS[1], 2, GRIDS[2], 1]),
    ]
    ids, mask = pad_batch(samples, "left")
    return ids, mask, random_pixels(rng, GRIDS)


def _inputs(model, prompts):
    ids, mask, pixels = prompts
    return prepare_inputs(model.config, ids, mask, pixels, np.asarray(GRIDS))


def test_greedy_equals_transformers_generate(untied_pair, prompts):
    hf_model, ours = untied_pair
    ids, mask, pixels = prompts
    steps = 10
    with torch.no_grad():
        out = hf_model.generate(
            input_ids=torch.as_tensor(ids),
            attention_mask=torch.as_tensor(mask),
            pixel_values=torch.as_tensor(pixels),
            image_grid_thw=torch.as_tensor(np.asarray(GRIDS)),
            mm_token_type_ids=torch.as_tensor((ids == TOKENS["image_token_id"]).astype(np.int64)),
            do_sample=False,
            max_new_tokens=steps,
            min_new_tokens=steps,
            pad_token_id=0,
        )
    expected = out[:, ids.shape[1] :].numpy()
    graphdef, state = nnx.split(ours)
    # min_new_tokens makes transformers forbid EOS; forbid it here too
    no_eos = FORBIDDEN + (TOKENS["eos_token_id"],)
    sampler = Sampler(graphdef, SamplingConfig(temperature=0.0, forbidden_token_ids=no_eos))
    got = sampler.generate(state, _inputs(ours, prompts), n=2, max_new_tokens=steps, key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(got.tokens), np.repeat(expected, 2, axis=0))
    assert np.all(np.asarray(got.finish) == FINISH_LENGTH) and np.all(np.asarray(got.lengths) == steps)


def _response_logprobs(model, prompts, tokens, mask, n, temperature):
    """log_softmax(logits / T) of a full forward over prompt + response, at the response tokens.

    `prompts` is (ids, mask, pixels, grids, images): images[p] lists the indices into grids of prompt p's images.
    """
    ids, prompt_mask, pixels, grids, prompt_images = prompts
    full_ids = np.concatenate([np.repeat(ids, n, 0), tokens], 1)
    full_mask = np.concatenate([np.repeat(prompt_mask, n, 0), mask], 1)
    offsets = np.cumsum([0] + [t * h * w for t, h, w in grids])
    rows = [i for images in prompt_images for _ in range(n) for i in images]  # each prompt's images, n times
    rep_grids = [grids[i] for i in rows]
    rep_pixels = np.concatenate([pixels[offsets[i] : offsets[i + 1]] for i in rows])
    logits = model(*_fields(prepare_inputs(model.config, full_ids, full_mask, rep_pixels, np.asarray(rep_grids))))
    logp = jax.nn.log_softmax(np.asarray(logits, np.float32) / temperature, -1)
    length = ids.shape[1]
    # the token at position length + j is predicted by the logits at position length + j - 1
    pred = np.asarray(logp)[:, length - 1 : -1]
    return np.take_along_axis(pred, tokens[..., None], -1)[..., 0]


def _fields(inputs):
    return inputs.input_ids, inputs.attention_mask, inputs.position_ids, inputs.vision, inputs.vision_token_slot


def test_logprobs_equal_a_full_forward_and_seeds_reproduce(untied_pair, prompts):
    _, ours = untied_pair
    graphdef, state = nnx.split(ours)
    temperature, n, steps = 0.7, 2, 8
    config = SamplingConfig(temperature=temperature, top_p=0.95, forbidden_token_ids=FORBIDDEN)
    sampler = Sampler(graphdef, config)
    inputs = _inputs(ours, prompts)
    out = sampler.generate(state, inputs, n=n, max_new_tokens=steps, key=jax.random.key(7))
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    expected = _response_logprobs(ours, (*prompts, GRIDS, PROMPT_IMAGES), tokens, mask, n, temperature)
    np.testing.assert_allclose(np.asarray(out.logprobs)[mask == 1], expected[mask == 1], atol=1e-5, rtol=0)
    assert not np.isin(tokens, FORBIDDEN).any()

    again = sampler.generate(state, inputs, n=n, max_new_tokens=steps, key=jax.random.key(7))
    np.testing.assert_array_equal(np.asarray(again.tokens), tokens)
    other = sampler.generate(state, inputs, n=n, max_new_tokens=steps, key=jax.random.key(8))
    assert not np.array_equal(np.asarray(other.tokens), tokens)
    assert sampler.compilations == 2  # one prefill + one decode program, reused by the later calls


def test_stop_tokens_end_sequences_and_the_loop(untied_pair, prompts):
    _, ours = untied_pair
    graphdef, state = nnx.split(ours)
    greedy = Sampler(graphdef, SamplingConfig(temperature=0.0, forbidden_token_ids=FORBIDDEN))
    free = np.asarray(
        greedy.generate(state, _inputs(ours, prompts), n=1, max_new_tokens=6, key=jax.random.key(0)).tokens
    )
    stop = int(free[0, 2])  # a token that prompt 0's greedy continuation emits at step 2
    stopping = Sampler(
        graphdef, SamplingConfig(temperature=0.0, forbidden_token_ids=FORBIDDEN, stop_token_ids=(stop,), pad_token_id=0)
    )
    out = stopping.generate(state, _inputs(ours, prompts), n=1, max_new_tokens=6, key=jax.random.key(0))
    tokens, mask, lengths, finish = (np.asarray(x) for x in (out.tokens, out.mask, out.lengths, out.finish))
    for row in range(3):
        hits = np.flatnonzero(free[row] == stop)
        end = hits[0] + 1 if len(hits) else 6
        assert lengths[row] == end and mask[row].tolist() == [1] * end + [0] * (6 - end)
        np.testing.assert_array_equal(tokens[row, :end], free[row, :end])
        assert np.all(tokens[row, end:] == 0)
        assert finish[row] == (FINISH_EOS if len(hits) else FINISH_LENGTH)


def test_vision_and_prefill_run_once_per_prompt_not_per_sample(untied_pair, prompts, monkeypatch):
    _, ours = untied_pair
    seen = []
    embed, features = Qwen25VL.embed, sampler_module.image_features_jit

    def spy_embed(self, input_ids, vision=None, vision_token_slot=None, image_features=None):
        seen.append(("embed", input_ids.shape, vision is None and image_features is not None))
        return embed(self, input_ids, vision, vision_token_slot, image_features)

    def spy_features(graphdef, state, vision):  # called (not traced) once per generate
        seen.append(("vision", vision.patches.shape[0]))
        return features(graphdef, state, vision)

    monkeypatch.setattr(Qwen25VL, "embed", spy_embed)
    monkeypatch.setattr(sampler_module, "image_features_jit", spy_features)
    graphdef, state = nnx.split(ours)
    sampler = Sampler(graphdef, SamplingConfig(temperature=1.0))
    n, steps = 4, 3
    inputs = _inputs(ours, prompts)
    sampler.generate(state, inputs, n=n, max_new_tokens=steps, key=jax.random.key(0))
    length = prompts[0].shape[1]
    # the vision tower runs once over the batch's image rows; then, traced once each, the prefill embeds the 3
    # prompts with those features and each compaction stage's decode step embeds 1 token a row (no images):
    # 12 rows, then (3, 2), (2, 2), (2, 1) and (1, 1) prompt x sample slots
    image_rows = inputs.vision.patches.shape[0]
    stages = [("embed", (rows, 1), False) for rows in (12, 6, 4, 2, 1)]
    assert seen == [("vision", image_rows), ("embed", (3, length), True), *stages]
    assert sampler.prefill_calls == 1


def _four_prompt_arrays(seed=3):
    """4 prompts with one image each (three grid sizes), left-padded: (ids, mask, pixels, grids, images) as
    `_response_logprobs` takes them."""
    rng = np.random.default_rng(seed)
    ids, mask = pad_batch([build_sample(rng, [4, GRIDS[i % 3], 3 + i]) for i in range(4)], "left")
    grids = [GRIDS[i % 3] for i in range(4)]
    return ids, mask, random_pixels(rng, grids), grids, [[i] for i in range(4)]


def _four_prompts(config, seed=3):
    """The `_four_prompt_arrays` batch as `ModelInputs`."""
    ids, mask, pixels, grids, _ = _four_prompt_arrays(seed)
    return prepare_inputs(config, ids, mask, pixels, np.asarray(grids))


def _full_forward_greedy(model, arrays, steps):
    """Greedy tokens `int[P, steps]` of a loop that re-runs the full forward over prompt + tokens so far and
    takes the argmax of the logits at the last token so far (image and video tokens excluded). The tokens not
    yet chosen are padding at the end, masked out and, under causal attention, unseen by the positions before
    them: one program serves every step."""
    ids, mask, pixels, grids, _ = arrays
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, *fields: nnx.merge(graphdef, state)(*fields))
    prompts, length = ids.shape
    tokens = np.zeros((prompts, steps), np.int32)
    for t in range(steps):
        full_ids = np.concatenate([ids, tokens], 1)
        full_mask = np.concatenate([mask, (np.arange(steps) < t)[None].repeat(prompts, 0)], 1).astype(mask.dtype)
        inputs = prepare_inputs(model.config, full_ids, full_mask, pixels, np.asarray(grids))
        logits = np.array(forward(state, *_fields(inputs)), np.float32)[:, length + t - 1]
        logits[:, list(FORBIDDEN)] = -np.inf
        tokens[:, t] = logits.argmax(-1)
    return tokens


GREEDY_STEPS = 8


@pytest.fixture(scope="module")
def four_prompt_greedy(untied_pair):
    """(the `_four_prompt_arrays` batch, its `_full_forward_greedy` tokens over GREEDY_STEPS steps)."""
    _, ours = untied_pair
    arrays = _four_prompt_arrays()
    return arrays, _full_forward_greedy(ours, arrays, GREEDY_STEPS)


def _stops_ending_at_different_steps(free):
    """The set of at most 3 tokens of `free` `int[P, steps]` under which the rows end after the most distinct
    numbers of tokens (a row without a stop token runs to the end)."""
    candidates = sorted(set(free.ravel().tolist()))
    best, best_count = (), 0
    for stops in itertools.chain.from_iterable(itertools.combinations(candidates, k) for k in (1, 2, 3)):
        hits = np.isin(free, stops)
        lengths = np.where(hits.any(1), hits.argmax(1) + 1, free.shape[1])
        if len(set(lengths.tolist())) > best_count:
            best, best_count = stops, len(set(lengths.tolist()))
    return best


def test_decode_stages_halve_samples_then_prompts_in_turn():
    assert decode_stages(4, 3, 9) == ((4, 3), (4, 2), (2, 2), (2, 1), (1, 1))
    assert decode_stages(8, 2, 3) == ((8, 2), (8, 1), (4, 1))
    assert decode_stages(3, 1, 9) == ((3, 1), (2, 1), (1, 1))
    assert decode_stages(5, 16, 1) == ((5, 16),)
    assert decode_stages(1, 1, 4) == ((1, 1),)
    with pytest.raises(ValueError, match="decode stages = 0"):
        decode_stages(4, 2, 0)


@pytest.mark.parametrize("n, prompts_per_call", [(3, 0), (2, 2)])
def test_greedy_with_stops_equals_a_full_forward_loop(untied_pair, four_prompt_greedy, n, prompts_per_call):
    """Prompts of different lengths stop at different steps (finished groups are compacted out of the decode
    loop, 4 -> 2 -> 1 prompt slots in one call, 2 -> 1 per call when chunked, and the sample slots halve between
    them); every row still equals the full-forward greedy loop up to its first stop token, then pads."""
    _, ours = untied_pair
    arrays, free = four_prompt_greedy
    stops = _stops_ending_at_different_steps(free)
    hits = np.isin(free, stops)
    lengths = np.where(hits.any(1), hits.argmax(1) + 1, GREEDY_STEPS)
    assert np.sort(lengths)[2] < lengths.max()  # three groups end while one is live: both compactions happen
    expected = np.where(np.arange(GREEDY_STEPS) < lengths[:, None], free, 0)
    config = SamplingConfig(temperature=0.0, forbidden_token_ids=FORBIDDEN, stop_token_ids=stops, pad_token_id=0)
    sampler = Sampler(nnx.graphdef(ours), config, decode_block=3)
    inputs = _four_prompts(ours.config)
    out = sampler.generate(
        nnx.state(ours),
        inputs,
        n=n,
        max_new_tokens=GREEDY_STEPS,
        key=jax.random.key(0),
        prompts_per_call=prompts_per_call,
    )
    np.testing.assert_array_equal(np.asarray(out.tokens), np.repeat(expected, n, 0))
    np.testing.assert_array_equal(np.asarray(out.lengths), np.repeat(lengths, n))
    np.testing.assert_array_equal(np.asarray(out.mask), np.repeat(np.arange(GREEDY_STEPS) < lengths[:, None], n, 0))
    finish = np.where(hits.any(1), FINISH_EOS, FINISH_LENGTH)
    np.testing.assert_array_equal(np.asarray(out.finish), np.repeat(finish, n))


@pytest.mark.parametrize("temperature, prompts_per_call", [(0.7, 2), (1.0, 0)])
def test_sampled_logprobs_with_stops_equal_a_full_forward(untied_pair, temperature, prompts_per_call):
    """With a quarter of the vocabulary stopping, rows end at different steps inside and across groups (stopped
    rows are compacted out of their prompt's slot while its other rows run on); the sampler's log-probs of the
    response tokens are a full forward's log-softmax(logits / T) there."""
    _, ours = untied_pair
    n, steps = 3, 8
    stops = tuple(range(0, TEXT_VOCAB, 4))
    config = SamplingConfig(temperature=temperature, forbidden_token_ids=FORBIDDEN, stop_token_ids=stops)
    arrays = _four_prompt_arrays(seed=6)

    def sample(stages):
        return Sampler(nnx.graphdef(ours), config, decode_block=3, decode_stages=stages).generate(
            nnx.state(ours),
            _four_prompts(ours.config, seed=6),
            n=n,
            max_new_tokens=steps,
            key=jax.random.key(2),
            prompts_per_call=prompts_per_call,
        )

    out = sample(DEFAULT_DECODE_STAGES)
    tokens, mask, lengths = np.asarray(out.tokens), np.asarray(out.mask), np.asarray(out.lengths)
    assert len(set(lengths.tolist())) > 2 and lengths.min() < steps  # rows end at different steps
    np.testing.assert_array_equal(mask, np.arange(steps) < lengths[:, None])
    ended = np.isin(tokens, stops) & (mask == 1)
    assert np.all(ended.sum(1) == (np.asarray(out.finish) == FINISH_EOS))  # one stop token, the last, when stopped
    assert np.all(tokens[mask == 0] == 0)
    expected = _response_logprobs(ours, arrays, tokens, mask, n, temperature)
    np.testing.assert_allclose(np.asarray(out.logprobs)[mask == 1], expected[mask == 1], atol=1e-5, rtol=0)
    assert np.all(np.asarray(out.logprobs)[mask == 0] == 0)
    # a row's draws depend on (key, step, row) only: without compaction every row samples the same tokens
    uncompacted = sample(1)
    np.testing.assert_array_equal(np.asarray(uncompacted.tokens), tokens)
    np.testing.assert_allclose(np.asarray(uncompacted.logprobs), np.asarray(out.logprobs), atol=1e-5, rtol=0)


def test_chunk_rows_follow_the_row_shards():
    """take_chunk / merge_chunks against index lists written out by hand: 8 rows in 2 shards, 2 chunks."""
    x = np.arange(8 * 3).reshape(8, 3)
    chunk0 = take_chunk(x, jnp.int32(0), chunks=2, shards=2)
    chunk1 = take_chunk(x, jnp.int32(1), chunks=2, shards=2)
    np.testing.assert_array_equal(chunk0, x[[0, 1, 4, 5]])
    np.testing.assert_array_equal(chunk1, x[[2, 3, 6, 7]])
    positions = np.arange(3 * 8).reshape(3, 8)  # rows in axis 1, as position_ids
    np.testing.assert_array_equal(
        take_chunk(positions, jnp.int32(1), chunks=2, shards=2, axis=1), positions[:, [2, 3, 6, 7]]
    )
    # rollout rows: n = 2 per prompt; prompt p's rows are 2p, 2p + 1
    rollouts0, rollouts1 = np.repeat(np.asarray(chunk0), 2, 0), np.repeat(np.asarray(chunk1), 2, 0)
    np.testing.assert_array_equal(merge_chunks([rollouts0, rollouts1], shards=2), np.repeat(x, 2, 0))
    np.testing.assert_array_equal(take_chunk(x, jnp.int32(2), chunks=4, shards=1), x[[4, 5]])


def test_chunked_greedy_sampling_equals_one_call(untied_pair):
    _, ours = untied_pair
    graphdef, state = nnx.split(ours)
    inputs = _four_prompts(ours.config)
    sampler = Sampler(graphdef, SamplingConfig(temperature=0.0, forbidden_token_ids=FORBIDDEN))
    whole = sampler.generate(state, inputs, n=2, max_new_tokens=6, key=jax.random.key(0))
    chunked = sampler.generate(state, inputs, n=2, max_new_tokens=6, key=jax.random.key(0), prompts_per_call=1)
    assert sampler.prefill_calls == 1 + 4
    for field in ("tokens", "mask", "finish", "lengths"):
        np.testing.assert_array_equal(np.asarray(getattr(chunked, field)), np.asarray(getattr(whole, field)))
    np.testing.assert_allclose(np.asarray(chunked.logprobs), np.asarray(whole.logprobs), atol=1e-5)
    assert len({tuple(r) for r in np.asarray(whole.tokens)[::2]}) > 1  # the prompts' continuations differ
    with pytest.raises(ValueError, match="prompts_per_call = 3 must divide the batch's 4 prompts"):
        sampler.generate(state, inputs, n=2, max_new_tokens=6, key=jax.random.key(0), prompts_per_call=3)


def test_chunked_sampling_at_temperature_equals_one_call(untied_pair):
    """At T > 0 a row's draws depend on (key, step, batch row) only: sampling 2 prompts per call gives the tokens
    of one call over all 4."""
    _, ours = untied_pair
    graphdef, state = nnx.split(ours)
    inputs = _four_prompts(ours.config, seed=5)
    sampler = Sampler(graphdef, SamplingConfig(temperature=1.0, forbidden_token_ids=FORBIDDEN))
    key = jax.random.key(11)
    whole = sampler.generate(state, inputs, n=2, max_new_tokens=5, key=key)
    chunked = sampler.generate(state, inputs, n=2, max_new_tokens=5, key=key, prompts_per_call=2)
    np.testing.assert_array_equal(np.asarray(chunked.tokens), np.asarray(whole.tokens))
    np.testing.assert_allclose(np.asarray(chunked.logprobs), np.asarray(whole.logprobs), atol=1e-5)
    tokens = np.asarray(whole.tokens)
    assert not np.array_equal(tokens[0], tokens[1])  # a prompt's two samples differ


def _eight_prompts(config, seed):
    """8 left-padded prompts of different lengths, one image each (three grid sizes), as `ModelInputs`."""
    rng = np.random.default_rng(seed)
    ids, mask = pad_batch([build_sample(rng, [2 + i % 3, GRIDS[i % 3], 1 + i]) for i in range(8)], "left")
    grids = [GRIDS[i % 3] for i in range(8)]
    return prepare_inputs(config, ids, mask, random_pixels(rng, grids), np.asarray(grids))


@pytest.fixture(scope="module")
def sharded(untied_checkpoint):
    """(mesh, model): the untied checkpoint loaded on a (2 data, 2 fsdp, 2 tensor) mesh, once for the module."""
    _, path = untied_checkpoint
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model, _ = load_pretrained(path, mesh=mesh)
    return mesh, model


def test_sharded_sampling_with_stops_equals_one_device(sharded, untied_pair):
    """8 prompts x n = 2 on a (2, 2, 2) mesh (4 row shards of 2 prompts) with a quarter of the vocabulary stopping:
    each shard compacts its own rows ((8, 2) -> (8, 1) -> (4, 1) slots) and the draws equal one device's."""
    mesh, sharded_model = sharded
    _, single = untied_pair
    stops = tuple(range(0, TEXT_VOCAB, 4))
    config = SamplingConfig(temperature=1.0, top_p=0.9, forbidden_token_ids=FORBIDDEN, stop_token_ids=stops)
    inputs = _eight_prompts(single.config, seed=7)
    expected = Sampler(nnx.graphdef(single), config).generate(
        nnx.state(single), inputs, n=2, max_new_tokens=8, key=jax.random.key(3)
    )
    lengths = np.asarray(expected.lengths)
    assert len(set(lengths.tolist())) > 2 and lengths.min() < 8  # rows stop at different steps
    got = Sampler(nnx.graphdef(sharded_model), config, mesh=mesh).generate(
        nnx.state(sharded_model), inputs, n=2, max_new_tokens=8, key=jax.random.key(3)
    )
    assert len(got.tokens.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(expected.tokens))
    np.testing.assert_array_equal(np.asarray(got.lengths), lengths)
    np.testing.assert_allclose(np.asarray(got.logprobs), np.asarray(expected.logprobs), atol=1e-4)


def test_sharded_chunked_sampling_equals_one_device(sharded, untied_pair):
    """8 prompts on a (2, 2, 2) mesh (4 row shards) sampled 4 per call (each call takes one prompt per shard)
    draw the tokens of one unsharded call over all 8."""
    mesh, sharded_model = sharded
    _, single = untied_pair
    config = SamplingConfig(temperature=1.0, top_p=0.9, forbidden_token_ids=FORBIDDEN)
    inputs = _eight_prompts(single.config, seed=4)
    expected = Sampler(nnx.graphdef(single), config).generate(
        nnx.state(single), inputs, n=2, max_new_tokens=5, key=jax.random.key(0)
    )
    sampler = Sampler(nnx.graphdef(sharded_model), config, mesh=mesh)
    got = sampler.generate(
        nnx.state(sharded_model), inputs, n=2, max_new_tokens=5, key=jax.random.key(0), prompts_per_call=4
    )
    assert sampler.prefill_calls == 2
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(expected.tokens))
    np.testing.assert_allclose(np.asarray(got.logprobs), np.asarray(expected.logprobs), atol=1e-4)
