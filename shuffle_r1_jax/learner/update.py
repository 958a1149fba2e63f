"""One optimizer step of the policy over a mini-batch of rollout rows, with gradient accumulation.

The mini-batch's rows are split into equal micro-batches scanned in order; every micro-batch's loss is
normalised by the WHOLE mini-batch's valid-token (or sequence) count, so the summed micro-batch gradients are
exactly the gradient of the full mini-batch. The policy loss is PPO's clipped surrogate or OPMD's squared error
(`LossConfig.loss_kind`), plus the KL-to-reference term when it is on. A non-finite loss or gradient skips the
update. With a packing plan (`learner.packing`) each micro-batch's sequences run packed into fewer rows; its
log-probs come back in the padded layout, so the loss is the same. Gradients are taken only of the parameters the
optimizer trains (`trains`), so frozen ones (the vision tower, or everything but LoRA adapters) cost no gradient
memory; with a dropout key in the targets, LoRA adapters drop their inputs (a key per micro-batch).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import traversals

from shuffle_r1_jax.learner.logprobs import response_logprobs
from shuffle_r1_jax.learner.packing import PackingPlan
from shuffle_r1_jax.models.qwen2_5_vl.lora import adapter_dropout
from shuffle_r1_jax.rl.aggregation import AGG_MODES, count_sequences, count_tokens
from shuffle_r1_jax.rl.kl import canonical_kl_kind, kl_loss
from shuffle_r1_jax.rl.metrics import masked_mean
from shuffle_r1_jax.rl.opmd import opmd_loss
from shuffle_r1_jax.rl.policy_loss import check_clip_settings, ppo_policy_loss
from shuffle_r1_jax.rollout.types import Rollouts

Params = Any
LOSS_KINDS = ("ppo", "opmd")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Settings of the policy loss; static (hashable) for jit.

    Attributes:
      loss_kind: "ppo" (the clipped surrogate, `rl.policy_loss`) or "opmd" (Kimi K1.5's squared error, `rl.opmd`;
        the clip settings, ratio_level and agg_mode do not apply to it, agg_mode still reduces the KL term).
      opmd_tau: OPMD's regularization strength tau (> 0).
      clip_low: PPO clip range eps_low (DAPO clip-higher: 0.2).
      clip_high: PPO clip range eps_high (DAPO clip-higher: 0.28).
      dual_clip: the dual-clip constant c for A < 0, or None (off).
      ratio_level: "token" (PPO) or "sequence" (GSPO).
      agg_mode: loss aggregation mode, see `rl.aggregation`.
      agg_group_rows: rows per group of the micro-token-mean mode (the official code's 4-row device
        micro-batches).
      norm_constant: the constant of seq-mean-token-sum-norm.
      kl_coef: coefficient of the KL-to-reference loss (0 = off).
      kl_kind: KL estimator of that loss (see `rl.kl.kl_estimate`).
      temperature: the sampling temperature log-probs are computed at.
      logprob_chunk: response positions per vocabulary chunk.

    Raises:
      ValueError: a value is out of range or unknown; the message names the setting and its value.
    """

    loss_kind: str = "ppo"
    opmd_tau: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = 3.0
    ratio_level: str = "token"
    agg_mode: str = "token-mean"
    agg_group_rows: int = 4
    norm_constant: float | None = None
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    temperature: float = 1.0
    logprob_chunk: int = 256

    def __post_init__(self):
        check_clip_settings(self.clip_low, self.clip_high, self.dual_clip, self.ratio_level)
        canonical_kl_kind(self.kl_kind)
        if self.loss_kind not in LOSS_KINDS:
            raise ValueError(f"loss loss_kind = {self.loss_kind!r}; expected one of {LOSS_KINDS}")
        if not self.opmd_tau > 0:
            raise ValueError(f"loss opmd_tau = {self.opmd_tau} must be > 0")
        if self.agg_mode not in AGG_MODES:
            raise ValueError(f"loss agg_mode = {self.agg_mode!r}; expected one of {AGG_MODES}")
        if self.agg_group_rows < 1:
            raise ValueError(f"loss agg_group_rows = {self.agg_group_rows} must be >= 1")
        if self.kl_coef < 0:
            raise ValueError(f"loss kl_coef = {self.kl_coef} must be >= 0 (0 = off)")
        if self.temperature <= 0 or self.logprob_chunk < 1:
            raise ValueError(
                f"loss temperature = {self.temperature} must be > 0 and logprob_chunk = {self.logprob_chunk} >= 1"
            )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class UpdateTargets:
    """Per-rollout training targets of one rollout batch (R rows, response length Lr).

    Attributes:
      advantages: `float32[R, Lr]` per-token advantages.
      old_logprobs: `float32[R, Lr]` log-probs under the policy that sampled the rollouts.
      ref_logprobs: `float32[R, Lr]` log-probs under the reference policy, or None (needed when kl_coef > 0).
      image_features: the frozen vision tower's merged-token features of the prompts' images, or None; with None
        and prompts with images, the vision tower runs in the update.
      loss_rows: `bool[R]` the rows the policy loss (and its KL term) counts, or None for every row; False rows are
        left out as invalid rows are (`rl.mask_truncated`: the responses cut at the length limit).
      dropout_key: the PRNG key of the LoRA adapters' dropout in this mini-batch's step (folded with the
        micro-batch index), or None for no dropout.
    """

    advantages: jax.Array
    old_logprobs: jax.Array
    ref_logprobs: jax.Array | None = None
    image_features: jax.Array | None = None
    loss_rows: jax.Array | None = None
    dropout_key: jax.Array | None = None


