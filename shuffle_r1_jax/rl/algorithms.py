"""The algorithms the trainer runs, by name: each is an advantage estimator, an update-batch selector, whether
DAPO's dynamic sampling refills the batch, and the selection and loss settings it fixes.

Every algorithm shares the trainer. Names here are the config's `rl.algorithm`; the estimator and selector
names are keys of `rl.advantages` and `rl.selection`'s registries.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One algorithm of the table: which estimator and selector it runs and the settings it fixes.

    Attributes:
      estimator: advantage estimator name (a key of `rl.advantages`' registry).
      selector: update-batch selector name (a key of `rl.selection`'s registry).
      dynamic_sampling: whether DAPO's group filter and refill run.
      selection: (field, value) pairs of `SelectionConfig` the algorithm fixes, replacing the config's values
        (ABS-only keeps every pair).
      loss: (field, value) pairs of `LossConfig` the algorithm fixes; the config's value applies only to the
        fields not listed here.
    """

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
    """The algorithm called `name`.

    Raises:
      ValueError: `name` is unknown; the message names `rl.algorithm` and the known algorithms.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"rl.algorithm = {name!r} is unknown; known algorithms: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
