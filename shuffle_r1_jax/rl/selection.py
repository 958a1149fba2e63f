"""Update-batch selectors: which rollouts of one rollout batch the policy update trains on, and how often.

Every selector has one signature and a static size,

    selector(rollout_advantages: float32[G, n], cfg: SelectionConfig, key) -> (rows int32[U], valid bool[U], stats)
    rows_per_prompt(cfg) -> int        # U = G * rows_per_prompt(cfg)

where rows are flat rollout ids g * n + i (the pair selectors keep pairs adjacent: rows 2k, 2k + 1), `valid`
marks the rows that count (ABS may leave slots empty) and stats are scalars to log. All are jittable with `cfg`
static. Add one with

    @register_selector("my_selector", rows_per_prompt=lambda cfg: ...)
    def my_selector(rollout_advantages, cfg, key): ...

Built in: "all" (every rollout once: GRPO and its relatives), "cppo" (the top-|A| rollouts of each prompt),
"pts" (Pairwise Trajectory Sampling's pairs), "pts_abs" (Advantage-based Batch Shuffle's weighted draws of the
PTS pairs: Shuffle-R1).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl import advantages as adv_lib
from shuffle_r1_jax.rl import batch_shuffle, pts
from shuffle_r1_jax.rl.registry import Registry

Selection = tuple[jax.Array, jax.Array, dict]  # (rows int32[U], valid bool[U], stats)


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Settings of the update-batch selection; static (hashable) for jit.

    Attributes:
      selection: the registered selector's name.
      group_size: n, rollouts per prompt.
      keep_ratio: PTS alpha, the fraction of each prompt's pairs kept.
      pts_variant: PTS variant, one of `pts.PTS_VARIANTS`.
      rerank: PTS `rerank_by_magnitude`.
      rounds: ABS replay rounds S.
      weight: ABS pair weight kind, one of `batch_shuffle.PAIR_WEIGHT_KINDS`.
      power: ABS normalisation exponent p of `batch_shuffle.power_normalize`.
      cppo_prune: CPPO's pruning ratio.
      sampling: how ABS draws the pairs, one of `batch_shuffle.ABS_SAMPLINGS` ("weighted" is the paper's; "uniform"
        and "static" are its ablations).
      single_round: ABS with one round (S = 1): "draw" (a weighted draw of every pair with a positive weight)
        or "all_pairs" (every kept pair in PTS order, zero-weight pairs too: the official code's).
      update_chunks: 0 = optimizer steps take consecutive update rows (whole ABS rounds); k > 0 = the official
        layout over k device chunks (`batch_shuffle.chunked_step_order`), applied by the trainer's selection.
    """

    selection: str
    group_size: int
    keep_ratio: float = 0.5
    pts_variant: str = "pairs"
    rerank: bool = False
    rounds: int = 8
    weight: str = "sum"
    power: float = 1.0
    cppo_prune: float = 0.5
    sampling: str = "weighted"
    single_round: str = "draw"
    update_chunks: int = 0


@dataclasses.dataclass(frozen=True)
class Selector:
    """A registered selector.

    Attributes:
      select: `select(rollout_advantages, cfg, key) -> Selection`.
      rows_per_prompt: `rows_per_prompt(cfg) -> int`, its static row count per prompt; raises ValueError naming the
        option when `cfg` is impossible.
    """

    select: Callable[[jax.Array, SelectionConfig, jax.Array], Selection]
    rows_per_prompt: Callable[[SelectionConfig], int]


_SELECTORS: Registry[Selector] = Registry("update-batch selector")


def register_selector(name: str, *, rows_per_prompt: Callable[[SelectionConfig], int]):
    """Decorator registering a selector under `name`, with its static row count per prompt `rows_per_prompt`.

    Raises:
      ValueError: `name` is already registered.
    """

    def decorator(fn):
        _SELECTORS.add(name, Selector(fn, rows_per_prompt))
        return fn

    return decorator


def available_selectors() -> tuple[str, ...]:
    """Sorted names of the registered selectors."""
    return _SELECTORS.names()


def get_selector(name: str) -> Selector:
    """The selector registered under `name`.

    Raises:
      ValueError: `name` is not registered; the message lists the known selectors.
    """
    return _SELECTORS.get(name)


def rows_per_prompt(cfg: SelectionConfig) -> int:
    """How many update-batch rows one prompt contributes (static).

    Raises:
      ValueError: the selector is unknown, or `cfg` is impossible for it (the message names the option).
    """
    return get_selector(cfg.selection).rows_per_prompt(cfg)


