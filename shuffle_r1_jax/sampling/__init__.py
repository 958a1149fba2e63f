"""Rollout generation: token processors (temperature, top-k, top-p, masks) and the jitted sampler."""

from shuffle_r1_jax.sampling.processors import SamplingConfig
from shuffle_r1_jax.sampling.sampler import FINISH_EOS, FINISH_LENGTH, SampleOutput, Sampler

__all__ = ["FINISH_EOS", "FINISH_LENGTH", "SampleOutput", "Sampler", "SamplingConfig"]
