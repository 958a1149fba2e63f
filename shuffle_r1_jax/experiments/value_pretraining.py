"""What VC-PPO's value pretraining does to the critic: its error on the first rollout batch's returns before the
pretraining steps and after them.

The run is an ordinary trainer run of a value-based config: its first rollout batch is generated and scored, the
critic's predictions on it and its GAE returns (at the critic's lambda) are kept, the `critic.pretrain_steps`
critic-only steps run (the first on that batch), and the critic predicts the kept batch again. The policy does not
move meanwhile (checked).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.rl.gae import value_metrics
from shuffle_r1_jax.rl.metrics import masked_mean
from shuffle_r1_jax.train.trainer import StepKeys, Trainer


@dataclasses.dataclass(frozen=True)
class PretrainingEffect:
    """The critic's mean squared error on the first batch's returns (over its valid response tokens).

    Attributes:
      steps: the pretraining steps run.
      error_before: before any critic step.
      error_after: after the pretraining steps.
      explained_variance_before: `critic/explained_variance` on the first batch before.
      explained_variance_after: the same after.
      policy_moved: whether any policy parameter changed during the pretraining (it must not).
    """

    steps: int
    error_before: float
    error_after: float
    explained_variance_before: float
    explained_variance_after: float
    policy_moved: bool


def measure_value_pretraining(trainer: Trainer) -> PretrainingEffect:
    """Runs a fresh value-based trainer's pretraining steps and measures the critic before and after them.

    Args:
      trainer: a trainer of a value-based algorithm at step 0 with `critic.pretrain_steps` >= 1; its steps are
        run (it ends at step `critic.pretrain_steps`).

    Returns:
      The `PretrainingEffect`.

    Raises:
      ValueError: the trainer has no critic, no pretraining steps, or has already trained.
    """
    critic = trainer.settings.critic
    if critic is None or critic.pretrain_steps < 1 or trainer.step != 0:
        raise ValueError(
            "measure_value_pretraining needs a fresh value-based run with critic.pretrain_steps >= 1 "
            f"(rl.algorithm = {trainer.settings.rl.algorithm!r}, step {trainer.step})"
        )
    start = jax.device_get(trainer.params)
    keys = StepKeys.at(trainer.base_key, 0)
    with jax.set_mesh(trainer.mesh):
        first, _ = trainer.collect_rollouts(next(trainer.train_batches), keys)
        update_batch = trainer.targets(first, keys.select, {})
        kept = update_batch.critic_targets
        before = _fit(kept.old_values, kept.returns, first.rollouts.mask)
        trainer.optimize(first, update_batch, {})
    trainer.step = 1
    while trainer.step < critic.pretrain_steps:
        trainer.train_step()
        trainer.step += 1
    with jax.set_mesh(trainer.mesh):
        values = trainer.programs.values(trainer.critic_params, first.rollouts, kept.image_features)
        after = _fit(values, kept.returns, first.rollouts.mask)
    moved = any(np.any(np.asarray(a) != b) for a, b in zip(jax.tree.leaves(trainer.params), jax.tree.leaves(start)))
    return PretrainingEffect(critic.pretrain_steps, before[0], after[0], before[1], after[1], moved)


def _fit(values: jax.Array, returns: jax.Array, mask: jax.Array) -> tuple[float, float]:
    """(mean squared error, explained variance) of predictions against returns over the valid tokens."""
    error = masked_mean(jnp.square(values - returns), mask)
    return float(error), float(value_metrics(values, returns, mask)["critic/explained_variance"])
