"""Videos through a rollout: greedy sampling equals transformers' generate on prompts mixing videos, an image and
text, and the learner's chunked log-probs (the vision tower run, or its frozen features reused) equal the sampler's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from shuffle_r1_jax.learner.logprobs import response_logprobs
from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.rollout.types import Rollouts
from shuffle_r1_jax.sampling import FINISH_LENGTH, Sampler, SamplingConfig
from tests.models.qwen2_5_vl.hf_reference import (
    TOKENS,
    build_sample,
    mm_token_type_ids,
    pad_batch,
    random_pixels,
    video,
)

IMAGES = [(1, 6, 10)]
VIDEOS = [(3, 8, 12), (2, 4, 4)]  # 3 temporal patches at 0.75 s each, 2 at 0.5 s: time spans within their grids
SECONDS = [0.75, 0.5]


def _prompts():
    rng = np.random.default_rng(0)
    samples = [
        build_sample(rng, [3, video(*VIDEOS[0]), 5]),
        build_sample(rng, [12]),
        build_sample(rng, [2, IMAGES[0], 4, video(*VIDEOS[1]), 3]),
    ]
    ids, mask = pad_batch(samples, "left")
    return ids, mask, random_pixels(rng, IMAGES), random_pixels(rng, VIDEOS)


def _inputs(config, ids, mask, pixels, video_pixels):
    return prepare_inputs(
        config,
        ids,
        mask,
        pixels,
        np.asarray(IMAGES),
        pixel_values_videos=video_pixels,
        video_grid_thw=np.asarray(VIDEOS),
        second_per_grid_ts=SECONDS,
    )


def test_greedy_video_prompts_equal_transformers_generate(untied_pair):
    hf_model, ours = untied_pair
    ids, mask, pixels, video_pixels = _prompts()
    steps = 8
    with torch.no_grad():
        out = hf_model.generate(
            input_ids=torch.as_tensor(ids),
            attention_mask=torch.as_tensor(mask),
            pixel_values=torch.as_tensor(pixels),
            image_grid_thw=torch.as_tensor(np.asarray(IMAGES)),
            pixel_values_videos=torch.as_tensor(video_pixels),
            video_grid_thw=torch.as_tensor(np.asarray(VIDEOS)),
            second_per_grid_ts=torch.as_tensor(np.asarray(SECONDS, np.float32)),
            mm_token_type_ids=torch.as_tensor(mm_token_type_ids(ids)),
            do_sample=False,
            max_new_tokens=steps,
            min_new_tokens=steps,
            pad_token_id=0,
        )
    expected = out[:, ids.shape[1] :].numpy()
    forbidden = (TOKENS["image_token_id"], TOKENS["video_token_id"], TOKENS["eos_token_id"])
    sampler = Sampler(nnx.graphdef(ours), SamplingConfig(temperature=0.0, forbidden_token_ids=forbidden))
    inputs = _inputs(ours.config, ids, mask, pixels, video_pixels)
    got = sampler.generate(nnx.state(ours), inputs, n=2, max_new_tokens=steps, key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(got.tokens), np.repeat(expected, 2, axis=0))
    assert np.all(np.asarray(got.finish) == FINISH_LENGTH)


def test_learner_logprobs_of_video_rollouts_equal_the_samplers(untied_pair):
    _, model = untied_pair
    ids, mask, pixels, video_pixels = _prompts()
    prompts = _inputs(model.config, ids, mask, pixels, video_pixels)
    temperature = 0.9
    config = SamplingConfig(
        temperature=temperature, forbidden_token_ids=(TOKENS["image_token_id"], TOKENS["video_token_id"])
    )
    graphdef, state = nnx.split(model)
    out = Sampler(graphdef, config).generate(state, prompts, n=2, max_new_tokens=6, key=jax.random.key(3))
    assert not np.isin(np.asarray(out.tokens), config.forbidden_token_ids).any()
    rollouts = Rollouts(jax.tree.map(jnp.asarray, prompts), out.tokens, out.mask, out.logprobs)
    rows = jnp.arange(6)
    logprobs = nnx.jit(response_logprobs, static_argnames=("temperature", "chunk"))
    logp, _ = logprobs(model, rollouts, rows, temperature=temperature, chunk=4)
    m = np.asarray(out.mask) == 1
    np.testing.assert_allclose(np.asarray(logp)[m], np.asarray(out.logprobs)[m], atol=1e-4)
    features = model.image_features(rollouts.prompts.vision)
    frozen, _ = logprobs(model, rollouts, rows, temperature=temperature, chunk=4, image_features=features)
    np.testing.assert_allclose(np.asarray(frozen)[m], np.asarray(logp)[m], atol=1e-5)
