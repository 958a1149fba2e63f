"""Next-token selection from logits: forbidden-token masks, temperature, top-k, exact top-p, greedy.

All functions work on `[batch, vocab]` logits in fp32 and are jit-friendly (static shapes, no sorting of the
vocabulary: top-p finds its probability threshold by bisection over the fp32 bit patterns, which is exact).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen (hashable: it is a static argument of the jitted sampler).

    temperature: 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1.0 = off).
    top_k: keep the k most likely tokens (0 = off).
    stop_token_ids: a sampled stop token ends its sequence (it is part of the response).
    forbidden_token_ids: never sampled (the image and video placeholder tokens).
    pad_token_id: written after a sequence has ended.
    ignore_stop: keep generating past stop tokens (benchmarks that need a fixed length).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_token_ids: tuple[int, ...] = ()
    forbidden_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    ignore_stop: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"sampling temperature = {self.temperature} must be >= 0 (0 = greedy)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sampling top_p = {self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"sampling top_k = {self.top_k} must be >= 0 (0 = off)")


def mask_forbidden(logits: jax.Array, forbidden: tuple[int, ...]) -> jax.Array:
    """Sets the logits of `forbidden` token ids to -inf. logits: `float32[B, V]`."""
    if not forbidden:
        return logits
    return logits.at[:, jnp.asarray(forbidden, jnp.int32)].set(NEG_INF)


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """Keeps tokens whose logit is at least the k-th largest (ties at the boundary are all kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][:, -1:]
    return jnp.where(logits >= kth, logits, NEG_INF)


def top_p_mask(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filter over the full vocabulary, exact.

    Keeps token i iff its probability is >= t*, the largest threshold t with P(prob >= t) >= p; that is the
    smallest most-likely set whose mass reaches p (tokens tied with the boundary one are all kept).
    t* is found by bisection over the int32 bit patterns of the fp32 probabilities (monotone for x >= 0):
    32 masked sums over the vocabulary instead of a sort.
    """
    if p >= 1.0:
        return logits
    probs = jax.nn.softmax(logits, axis=-1)
    bits = jax.lax.bitcast_convert_type(probs, jnp.int32)
    lo = jnp.zeros(bits.shape[:-1], jnp.int32)  # P(prob >= 0) = 1 >= p
    hi = jnp.max(bits, axis=-1) + 1  # P(prob >= hi) = 0 < p

    def step(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        mass = jnp.sum(jnp.where(bits >= mid[:, None], probs, 0.0), axis=-1)
        ok = mass >= p
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 32, step, (lo, hi))
    return jnp.where(bits >= lo[:, None], logits, NEG_INF)


def choose_tokens(logits: jax.Array, key: jax.Array, config: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """Picks one token per row and its log-probability under the sampling policy.

    logits: `[B, V]` raw model logits. Returns (tokens `int32[B]`, logprobs `float32[B]`), where the log-prob is
    log_softmax(logits / temperature) over the whole vocabulary (temperature 1 when greedy): the same quantity a
    full forward pass gives the trainer.
    """
    logits = logits.astype(jnp.float32)
    temperature = config.temperature if config.temperature > 0 else 1.0
    scaled = logits / temperature
    filtered = mask_forbidden(scaled, config.forbidden_token_ids)
    if config.temperature == 0:
        tokens = jnp.argmax(filtered, axis=-1).astype(jnp.int32)
    else:
        filtered = top_p_mask(top_k_mask(filtered, config.top_k), config.top_p)
        tokens = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
    logprobs = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1), tokens[:, None], axis=-1)[:, 0]
    return tokens, logprobs
