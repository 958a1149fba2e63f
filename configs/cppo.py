"""CPPO: each group keeps its k = int(n (1 - rl.cppo_prune)) rollouts of largest |advantage|, and the update slots
freed by the pruning are filled with the pruned groups of newly sampled prompts (ceil(n / k) prompt batches
merged per step, `rl.cppo_fill`), so every update batch stays full; at n = 8 as the paper compares it.

    python -m shuffle_r1_jax.train --config configs/cppo.py                                 # the demo (CPU)
    python -m shuffle_r1_jax.train --config configs/cppo.py:base=paper,model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/geo3k_7b_cppo

Arguments: base (demo | paper; default demo), with base=paper the paper config's model, dataset.
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, _ = recipe_base(arg, Path(__file__).parent, algorithm="cppo")
    c.rl.algorithm = "cppo"
    c.rl.cppo_fill = True
    c.rollout.n = 8
    return c
