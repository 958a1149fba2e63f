"""The demo (the entrypoint's default): a tiny Qwen2.5-VL-architecture model learns the synthetic image task on
CPU. See shuffle_r1_jax/demo/config.py for what it sets and builds.

    python -m shuffle_r1_jax.train --config configs/demo.py
    python -m shuffle_r1_jax.train --config configs/demo.py --config.rl.algorithm=grpo --config.train.total_steps=20
"""

from shuffle_r1_jax.demo.config import get_config  # noqa: F401