def select_update_rows(rollout_advantages: jax.Array, cfg: SelectionConfig, key: jax.Array) -> Selection:
    """The update batch of one rollout batch by the configured selector.

    Args:
      rollout_advantages: `float32[G, n]`.
      cfg: static selection settings.
      key: PRNG key (used by random selectors).

    Returns:
      (rows `int32[U]`, valid `bool[U]`, stats: dict of scalars to log); U = G * rows_per_prompt(cfg).
    """
    return get_selector(cfg.selection).select(rollout_advantages, cfg, key)


def _group_offsets(rollout_advantages: jax.Array) -> jax.Array:
    groups, n = rollout_advantages.shape
    return (jnp.arange(groups, dtype=jnp.int32) * n)[:, None]


def _all_valid(rows: jax.Array) -> Selection:
    return rows, jnp.ones_like(rows, bool), {}


def _pts_rows_per_prompt(cfg: SelectionConfig) -> int:
    return 2 * pts.num_kept_pairs(cfg.group_size, cfg.keep_ratio)


def _kept_pairs(rollout_advantages: jax.Array, cfg: SelectionConfig, key: jax.Array) -> jax.Array:
    return pts.pairwise_trajectory_sampling(
        rollout_advantages,
        cfg.keep_ratio,
        rerank_by_magnitude=cfg.rerank,
        variant=cfg.pts_variant,
        key=key if cfg.pts_variant == "random" else None,
    )


@register_selector("all", rows_per_prompt=lambda cfg: cfg.group_size)
def select_all(rollout_advantages: jax.Array, cfg: SelectionConfig, key: jax.Array) -> Selection:
    """Every rollout once, in order."""
    groups, n = rollout_advantages.shape
    return _all_valid(jnp.arange(groups * n, dtype=jnp.int32))


@register_selector("cppo", rows_per_prompt=lambda cfg: adv_lib.cppo_num_kept(cfg.group_size, cfg.cppo_prune))
def select_cppo(rollout_advantages: jax.Array, cfg: SelectionConfig, key: jax.Array) -> Selection:
    """CPPO: each prompt's int(n (1 - cppo_prune)) rollouts of largest |A|."""
    kept = adv_lib.cppo_prune(rollout_advantages, cfg.cppo_prune)
    return _all_valid((kept + _group_offsets(rollout_advantages)).reshape(-1))


@register_selector("pts", rows_per_prompt=_pts_rows_per_prompt)
def select_pts(rollout_advantages: jax.Array, cfg: SelectionConfig, key: jax.Array) -> Selection:
    """PTS: each prompt's kept pairs, in pair order."""
    pts_key, _ = jax.random.split(key)
    kept = _kept_pairs(rollout_advantages, cfg, pts_key)
    return _all_valid((kept + _group_offsets(rollout_advantages)).reshape(-1))


@register_selector("pts_abs", rows_per_prompt=_pts_rows_per_prompt)
def select_pts_abs(rollout_advantages: jax.Array, cfg: SelectionConfig, key: jax.Array) -> Selection:
    """Shuffle-R1: PTS pairs drawn by ABS in `rounds` rounds with probability growing with their advantage
    (`cfg.sampling` "weighted"; "uniform" and "static" are the ablations of `batch_shuffle.draw_pairs`).

    The stats are ABS's draw statistics (`batch_shuffle.draw_statistics`); shortfall slots are not valid.
    """
    if cfg.rounds == 1 and cfg.single_round == "all_pairs":
        return select_pts(rollout_advantages, cfg, key)
    n = rollout_advantages.shape[1]
    pts_key, abs_key = jax.random.split(key)
    kept = _kept_pairs(rollout_advantages, cfg, pts_key)
    weights = batch_shuffle.power_normalize(
        batch_shuffle.pair_weights(pts.pair_advantages(rollout_advantages, kept), cfg.weight), cfg.power
    )
    num_pairs = weights.shape[0]
    draws = batch_shuffle.draw_pairs(
        weights, cfg.rounds, batch_shuffle.pairs_per_round(num_pairs, cfg.rounds), abs_key, cfg.sampling
    )
    batch = batch_shuffle.update_batch_indices(kept, draws, n)
    return batch.rollout_indices, batch.valid, batch_shuffle.draw_statistics(draws, num_pairs)
