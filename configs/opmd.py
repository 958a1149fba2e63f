"""Kimi K1.5's online policy mirror descent with its prioritized sampling: each response's loss is the squared
error between its reward minus the group's mean and tau x log(pi / pi_old) (`loss.opmd_tau`), and the prompts are
drawn by 1 - pass rate (`data.sampling`).

    python -m shuffle_r1_jax.train --config configs/opmd.py                                 # the demo (CPU)
    python -m shuffle_r1_jax.train --config configs/opmd.py:base=paper,model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/geo3k_7b_opmd

Arguments: base (demo | paper; default demo), with base=paper the paper config's model, dataset.
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, _ = recipe_base(arg, Path(__file__).parent, algorithm="opmd")
    c.rl.algorithm = "opmd"
    c.data.sampling = "prioritized"
    return c
