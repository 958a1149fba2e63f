"""Verifiable rewards (math, r1v, synthetic tasks), a registry of reward functions, a host scoring pool.

A reward function takes (response: str, answer: str) and returns a dict with `overall` plus named
parts (floats). `registry.get_reward_fn` resolves names; `pool.score_batch` / `pool.RewardPool` run them
over a batch in worker processes with a per-sample time limit.
"""
