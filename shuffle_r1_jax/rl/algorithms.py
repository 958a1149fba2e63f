"""The algorithms the trainer runs, by name: each is an advantage estimator, an update-batch selector, whether
DAPO's dynamic sampling refills the batch, whether a critic is trained, and the settings it fixes.

Every algorithm shares the trainer. Names here are the config's `rl.algorithm`; the estimator and selector
names are keys of `rl.advantages` and `rl.selection`'s registries, except the value-based algorithms' "gae"
(`rl.gae.advantages_from_values`: GAE over the critic's values).

Value-based: `ppo` (PPO with a critic and GAE, EasyR1's and verl's defaults: gamma 1, lambda 1), `vc_ppo` (VC-PPO:
critic-only value pretraining steps before the first policy update and decoupled GAE, the critic's lambda fixed at
1.0 and the policy's 0.95 by default) and `orz_ppo` (Open-Reasoner-Zero: PPO with gamma 1 and lambda 1 fixed and
no KL loss).

`opmd`: Kimi K1.5's online policy mirror descent, the squared error of each response's centered reward against
tau times its sequence log-ratio (`rl.opmd`), in place of the clipped surrogate.
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
      critic: a value model is trained beside the policy and the estimator is GAE over its values.
      gae: (field, value) pairs of `rl.gae.GAEConfig` the algorithm fixes.
      gae_defaults: (field, value) pairs of `GAEConfig` taken where the config leaves the key at -1.
      critic_pretrain_steps: `critic.pretrain_steps` where the config leaves it at -1.
      overlong_buffer_divisor: where the config leaves `reward.overlong_buffer` at -1, the buffer of DAPO's
        overlong reward shaping is `rollout.max_new_tokens // overlong_buffer_divisor` tokens (0 = no shaping).
    """

    estimator: str
    selector: str
    dynamic_sampling: bool = False
    selection: tuple[tuple[str, object], ...] = ()
    loss: tuple[tuple[str, object], ...] = ()
    critic: bool = False
    gae: tuple[tuple[str, object], ...] = ()
    gae_defaults: tuple[tuple[str, object], ...] = ()
    critic_pretrain_steps: int = 0
    overlong_buffer_divisor: int = 0


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm("grpo", "all"),
    "dr_grpo": Algorithm("dr_grpo", "all", loss=(("agg_mode", "seq-mean-token-sum-norm"),)),
    # the paper's overlong buffer: 4096 of its 20480 response tokens, a fifth
    "dapo": Algorithm(
        "grpo",
        "all",
        dynamic_sampling=True,
        loss=(("clip_high", 0.28), ("agg_mode", "token-mean")),
        overlong_buffer_divisor=5,
    ),
    "rloo": Algorithm("rloo", "all"),
    "reinforce_pp": Algorithm("reinforce_plus_plus", "all"),
    "reinforce_pp_baseline": Algorithm("reinforce_plus_plus_baseline", "all"),
    "cppo": Algorithm("grpo", "cppo"),
    "pts_only": Algorithm("grpo", "pts"),
    "abs_only": Algorithm("grpo", "pts_abs", selection=(("keep_ratio", 1.0),)),
    "shuffle_r1": Algorithm("grpo", "pts_abs"),
    # Kimi K1.5's OPMD: Dr.GRPO's score - group mean per row is the centered reward its squared error needs
    "opmd": Algorithm("dr_grpo", "all", loss=(("loss_kind", "opmd"),)),
    "ppo": Algorithm("gae", "all", critic=True),
    "vc_ppo": Algorithm(
        "gae",
        "all",
        critic=True,
        gae=(("critic_lam", 1.0),),
        gae_defaults=(("actor_lam", 0.95),),
        critic_pretrain_steps=10,
    ),
    "orz_ppo": Algorithm(
        "gae",
        "all",
        critic=True,
        gae=(("gamma", 1.0), ("actor_lam", 1.0), ("critic_lam", 1.0)),
        loss=(("kl_coef", 0.0),),
    ),
}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called `name`.

    Raises:
      ValueError: `name` is unknown; the message names `rl.algorithm` and the known algorithms.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"rl.algorithm = {name!r} is unknown; known algorithms: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
