"""Chunked response log-probs equal the sampler's (which equal a full forward) and are differentiable."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shuffle_r1_jax.learner.logprobs import response_logprobs, rollout_logprobs
from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.rollout.types import Rollouts
from shuffle_r1_jax.sampling import Sampler, SamplingConfig
from tests.models.qwen2_5_vl.hf_reference import TOKENS, build_sample, pad_batch, random_pixels


def test_chunked_logprobs_match_the_sampler_and_have_gradients(untied_pair):
    _, model = untied_pair
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 4, 4)]
    ids, mask = pad_batch(
        [build_sample(rng, [3, grids[0], 5]), build_sample(rng, [7, grids[1], 2]), build_sample(rng, [6])], "left"
    )
    prompts = prepare_inputs(model.config, ids, mask, random_pixels(rng, grids), np.asarray(grids))
    temperature = 0.8
    config = SamplingConfig(
        temperature=temperature,
        stop_token_ids=(TOKENS["eos_token_id"],),
        forbidden_token_ids=(TOKENS["image_token_id"], TOKENS["video_token_id"]),
    )
    graphdef, state = nnx.split(model)
    out = Sampler(graphdef, config).generate(state, prompts, n=2, max_new_tokens=7, key=jax.random.key(1))
    rollouts = Rollouts(jax.tree.map(jnp.asarray, prompts), out.tokens, out.mask, out.logprobs)
    rows = jnp.asarray([5, 0, 3, 2])
    # jitted (traced once per shape) rather than run op by op
    logprobs = nnx.jit(response_logprobs, static_argnames=("temperature", "chunk", "with_entropy"))
    logp, ent = logprobs(model, rollouts, rows, temperature=temperature, chunk=3, with_entropy=True)
    m = np.asarray(out.mask)[np.asarray(rows)] == 1
    np.testing.assert_allclose(np.asarray(logp)[m], np.asarray(out.logprobs)[np.asarray(rows)][m], atol=1e-4)
    assert np.all(np.asarray(ent)[m] > 0) and np.all(np.asarray(ent)[m] <= np.log(model.config.text.vocab_size) + 1e-4)

    features = model.image_features(rollouts.prompts.vision)
    frozen, _ = logprobs(model, rollouts, rows, temperature=temperature, chunk=4, image_features=features)
    np.testing.assert_allclose(np.asarray(frozen)[m], np.asarray(logp)[m], atol=1e-5)

    # the old-log-prob pass computes only the update's rows (repeats allowed) and leaves the others at 0
    update_rows = jnp.asarray([5, 0, 3, 3, 2, 5], jnp.int32)
    only = rollout_logprobs(
        graphdef, state, rollouts, None, update_rows, micro_batch_rows=2, temperature=temperature, chunk=3
    )
    assert only.shape == out.tokens.shape
    full, _ = logprobs(model, rollouts, jnp.arange(6), temperature=temperature, chunk=3)
    used = np.isin(np.arange(6), np.asarray(update_rows))
    np.testing.assert_allclose(np.asarray(only)[used], np.asarray(full)[used], atol=1e-6)
    assert np.all(np.asarray(only)[~used] == 0)

    params = nnx.state(model, nnx.Param)

    def total(p):
        merged = nnx.merge(graphdef, p, nnx.state(model, nnx.Not(nnx.Param)))
        lp, _ = response_logprobs(merged, rollouts, rows, temperature=temperature, chunk=3)
        return jnp.sum(lp * jnp.asarray(m))

    grads = jax.jit(jax.grad(total))(params)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and max(norms) > 0
    assert float(jnp.linalg.norm(grads["visual"]["patch_embed"]["kernel"][...])) > 0  # the vision tower learns too


def test_remat_gives_the_same_gradients(untied_checkpoint):
    from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained

    _, path = untied_checkpoint
    rng = np.random.default_rng(2)
    ids, mask = pad_batch([build_sample(rng, [6]), build_sample(rng, [4])], "left")
    grads, checkpoints = [], {}
    for remat in ("none", "full", "dots"):
        model, config = load_pretrained(path, remat=remat)
        prompts = jax.tree.map(jnp.asarray, prepare_inputs(config, ids, mask))
        tokens = jnp.asarray(rng.integers(0, 100, (2, 5)) if not grads else grads[0][1])
        rollouts = Rollouts(prompts, tokens, jnp.ones((2, 5), jnp.int32), jnp.zeros((2, 5)))
        graphdef, params = nnx.graphdef(model), nnx.state(model, nnx.Param)

        def total(p, graphdef=graphdef, rollouts=rollouts):
            lp, _ = response_logprobs(nnx.merge(graphdef, p), rollouts, jnp.arange(2), temperature=1.0, chunk=5)
            return jnp.sum(lp)

        jaxpr = str(jax.make_jaxpr(jax.grad(total))(params))
        checkpoints[remat] = jaxpr.count("prevent_cse=")  # a parameter of every rematerialised region
        grads.append((jax.grad(total)(params), tokens))
    layers = config.text.num_hidden_layers  # one rematerialised region per decoder layer
    assert checkpoints["full"] == checkpoints["dots"] == checkpoints["none"] + layers
    for other, _ in grads[1:]:
        for a, b in zip(jax.tree.leaves(grads[0][0]), jax.tree.leaves(other)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
