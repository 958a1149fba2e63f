"""Deprecated import path of the demo's tiny tokenizer, kept for existing users: the module lives in
`shuffle_r1_jax.demo.tiny_tokenizer`."""

from shuffle_r1_jax.demo.tiny_tokenizer import *  # noqa: F401,F403
