"""Helper process for the kill-safety test: saves checkpoints of a few-MB state in a loop until it is killed.

Usage: python -m tests.train.checkpoint_kill_writer DIRECTORY

It resumes after the latest complete step in DIRECTORY, saves one step and waits for it, prints "ready", then
saves step after step (asynchronously, as the trainer does) without end. Every saved value is `step_state(step)`,
so a reader can check what any step holds.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from shuffle_r1_jax.checkpoint.train_state import TrainCheckpointer

KEEP_LAST = 2
SHAPE = (512, 1024)  # 2 MiB of float32 per array; params + two moments = 6 MiB per step


def step_state(step: int) -> dict:
    """The state saved at `step`: every value a deterministic function of the step."""
    base = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) / 1024.0
    return {
        "params": {"w": base + step, "b": np.full((1024,), step, np.float32)},
        "opt_state": {"mu": base - step, "nu": base * step, "count": np.asarray(step, np.int32)},
        "rng_key": jax.random.key(step),
        "data_state": {"position": 10 * step, "epoch": step // 7},
        "best_score": step / 100.0,
        "metrics": {"val/accuracy": 1.0 / (1.0 + abs(step - 3))},
    }


def abstract_targets() -> tuple[dict, dict]:
    """Restore targets (params, opt_state) for `step_state`'s trees."""
    state = step_state(0)
    to_abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    return jax.tree.map(to_abstract, state["params"]), jax.tree.map(to_abstract, state["opt_state"])


def save_step(checkpointer: TrainCheckpointer, step: int) -> None:
    state = step_state(step)
    checkpointer.save(
        step,
        state["params"],
        state["opt_state"],
        state["rng_key"],
        state["data_state"],
        state["best_score"],
        metrics=state["metrics"],
    )


def main(directory: str) -> None:
    checkpointer = TrainCheckpointer(directory, keep_last=KEEP_LAST)
    step = (checkpointer.latest_step() or 0) + 1
    save_step(checkpointer, step)
    checkpointer.wait_until_finished()
    print("ready", flush=True)
    while True:
        step += 1
        save_step(checkpointer, step)


if __name__ == "__main__":
    main(sys.argv[1])
