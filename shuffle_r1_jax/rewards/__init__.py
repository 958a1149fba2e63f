"""Verifiable rewards, a registry of reward functions, a host scoring pool.

Outcome rewards (`math_reward`, `official_math_reward`, `r1v_reward`), R1-VL's step rewards (`step_rewards`, with
`soft_match`), perception rewards (`grounding`, `labels`, `gui_action`, over `boxes` and `answer_parsing`) and a
process reward model (`process_reward`). A reward function takes (response: str, answer: str) plus the keyword
arguments it names (the run's `reward.options`, each prompt's context) and returns a dict with `overall`, named
parts (floats) and optionally "spans" (token-level rewards). `registry.get_reward_fn` resolves names;
`pool.score_batch` / `pool.RewardPool` run them over a batch in worker processes with a per-sample time limit.
Rewards defined elsewhere are named by their "module:function" path (the demo's is
"shuffle_r1_jax.demo.reward:synthetic_reward").
"""
