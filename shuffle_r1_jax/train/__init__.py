"""The RL trainer: rollouts, update-batch selection, policy updates, evaluation, checkpoints, metrics.

Entrypoint: `python -m shuffle_r1_jax.train --config configs/<name>.py [--config.key=value ...] [--workdir DIR]`.
"""