def _micro_loss(
    params,
    index,
    rows,
    valid,
    plan,
    graphdef,
    rollouts,
    targets,
    num_tokens,
    num_sequences,
    num_groups,
    cfg: LossConfig,
):
    model = nnx.merge(graphdef, params)
    key = None if targets.dropout_key is None else jax.random.fold_in(targets.dropout_key, index)
    with adapter_dropout(key):
        logp, entropy = response_logprobs(
            model,
            rollouts,
            rows,
            temperature=cfg.temperature,
            chunk=cfg.logprob_chunk,
            image_features=targets.image_features,
            with_entropy=True,
            plan=plan,
        )
    mask = rollouts.mask[rows] * valid[:, None]
    # the policy and KL losses reduce their per-token losses the same way, over the whole mini-batch
    aggregation = dict(
        agg_mode=cfg.agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=cfg.norm_constant,
        group_rows=cfg.agg_group_rows,
        num_groups=num_groups,
    )
    if cfg.loss_kind == "opmd":
        loss, metrics = opmd_loss(
            logp,
            targets.old_logprobs[rows],
            targets.advantages[rows],
            mask,
            tau=cfg.opmd_tau,
            num_sequences=num_sequences,
        )
    else:
        loss, metrics = ppo_policy_loss(
            logp,
            targets.old_logprobs[rows],
            targets.advantages[rows],
            mask,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            dual_clip=cfg.dual_clip,
            ratio_level=cfg.ratio_level,
            **aggregation,
        )
    if cfg.kl_coef > 0:
        kl, kl_metrics = kl_loss(
            logp,
            targets.ref_logprobs[rows],
            mask,
            kind=cfg.kl_kind,
            **aggregation,
        )
        loss = loss + cfg.kl_coef * kl
        metrics = {**metrics, **kl_metrics}
    metrics = {**metrics, "entropy": masked_mean(jax.lax.stop_gradient(entropy), mask)}
    return loss, (metrics, jnp.sum(mask))


@dataclasses.dataclass(frozen=True)
class AccumulatedStep:
    """What `accumulated_step` returns.

    Attributes:
      params: the parameters after the step (unchanged when it was skipped).
      opt_state: the optimizer state after the step (unchanged when it was skipped).
      loss: `float32[]` the summed micro-batch losses, the mini-batch loss.
      grad_norm: `float32[]` global norm of the summed gradient.
      skipped: `float32[]` 1.0 when the loss or gradient was not finite and nothing changed, else 0.0.
      metrics: the micro-batches' scalar metrics averaged with their valid-token counts as weights.
    """

    params: Params
    opt_state: optax.OptState
    loss: jax.Array
    grad_norm: jax.Array
    skipped: jax.Array
    metrics: dict


def _split(params: dict, trains: Callable[[tuple], bool] | None) -> tuple[dict, dict]:
    """(the trained parameters, the frozen ones) of a pure dict, as flat {path: array} dicts."""
    flat = traversals.flatten_mapping(params)
    if trains is None:
        return flat, {}
    trained = {path: value for path, value in flat.items() if trains(path)}
    return trained, {path: value for path, value in flat.items() if path not in trained}


