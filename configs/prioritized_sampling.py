"""Kimi K1.5's prioritized sampling: each rollout batch draws its prompts with probability proportional to
max(1 - pass rate, data.priority_floor), the pass rates measured on the prompts' earlier rollouts (never-sampled
prompts count as unsolved), so solved prompts come back rarely and the update sees fewer groups without a reward
difference. Composes with any algorithm.

    python -m shuffle_r1_jax.train --config configs/prioritized_sampling.py                # the demo (CPU)
    python -m shuffle_r1_jax.train --config configs/prioritized_sampling.py:base=paper,model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/geo3k_7b_prioritized

Arguments: base (demo | paper; default demo), with base=paper the paper config's model, dataset, algorithm.
BUILD_NOTES.md "Prompt sampling" has the demo measurement.
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, _ = recipe_base(arg, Path(__file__).parent)
    c.data.sampling = "prioritized"
    c.data.priority_floor = 0.1
    return c
