"""The critic: its predictions against transformers' hidden states through the value head, exact gradient
accumulation, a step that lowers its error, and the value head's file."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError
from shuffle_r1_jax.learner.critic import CriticLossConfig, CriticTargets, rollout_values, update_critic_minibatch
from shuffle_r1_jax.learner.optimizer import OptimizerConfig, make_optimizer
from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.models.qwen2_5_vl.value_model import (
    VALUE_HEAD_FILE,
    abstract_value_model,
    initial_value_head,
    read_value_head,
    value_params_from_policy,
    write_value_head,
)
from shuffle_r1_jax.rollout.types import Rollouts
from tests.models.qwen2_5_vl.hf_reference import (
    build_sample,
    hf_final_hidden_states,
    pad_batch,
    random_pixels,
)

N, LENGTH = 2, 5


@pytest.fixture(scope="module")
def setup(untied_pair):
    """Two image prompts, two hand-made responses each (row 1 stops after 3 tokens), the HF model, and a value
    head with a non-zero bias."""
    hf_model, policy = untied_pair
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 4, 4)]
    ids, mask = pad_batch([build_sample(rng, [3, grids[0], 5]), build_sample(rng, [7, grids[1], 2])], "left")
    pixels = random_pixels(rng, grids)
    prompts = jax.tree.map(jnp.asarray, prepare_inputs(policy.config, ids, mask, pixels, np.asarray(grids)))
    tokens = rng.integers(10, 100, (2 * N, LENGTH))
    response_mask = np.ones((2 * N, LENGTH), np.int32)
    response_mask[1, 3:] = 0
    rollouts = Rollouts(
        prompts, jnp.asarray(tokens, jnp.int32), jnp.asarray(response_mask), jnp.zeros((2 * N, LENGTH), jnp.float32)
    )
    head = initial_value_head(policy.config.text.hidden_size, seed=3)
    head["bias"] = jnp.asarray(0.25, jnp.float32)
    policy_params = nnx.to_pure_dict(nnx.state(policy, nnx.Param))
    reference = dict(hf_model=hf_model, ids=ids, mask=mask, pixels=pixels, grids=grids, tokens=tokens)
    return policy, policy_params, head, rollouts, reference


def _value_model(policy, policy_params, head, with_vision):
    graphdef = nnx.graphdef(abstract_value_model(policy.config, with_vision=with_vision))
    return graphdef, value_params_from_policy(policy_params, head, with_vision=with_vision)


def _hf_values(reference, head) -> np.ndarray:
    """transformers' final hidden states of prompt + response at the positions predicting each response token,
    through the value head: `[rows, LENGTH]`."""
    rows = np.arange(2 * N) // N
    ids = np.concatenate([reference["ids"][rows], reference["tokens"]], axis=1)
    mask = np.concatenate([reference["mask"][rows], np.ones((2 * N, LENGTH), np.int64)], axis=1)
    sizes = [t * h * w for t, h, w in reference["grids"]]
    pieces = np.split(reference["pixels"], np.cumsum(sizes)[:-1])
    pixels = np.concatenate([pieces[r] for r in rows])
    hidden = hf_final_hidden_states(reference["hf_model"], ids, mask, pixels, [reference["grids"][r] for r in rows])
    prompt_len = reference["ids"].shape[1]
    predictors = hidden[:, prompt_len - 1 : prompt_len - 1 + LENGTH]
    return predictors @ np.asarray(head["kernel"]) + float(head["bias"])


@pytest.mark.parametrize("with_vision", [True, False])
def test_values_are_transformers_hidden_states_through_the_value_head(setup, with_vision):
    policy, policy_params, head, rollouts, reference = setup
    graphdef, params = _value_model(policy, policy_params, head, with_vision)
    features = None if with_vision else policy.image_features(rollouts.prompts.vision)
    values = jax.jit(rollout_values, static_argnames=("graphdef", "micro_batch_rows"))(
        graphdef, params, rollouts, features, micro_batch_rows=2
    )
    valid = np.asarray(rollouts.mask) == 1
    np.testing.assert_allclose(np.asarray(values)[valid], _hf_values(reference, head)[valid], atol=2e-4)
    assert np.all(np.asarray(values)[~valid] == 0)


def test_the_value_model_holds_no_output_projection_and_no_vision_tower_when_it_shares_features(setup):
    policy, policy_params, head, _, _ = setup
    graphdef, params = _value_model(policy, policy_params, head, with_vision=False)
    assert "lm_head" not in params and "visual" not in params and "value_head" in params
    assert params["layers"] is policy_params["layers"]  # shared, not copied
    model = nnx.merge(graphdef, params)
    with pytest.raises(TypeError, match="no output projection"):
        model.logits(jnp.zeros((1, policy.config.text.hidden_size)))


def _critic_steps(setup, optimizer, micro_batches, steps):
    """`steps` critic steps on random returns over the whole batch; (the final parameters, each step's metrics)."""
    policy, policy_params, head, rollouts, _ = setup
    graphdef, params = _value_model(policy, policy_params, head, with_vision=False)
    returns = jnp.asarray(np.random.default_rng(5).uniform(-1, 1, rollouts.tokens.shape), jnp.float32)
    features = policy.image_features(rollouts.prompts.vision)
    targets = CriticTargets(old_values=jnp.zeros_like(returns), returns=returns, image_features=features)
    step = jax.jit(update_critic_minibatch, static_argnames=("graphdef", "optimizer", "micro_batches", "cfg"))
    optimizer = optimizer(params)
    opt_state, metrics = optimizer.init(params), []
    for _ in range(steps):
        params, opt_state, step_metrics = step(
            graphdef,
            params,
            opt_state,
            optimizer,
            rollouts,
            targets,
            jnp.arange(2 * N, dtype=jnp.int32),
            jnp.ones(2 * N, bool),
            micro_batches=micro_batches,
            cfg=CriticLossConfig(value_clip=None),
        )
        metrics.append({k: float(v) for k, v in step_metrics.items()})
    return params, metrics


def test_micro_batches_give_the_full_batch_critic_update(setup):
    """With SGD (lr 1) the change is the gradient: accumulated over 2 micro-batches == one batch."""
    one, m1 = _critic_steps(setup, lambda _: optax.sgd(1.0), micro_batches=1, steps=1)
    two, m2 = _critic_steps(setup, lambda _: optax.sgd(1.0), micro_batches=2, steps=1)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    np.testing.assert_allclose(m1[0]["critic/value_loss"], m2[0]["critic/value_loss"], rtol=1e-5)
    assert m1[0]["critic/update_skipped"] == 0.0


def test_critic_steps_lower_its_error_on_the_returns(setup):
    adam = lambda params: make_optimizer(OptimizerConfig(learning_rate=3e-3), params)  # noqa: E731
    _, metrics = _critic_steps(setup, adam, micro_batches=1, steps=15)
    errors = [m["critic/value_error"] for m in metrics]
    assert errors[-1] < 0.5 * errors[0], errors


def test_the_value_head_file_round_trips_and_names_a_bad_tensor(tmp_path):
    head = initial_value_head(6, seed=1)
    head["bias"] = jnp.asarray(-0.5, jnp.float32)
    write_value_head(tmp_path, head)
    read = read_value_head(tmp_path, 6)
    np.testing.assert_array_equal(read["kernel"], np.asarray(head["kernel"]))
    assert float(read["bias"]) == -0.5
    assert read_value_head(tmp_path / "missing", 6) is None
    with pytest.raises(CheckpointError, match=f"{VALUE_HEAD_FILE}.*value_head.weight.*\\(1, 8\\)"):
        read_value_head(tmp_path, 8)
