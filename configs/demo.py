"""The demo (the entrypoint's default): a tiny Qwen2.5-VL-architecture model learns the synthetic image task on CPU.

On first use it writes, under `demo.cache_dir`, a tiny random checkpoint in the Hugging Face layout, the
synthetic dataset in the EasyR1 parquet layout, and a short supervised warm-up of the checkpoint (the starting
policy, as a real run starts from an Instruct model). Then the same pipeline as a real run: Shuffle-R1
(PTS + ABS) over GRPO advantages.

    python -m shuffle_r1_jax.train --config configs/demo.py
    python -m shuffle_r1_jax.train --config configs/demo.py --config.rl.algorithm=grpo --config.train.total_steps=20
"""

from shuffle_r1_jax.train.defaults import demo_config


def get_config():
    return demo_config()
