"""Stopping a run whose rewards all fail: a reward that raises, hangs or returns garbage for every sample scores
every sample 0, and the run would go on "training" on zero rewards.

`AllFailedSteps` counts the consecutive training steps in which every sample's reward failed and raises
`RewardHealthError` at `reward.max_failed_steps` of them; one step with a single scored sample starts the count
again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from shuffle_r1_jax.rewards.pool import FAILURE_REASONS


class RewardHealthError(RuntimeError):
    """Every sample's reward failed in `reward.max_failed_steps` consecutive training steps; the message names the
    failed samples by reason and the reward."""


@dataclasses.dataclass
class AllFailedSteps:
    """Consecutive training steps in which every sample's reward failed.

    Attributes:
      max_steps: `reward.max_failed_steps`, the count at which `observe` raises; 0 = never.
      reward_name: `reward.name`, named in the error.
      in_a_row: consecutive all-failed steps so far.
      failed: reason -> failed samples over those steps.
    """

    max_steps: int
    reward_name: str
    in_a_row: int = 0
    failed: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))

    def observe(self, failure_counts: Mapping[str, float], samples: int) -> None:
        """Counts one training step.

        Args:
          failure_counts: reason -> samples whose reward failed for it in the step (every process's; a reason
            missing counts 0).
          samples: the samples scored in the step (every process's).

        Raises:
          RewardHealthError: this step makes `max_steps` consecutive steps in which every sample failed.
        """
        step_failed = {reason: int(failure_counts.get(reason, 0)) for reason in FAILURE_REASONS}
        if samples == 0 or sum(step_failed.values()) < samples:
            self.in_a_row = 0
            self.failed = dict.fromkeys(FAILURE_REASONS, 0)
            return
        self.in_a_row += 1
        self.failed = {reason: self.failed[reason] + count for reason, count in step_failed.items()}
        if self.max_steps and self.in_a_row >= self.max_steps:
            raise RewardHealthError(self.message())

    def message(self) -> str:
        """The one-line error: the steps, the failed samples by reason, the reward and the key that set the limit."""
        counts = ", ".join(f"{reason} {count}" for reason, count in self.failed.items())
        return (
            f"every reward failed in {self.in_a_row} consecutive steps ({counts}); check reward.name = "
            f"{self.reward_name!r} (the run stops at reward.max_failed_steps = {self.max_steps}; 0 = never)"
        )
