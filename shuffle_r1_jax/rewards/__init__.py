"""Verifiable rewards (math, r1v), a registry of reward functions, a host scoring pool.

A reward function takes (response: str, answer: str) and returns a dict with `overall` plus named
parts (floats). `registry.get_reward_fn` resolves names; `pool.score_batch` / `pool.RewardPool` run them
over a batch in worker processes with a per-sample time limit. Rewards defined elsewhere are named by their
"module:function" path (the demo's is "shuffle_r1_jax.demo.reward:synthetic_reward").
"""
