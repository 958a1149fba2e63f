"""Shuffle-R1's paper setting on geometry3k for Qwen2.5-VL-3B-Instruct (spec: shuffle_r1.md). See
`paper_config` in shuffle_r1_jax/train/defaults.py for what it sets.

    python -m shuffle_r1_jax.train --config configs/geo3k_qwen2_5_vl_3b.py \\
        --config.model.checkpoint=/path/to/Qwen2.5-VL-3B-Instruct \\
        --config.data.train=/path/to/geometry3k@train --config.data.val=/path/to/geometry3k@test \\
        --workdir runs/geo3k_qwen2_5_vl_3b
"""

from shuffle_r1_jax.train.defaults import paper_config


def get_config():
    return paper_config(train_examples=2101)
