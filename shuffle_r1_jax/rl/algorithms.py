"""The algorithms the trainer runs, by name: each is an advantage estimator, an update-batch selector, whether
DAPO's dynamic sampling refills the batch, and the defaults it implies for the selection and the loss.

Every algorithm shares the trainer. Names here are the config's `rl.algorithm`; the estimator and selector
names are keys of `rl.advantages` and `rl.selection`'s registries.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """estimator: advantage estimator name; selector: update-batch selector name; dynamic_sampling: DAPO's
    group filter and refill; selection: `SelectionConfig` fields the algorithm fixes (ABS-only keeps every
    pair); loss: `LossConfig` field defaults it implies (a config value wins only where none is given here)."""

    estimator: str
    selector: str
    dynamic_sampling: bool = False
    selection: tuple[tuple[str, object], ...] = ()
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
    "abs_only": Algorithm("grpo", "pts_abs", selection=(("keep_ratio", 1.0),)),
    "shuffle_r1": Algorithm("grpo", "pts_abs"),
}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called `name`; ValueError naming `rl.algorithm` and the known names otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"rl.algorithm = {name!r} is unknown; known algorithms: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
