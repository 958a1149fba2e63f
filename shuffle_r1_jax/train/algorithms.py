"""Which rollouts an algorithm trains on: the update batch of one rollout batch, by algorithm name.

Every algorithm shares the trainer; they differ in the advantage estimator, in which rollout rows enter the
update batch (all, CPPO's top-|A|, PTS pairs, ABS draws of PTS pairs), and in loss defaults (DAPO's
clip-higher, Dr.GRPO's constant normaliser). `select_update_rows` is a pure jittable function.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl import advantages as adv_lib
from shuffle_r1_jax.rl import batch_shuffle, pts


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """estimator: advantage estimator name; selection: "all" | "cppo" | "pts" | "pts_abs";
    dynamic_sampling: DAPO's group filter; loss: LossConfig field defaults this algorithm implies."""

    estimator: str
    selection: str
    dynamic_sampling: bool = False
    loss: tuple[tuple[str, object], ...] = ()


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm("grpo", "all"),
    "dr_grpo": Algorithm("dr_grpo", "all", loss=(("agg_mode", "seq-mean-token-sum-norm"),)),
    "dapo": Algorithm("grpo", "all", dynamic_sampling=True, loss=(("clip_high", 0.28), ("agg_mode", "token-mean"))),
    "rloo": Algorithm("rloo", "all"),
    "reinforce_pp": Algorithm("reinforce_plus_plus", "all"),
    "reinforce_pp_baseline": Algorithm("reinforce_plus_plus_baseline", "all"),
    "cppo": Algorithm("grpo", "cppo"),
    "pts_only": Algorithm("grpo", "pts"),
    "abs_only": Algorithm("grpo", "pts_abs"),  # ABS over all pairs: PTS pairing with keep_ratio 1
    "shuffle_r1": Algorithm("grpo", "pts_abs"),
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"rl.algorithm = {name!r} is unknown; known algorithms: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """selection: as in `Algorithm`; keep_ratio: PTS alpha (forced to 1 for abs_only by the caller);
    pts_variant / rerank: PTS options; rounds: ABS replay rounds S; weight / power: ABS pair weight and
    normalisation exponent; cppo_prune: CPPO's pruning ratio."""

    selection: str
    group_size: int
    keep_ratio: float = 0.5
    pts_variant: str = "pairs"
    rerank: bool = False
    rounds: int = 8
    weight: str = "sum"
    power: float = 1.0
    cppo_prune: float = 0.5


def rows_per_prompt(cfg: SelectionConfig) -> int:
    """How many update-batch rows one prompt contributes (static)."""
    if cfg.selection == "all":
        return cfg.group_size
    if cfg.selection == "cppo":
        return adv_lib.cppo_num_kept(cfg.group_size, cfg.cppo_prune)
    return 2 * pts.num_kept_pairs(cfg.group_size, cfg.keep_ratio)


def select_update_rows(rollout_advantages: jax.Array, cfg: SelectionConfig, key: jax.Array):
    """The update batch of one rollout batch.

    rollout_advantages: `float32[G, n]`. Returns (rows `int32[U]` flat rollout ids g * n + i, valid `bool[U]`,
    stats dict of float32 scalars), U = G * rows_per_prompt(cfg). Pairs are adjacent (rows 2k, 2k + 1).
    """
    groups, n = rollout_advantages.shape
    offsets = (jnp.arange(groups, dtype=jnp.int32) * n)[:, None]
    if cfg.selection == "all":
        rows = jnp.arange(groups * n, dtype=jnp.int32)
        return rows, jnp.ones_like(rows, bool), {}
    if cfg.selection == "cppo":
        kept = adv_lib.cppo_prune(rollout_advantages, cfg.cppo_prune)
        rows = (kept + offsets).reshape(-1)
        return rows, jnp.ones_like(rows, bool), {}
    pts_key, abs_key = jax.random.split(key)
    kept = pts.pairwise_trajectory_sampling(
        rollout_advantages,
        cfg.keep_ratio,
        rerank_by_magnitude=cfg.rerank,
        variant=cfg.pts_variant,
        key=pts_key if cfg.pts_variant == "random" else None,
    )
    if cfg.selection == "pts":
        rows = (kept + offsets).reshape(-1)
        return rows, jnp.ones_like(rows, bool), {}
    weights = batch_shuffle.power_normalize(
        batch_shuffle.pair_weights(pts.pair_advantages(rollout_advantages, kept), cfg.weight), cfg.power
    )
    num_pairs = weights.shape[0]
    draws = batch_shuffle.advantage_batch_shuffle(
        weights, cfg.rounds, batch_shuffle.pairs_per_round(num_pairs, cfg.rounds), abs_key
    )
    batch = batch_shuffle.update_batch_indices(kept, draws, n)
    return batch.rollout_indices, batch.valid, batch_shuffle.draw_statistics(draws, num_pairs)
