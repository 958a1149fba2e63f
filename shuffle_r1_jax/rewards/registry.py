"""Name -> reward function. A config names "math", "math_official" (the official code's mathruler grader), "r1v",
the perception rewards "grounding_iou", "label_match", "count_match" and "gui_action" (grounding and GUI read
"image_sizes"), "step_grpo" (R1-VL's step-wise rewards, `step_rewards`), "prm" (a process reward model,
`process_reward`), or "package.module:function" (the demo's reward is "shuffle_r1_jax.demo.reward:synthetic_reward").

A reward function has the signature `fn(response: str, answer: str, **keywords) -> Mapping[str, float]` (the
keywords it names come from the run's `reward.options` and each prompt's context, see `pool`); the mapping holds
`overall` (the scalar used for advantages) plus named parts that are logged, each a finite int or float
(a string, a bool, NaN or inf makes the sample an invalid output, scored 0), and optionally "spans", token-level
rewards over character ranges of the response. It must be defined at
module level so worker processes can import it. Built-in names are resolved lazily, so importing this
module does not import the math grader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

RewardFn = Callable[[str, str], Mapping[str, float]]

_REWARDS: dict[str, str | RewardFn] = {
    "math": "shuffle_r1_jax.rewards.math_reward:math_reward",
    "r1v": "shuffle_r1_jax.rewards.r1v_reward:r1v_reward",
    "math_official": "shuffle_r1_jax.rewards.official_math_reward:official_math_reward",
    "grounding_iou": "shuffle_r1_jax.rewards.grounding:grounding_iou",
    "label_match": "shuffle_r1_jax.rewards.labels:label_match",
    "count_match": "shuffle_r1_jax.rewards.labels:count_match",
    "gui_action": "shuffle_r1_jax.rewards.gui_action:gui_action",
    "step_grpo": "shuffle_r1_jax.rewards.step_rewards:step_grpo_reward",
    "prm": "shuffle_r1_jax.rewards.process_reward:prm_reward",
}


def register_reward(name: str, fn: str | RewardFn) -> None:
    """Makes `name` resolve to `fn` (a module-level function or a "module:function" path).

    Raises:
      ValueError: if `name` is already registered.
    """
    if name in _REWARDS:
        raise ValueError(f"reward {name!r} is already registered")
    _REWARDS[name] = fn


def available_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REWARDS)


def import_function(path: str, what: str = "reward") -> Callable:
    """Imports a function given as "package.module:function" (importlib).

    Args:
      path: "package.module:function".
      what: what the function is for, named in error messages.

    Returns:
      The callable.

    Raises:
      ValueError: naming `what` and `path` when the path is malformed, the module cannot be imported (it or one of
        its imports is missing, or it raises while it runs: a syntax error, a missing data file), or it has no
        callable of that name; the message ends with the import's error.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{what} {path!r} is not of the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the module's own code runs here: any error it raises means it does not import
        raise ValueError(
            f"cannot import module {module_name!r} of {what} {path!r}: {type(err).__name__}: {err}"
        ) from err
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise ValueError(f"{what} {path!r}: module {module_name!r} has no callable {attribute!r}")
    return fn


def get_reward_fn(spec: str | RewardFn) -> RewardFn:
    """Resolves a reward spec to its function.

    Args:
      spec: a registered name, a "module:function" path, or a callable (returned unchanged).

    Returns:
      The reward function.

    Raises:
      ValueError: if `spec` is neither registered nor an importable "module:function" path.
    """
    if callable(spec):
        return spec
    if spec in _REWARDS:
        entry = _REWARDS[spec]
        return import_function(entry) if isinstance(entry, str) else entry
    if ":" in spec:
        return import_function(spec)
    raise ValueError(f"unknown reward {spec!r}; registered: {available_rewards()}, or give 'module:function'")