def accumulated_step(
    loss_fn, params, opt_state, optimizer, micro_inputs, *shared, trains: Callable[[tuple], bool] | None = None
) -> AccumulatedStep:
    """One optimizer step over micro-batches scanned in order, their gradients summed.

    Args:
      loss_fn: `loss(params, *micro_input, *shared) -> (loss, (metrics, valid tokens))`; each micro-batch's loss is
        normalised by the whole mini-batch, so the sum is the mini-batch's loss.
      params: the parameters, a pure dict.
      opt_state: the optimizer state.
      optimizer: the optax transformation; it must leave the parameters `trains` rejects unchanged (frozen).
      micro_inputs: a tuple of arrays (or pytrees) with a leading micro-batch axis, scanned over.
      *shared: the arguments every micro-batch shares.
      trains: which parameters (by their path in `params`) are trained, or None for all; gradients are taken of
        those only, the others pass through unchanged.

    Returns:
      The `AccumulatedStep`; a non-finite loss or gradient leaves the parameters and optimizer state as they were.
    """
    trained, frozen = _split(params, trains)

    def trained_loss(trained, *args):
        return loss_fn(traversals.unflatten_mapping({**trained, **frozen}), *args)

    grad_fn = jax.value_and_grad(trained_loss, has_aux=True)

    def accumulate(carry, micro):
        grads, loss = carry
        (micro_loss, (metrics, tokens)), micro_grads = grad_fn(trained, *micro, *shared)
        return (jax.tree.map(jnp.add, grads, micro_grads), loss + micro_loss), (metrics, tokens)

    zeros = jax.tree.map(jnp.zeros_like, trained)
    (grads, loss), (micro_metrics, micro_tokens) = jax.lax.scan(
        accumulate, (zeros, jnp.zeros((), jnp.float32)), micro_inputs
    )
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    full_grads = traversals.unflatten_mapping({**grads, **jax.tree.map(jnp.zeros_like, frozen)})
    updates, new_opt_state = optimizer.update(full_grads, opt_state, params)
    flat_updates = traversals.flatten_mapping(updates)
    stepped = {path: jnp.where(finite, optax.apply_updates(v, flat_updates[path]), v) for path, v in trained.items()}
    params = traversals.unflatten_mapping({**stepped, **frozen})
    opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_opt_state, opt_state)
    weight = micro_tokens / jnp.maximum(jnp.sum(micro_tokens), 1.0)
    metrics = {k: jnp.sum(v * weight) for k, v in micro_metrics.items()}
    return AccumulatedStep(params, opt_state, loss, grad_norm, 1.0 - finite.astype(jnp.float32), metrics)


def update_minibatch(
    graphdef: nnx.GraphDef,
    params: Params,
    opt_state: optax.OptState,
    optimizer: optax.GradientTransformation,
    rollouts: Rollouts,
    targets: UpdateTargets,
    rows: jax.Array,
    valid: jax.Array,
    plan: PackingPlan | None = None,
    *,
    micro_batches: int,
    cfg: LossConfig,
    trains: Callable[[tuple], bool] | None = None,
) -> tuple[Params, optax.OptState, dict]:
    """One optimizer step over the mini-batch `rows`, accumulating gradients over `micro_batches` micro-batches.

    Args:
      graphdef: the model's graph definition (static).
      params: the model's parameters, a pure dict.
      opt_state: the optimizer state.
      optimizer: the optax transformation (see `learner.optimizer.make_optimizer`).
      rollouts: the rollout batch.
      targets: its training targets.
      rows: `int32[M]` rollout row ids of the mini-batch.
      valid: `bool[M]`, which rows count (False rows, and rows `targets.loss_rows` leaves out, are masked out of
        the loss).
      plan: the packing of each micro-batch (`bin`/`offset` `int32[micro_batches, M / micro_batches]`, see
        `learner.packing`), or None to run padded rows; the loss and gradient are the same either way.
      micro_batches: the number of equal micro-batches M is split into (static).
      cfg: the loss settings (static).
      trains: which parameters (by path) the optimizer trains, or None for all (static; see `accumulated_step`).

    Returns:
      (params, opt_state, metrics): float32 scalar metrics, token-weighted over the mini-batch (pg_loss is the
      mini-batch loss), plus grad_norm and `update_skipped` (1.0 when the loss or gradient was not finite and
      the parameters and optimizer state were left unchanged).

    Raises:
      ValueError: M does not split into `micro_batches` equal micro-batches.
    """
    if rows.shape[0] % micro_batches:
        raise ValueError(f"mini-batch of {rows.shape[0]} rows does not split into {micro_batches} micro-batches")
    if targets.loss_rows is not None:
        valid = valid & targets.loss_rows[rows]
    mask = rollouts.mask[rows] * valid[:, None]
    num_tokens, num_sequences = count_tokens(mask), count_sequences(mask)
    num_groups = rows.shape[0] / cfg.agg_group_rows  # micro-token-mean's groups over the whole mini-batch
    micro_rows = rows.reshape(micro_batches, -1)
    micro_valid = valid.reshape(micro_batches, -1)
    step = accumulated_step(
        _micro_loss,
        params,
        opt_state,
        optimizer,
        (jnp.arange(micro_batches), micro_rows, micro_valid, plan),
        graphdef,
        rollouts,
        targets,
        num_tokens,
        num_sequences,
        num_groups,
        cfg,
        trains=trains,
    )
    metrics = {k: v for k, v in step.metrics.items() if k != "pg_loss"}
    metrics.update(pg_loss=step.loss, grad_norm=step.grad_norm, update_skipped=step.skipped)
    return step.params, step.opt_state, metrics
