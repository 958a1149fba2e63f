"""DAPO: clip-higher, dynamic sampling (groups without a reward difference replaced by new prompts' groups), token
mean loss and its overlong reward shaping (no punishment up to rollout.max_new_tokens minus a fifth of it, then
falling linearly to -1 at the limit; `reward.overlong_buffer`), at n = 8 as the paper compares it.

    python -m shuffle_r1_jax.train --config configs/dapo.py                                 # the demo (CPU)
    python -m shuffle_r1_jax.train --config configs/dapo.py:base=paper,model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/geo3k_7b_dapo

Arguments: base (demo | paper; default demo), with base=paper the paper config's model, dataset.
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, _ = recipe_base(arg, Path(__file__).parent, algorithm="dapo")
    c.rl.algorithm = "dapo"
    c.rollout.n = 8
    return c
