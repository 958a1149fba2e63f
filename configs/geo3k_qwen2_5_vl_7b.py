"""Shuffle-R1's paper setting on geometry3k for Qwen2.5-VL-7B-Instruct (spec: shuffle_r1.md). The defaults of
`base_config()` are the paper's hyperparameters (512 prompts x 16 rollouts, alpha 0.5, S 8, mini-batches of 128
prompts, AdamW 1e-6, frozen vision tower, validation every 5 steps at temperature 0.5 with 8 samples).

    python -m shuffle_r1_jax.train --config configs/geo3k_qwen2_5_vl_7b.py \\
        --config.model.checkpoint=/path/to/Qwen2.5-VL-7B-Instruct \\
        --config.data.train=/path/to/geometry3k@train --config.data.val=/path/to/geometry3k@test \\
        --workdir runs/geo3k_qwen2_5_vl_7b
"""

from shuffle_r1_jax.train.defaults import base_config


def get_config():
    c = base_config()
    c.model.dtype = "bfloat16"
    c.data.prompt_format = "math"
    c.reward.name = "math"
    c.rl.algorithm = "shuffle_r1"
    c.train.total_steps = 20 * 2101 // 512  # 20 epochs of about 2101 training problems
    return c
