"""shuffle-r1-jax: Shuffle-R1 reinforcement learning for Qwen2.5-VL in JAX / Flax NNX."""

__version__ = "0.1.0"
