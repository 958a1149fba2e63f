"""The optax optimizer of the policy: AdamW with warm-up and a constant or cosine schedule, global-norm
clipping, and frozen parameter groups (the vision tower by default; everything but the LoRA adapters with
`adapters_only`) that get no optimizer state."""

from __future__ import annotations

import dataclasses

import jax
import optax
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl.lora import is_adapter_path

SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Settings of the policy optimizer; validated on construction.

    Attributes:
      learning_rate: peak rate, > 0.
      warmup_steps: linear warm-up from 0, >= 0 steps.
      schedule: "constant" or "cosine" (to `min_lr_ratio` * peak at `total_steps`).
      total_steps: the schedule's length, >= 1.
      min_lr_ratio: the cosine schedule's final rate as a fraction of the peak.
      b1: AdamW's first-moment decay.
      b2: AdamW's second-moment decay.
      eps: AdamW's epsilon.
      weight_decay: AdamW's decoupled weight decay.
      max_grad_norm: global-norm clip (0 = off).
      freeze_vision: the vision tower is not trained.
      adapters_only: only the LoRA adapters are trained (`models.qwen2_5_vl.lora`); every other parameter is
        frozen.
    """

    learning_rate: float = 1e-6
    warmup_steps: int = 0
    schedule: str = "constant"
    total_steps: int = 1
    min_lr_ratio: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    freeze_vision: bool = True
    adapters_only: bool = False

    def __post_init__(self):
        """Validate the settings.

        Raises:
          ValueError: `schedule` is unknown, `learning_rate` <= 0, `warmup_steps` < 0, `total_steps` < 1, a beta
            outside [0, 1), or a negative `weight_decay` or `max_grad_norm`; the message names the field.
        """
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule = {self.schedule!r}; expected one of {SCHEDULES}")
        if self.learning_rate <= 0:
            raise ValueError(f"optim.learning_rate = {self.learning_rate} must be > 0")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError(
                f"optim.warmup_steps = {self.warmup_steps} must be >= 0 and total_steps = {self.total_steps} >= 1"
            )
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"optim.b1 = {self.b1} and optim.b2 = {self.b2} must be in [0, 1)")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(
                f"optim.weight_decay = {self.weight_decay} and optim.max_grad_norm = {self.max_grad_norm} must be "
                ">= 0 (max_grad_norm 0 = no clipping)"
            )

    def trains(self, path: tuple) -> bool:
        """Whether the parameter at `path` (its keys in the parameter dict) is trained."""
        if self.adapters_only:
            return is_adapter_path(path)
        return not (self.freeze_vision and path and path[0] == "visual")


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """Linear warm-up to the peak, then constant or cosine decay."""
    if cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.learning_rate)
    else:
        main = optax.cosine_decay_schedule(
            cfg.learning_rate, max(cfg.total_steps - cfg.warmup_steps, 1), alpha=cfg.min_lr_ratio
        )
    if cfg.warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    return optax.join_schedules([warmup, main], [cfg.warmup_steps])


def parameter_labels(params: nnx.State, cfg: OptimizerConfig) -> nnx.State:
    """The optimizer label of every parameter: "train" where `cfg.trains` says so, else "frozen".

    Args:
      params: the model's parameters.
      cfg: the optimizer settings (`freeze_vision`, `adapters_only`).

    Returns:
      A tree of the same structure as `params` with "frozen" or "train" leaves.
    """

    def label(path, _):
        return "train" if cfg.trains(tuple(getattr(k, "key", k) for k in path)) else "frozen"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg: OptimizerConfig, params: nnx.State) -> optax.GradientTransformation:
    """AdamW (+ global-norm clipping) for the trainable parameters; frozen ones get zero updates and no state.

    Args:
      cfg: the optimizer settings.
      params: the model's parameters (for the frozen / train labels).

    Returns:
      The optax transformation.
    """
    train = optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.max_grad_norm > 0:
        train = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), train)
    return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, parameter_labels(params, cfg))
