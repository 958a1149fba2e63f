"""The critic of value-based RL: its value predictions over a rollout batch and its optimizer step.

The critic (`models.qwen2_5_vl.value_model.Qwen25VLValueModel`) predicts V at the positions that predict each
response token, the same positions the policy's log-probs are read at. Its step regresses those predictions to
the GAE returns with PPO's clipped value loss (`rl.value_loss`), on the policy's mini-batch rows, accumulating
gradients over the same micro-batches (each normalised by the whole mini-batch's valid tokens, so the sum is
the mini-batch's gradient).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shuffle_r1_jax.learner.logprobs import map_row_passes, response_outputs
from shuffle_r1_jax.learner.packing import PackingPlan
from shuffle_r1_jax.learner.update import accumulated_step
from shuffle_r1_jax.rl.aggregation import count_tokens
from shuffle_r1_jax.rl.value_loss import clipped_value_loss
from shuffle_r1_jax.rollout.types import Rollouts

Params = Any


@dataclasses.dataclass(frozen=True)
class CriticLossConfig:
    """Settings of the critic's loss; static (hashable) for jit.

    Attributes:
      value_clip: the clip range of the new predictions around the scored ones (None = no clip).
      value_coef: the coefficient the value loss is scaled by.

    Raises:
      ValueError: a negative `value_clip` or a `value_coef` that is not > 0; the message names it.
    """

    value_clip: float | None = 0.5
    value_coef: float = 1.0

    def __post_init__(self):
        if self.value_clip is not None and self.value_clip < 0:
            raise ValueError(f"critic.value_clip = {self.value_clip} must be >= 0 (0 = no clipping)")
        if self.value_coef <= 0:
            raise ValueError(f"critic.value_coef = {self.value_coef} must be > 0")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CriticTargets:
    """The critic's training targets of one rollout batch (R rows, response length Lr).

    Attributes:
      old_values: `float32[R, Lr]` the critic's predictions when the batch was scored.
      returns: `float32[R, Lr]` the GAE returns the predictions regress to.
      image_features: the merged-token image features the critic reads (the policy's), or None (no images, or
        a critic with its own vision tower).
    """

    old_values: jax.Array
    returns: jax.Array
    image_features: jax.Array | None = None


def response_values(model, rollouts: Rollouts, rows: jax.Array, *, image_features=None, plan=None) -> jax.Array:
    """The value model's V at each response position of `rows`: `float32[B, Lr]` (see `response_outputs`)."""
    (values,) = response_outputs(
        model, rollouts, rows, lambda hidden, _: (model.values(hidden),), image_features=image_features, plan=plan
    )
    return values


def rollout_values(
    graphdef: nnx.GraphDef,
    params: Params,
    rollouts: Rollouts,
    image_features: jax.Array | None,
    *,
    micro_batch_rows: int,
) -> jax.Array:
    """The critic's predictions over every row of `rollouts`, `micro_batch_rows` rows per pass (padded rows).

    Jittable with the keywords and `graphdef` static.

    Args:
      graphdef: the value model's graph definition (static).
      params: its parameters, a pure dict.
      rollouts: the rollout batch, R rows (`micro_batch_rows` must divide R).
      image_features: the merged-token features of `rollouts.prompts.vision`, or None.
      micro_batch_rows: rows per pass.

    Returns:
      `float32[R, Lr]`, 0 outside the response masks; rows sharded over the batch axes under a context mesh.
    """
    rows = jnp.arange(rollouts.tokens.shape[0], dtype=jnp.int32)

    def one_pass(r, plan):
        model = nnx.merge(graphdef, params)
        return response_values(model, rollouts, r, image_features=image_features, plan=plan)

    values = map_row_passes(one_pass, rollouts, rows, None, micro_batch_rows=micro_batch_rows)
    return values * rollouts.mask


def _critic_micro_loss(params, rows, valid, plan, graphdef, rollouts, targets, num_tokens, cfg: CriticLossConfig):
    model = nnx.merge(graphdef, params)
    values = response_values(model, rollouts, rows, image_features=targets.image_features, plan=plan)
    mask = rollouts.mask[rows] * valid[:, None]
    loss, metrics = clipped_value_loss(
        values,
        targets.old_values[rows],
        targets.returns[rows],
        mask,
        clip_range=cfg.value_clip,
        num_tokens=num_tokens,
    )
    return cfg.value_coef * loss, (metrics, jnp.sum(mask))


def update_critic_minibatch(
    graphdef: nnx.GraphDef,
    params: Params,
    opt_state: optax.OptState,
    optimizer: optax.GradientTransformation,
    rollouts: Rollouts,
    targets: CriticTargets,
    rows: jax.Array,
    valid: jax.Array,
    plan: PackingPlan | None = None,
    *,
    micro_batches: int,
    cfg: CriticLossConfig,
) -> tuple[Params, optax.OptState, dict]:
    """One critic optimizer step over the mini-batch `rows` (the policy's), over `micro_batches` micro-batches.

    Args:
      graphdef: the value model's graph definition (static).
      params: its parameters, a pure dict.
      opt_state: its optimizer state.
      optimizer: its optax transformation.
      rollouts: the rollout batch.
      targets: the critic's targets.
      rows: `int32[M]` rollout row ids of the mini-batch.
      valid: `bool[M]`, which rows count.
      plan: the packing of each micro-batch (as the policy update's), or None for padded rows.
      micro_batches: equal micro-batches M is split into (static).
      cfg: the loss settings (static).

    Returns:
      (params, opt_state, metrics): float32 scalars `critic/value_loss` (the mini-batch's value loss, before
      `value_coef`), `critic/value_clip_fraction`, `critic/value_error` and `critic/new_values_mean` (token-weighted
      over the mini-batch), `critic/grad_norm` and `critic/update_skipped` (1.0 when the loss or gradient was not
      finite and nothing changed).

    Raises:
      ValueError: M does not split into `micro_batches` equal micro-batches.
    """
    if rows.shape[0] % micro_batches:
        raise ValueError(f"mini-batch of {rows.shape[0]} rows does not split into {micro_batches} micro-batches")
    num_tokens = count_tokens(rollouts.mask[rows] * valid[:, None])
    step = accumulated_step(
        _critic_micro_loss,
        params,
        opt_state,
        optimizer,
        (rows.reshape(micro_batches, -1), valid.reshape(micro_batches, -1), plan),
        graphdef,
        rollouts,
        targets,
        num_tokens,
        cfg,
    )
    metrics = dict(step.metrics)
    metrics.update(
        {
            "critic/value_loss": step.loss / cfg.value_coef,
            "critic/grad_norm": step.grad_norm,
            "critic/update_skipped": step.skipped,
        }
    )
    return step.params, step.opt_state, metrics
