"""Next-token selection from logits: forbidden-token masks, temperature, top-k, exact top-p, greedy.

All functions work on `[batch, vocab]` logits in fp32 and are jit-friendly (static shapes, no sorting of the
vocabulary, which XLA does slowly on CPU). Sampling inverts the CDF blockwise (one uniform per row, about one
pass over the vocabulary); exact top-p sampling is rejection sampling against the nucleus test, with an
explicit nucleus mask (bisection for its probability threshold) as the rare fallback.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen (hashable: it is a static argument of the jitted sampler).

    Attributes:
      temperature: 0 means greedy (argmax); otherwise logits are divided by it before sampling.
      top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1.0 = off).
      top_k: keep the k most likely tokens (0 = off).
      stop_token_ids: a sampled stop token ends its sequence (it is part of the response).
      forbidden_token_ids: never sampled (the image and video placeholder tokens).
      pad_token_id: written after a sequence has ended.
      ignore_stop: keep generating past stop tokens (benchmarks that need a fixed length).

    Raises:
      ValueError: temperature < 0, top_p outside (0, 1], or top_k < 0.
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
    """Sets the logits of `forbidden` token ids to -inf.

    Args:
      logits: `float32[B, V]`.
      forbidden: static token ids (empty: `logits` unchanged).

    Returns:
      `float32[B, V]`.
    """
    if not forbidden:
        return logits
    return logits.at[:, jnp.asarray(forbidden, jnp.int32)].set(NEG_INF)


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """Keeps tokens whose logit is at least the k-th largest (ties at the boundary are all kept); others get -inf.

    `logits` (`float32[B, V]`) come back unchanged when k <= 0 or k >= V.
    """
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

    Args:
      logits: `float32[B, V]`.
      p: static nucleus mass (>= 1.0: `logits` unchanged).

    Returns:
      `float32[B, V]`, -inf outside the nucleus.
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


def _cdf_block(vocab: int) -> int:
    """The largest power of two in [32, 256] dividing `vocab` (no padding copy), or 256 when none does."""
    block = 256
    while vocab % block and block > 32:
        block //= 2
    return block if vocab % block == 0 else 256


def inverse_cdf(probs: jax.Array, u: jax.Array) -> jax.Array:
    """Draws token ids by inverting the CDF of `probs` at `u`.

    Two levels (block sums, then one block's running sum), so it costs about one pass over the vocabulary.
    Tokens of probability 0 are never returned.

    Args:
      probs: `float32[B, V]` non-negative weights; a row need not sum to 1 (`u` is scaled by the row's total).
      u: `float32[B]` uniforms in [0, 1).

    Returns:
      `int32[B]` token ids.
    """
    batch, vocab = probs.shape
    block = _cdf_block(vocab)
    n_blocks = -(-vocab // block)
    blocks = jnp.pad(probs, ((0, 0), (0, n_blocks * block - vocab))).reshape(batch, n_blocks, block)
    block_mass = blocks.sum(-1)
    block_cum = jnp.cumsum(block_mass, -1)
    target = u * block_cum[:, -1]
    b = jnp.minimum(jnp.sum(block_cum <= target[:, None], -1), n_blocks - 1)
    before = jnp.take_along_axis(block_cum - block_mass, b[:, None], -1)
    inner = jnp.take_along_axis(blocks, b[:, None, None], 1)[:, 0]  # [B, block]
    inner_cum = before + jnp.cumsum(inner, -1)
    j = jnp.sum(inner_cum <= target[:, None], -1)
    last_nonzero = block - 1 - jnp.argmax((inner > 0)[:, ::-1], -1)
    j = jnp.where(j >= block, last_nonzero, j)  # rounding pushed the target past the block's end
    return (b * block + j).astype(jnp.int32)


def in_nucleus(probs: jax.Array, tokens: jax.Array, p: float) -> jax.Array:
    """Whether each row's token is in the top-p nucleus: the mass of strictly more likely tokens is < p.

    Args:
      probs: `float32[B, V]` probabilities.
      tokens: `int32[B]` one token id per row.
      p: nucleus mass.

    Returns:
      `bool[B]`.
    """
    p_token = jnp.take_along_axis(probs, tokens[:, None], -1)
    return jnp.sum(jnp.where(probs > p_token, probs, 0.0), -1) < p


REJECTION_ROUNDS = 4


def _uniform_per_row(keys: jax.Array) -> jax.Array:
    """`float32[B]`: one uniform draw in [0, 1) from each of the `B` keys."""
    return jax.vmap(jax.random.uniform)(keys)


def _split_per_row(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(next keys, draw keys), each `key[B]`: every row's key split in two."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


def sample_nucleus(probs: jax.Array, p: float, keys: jax.Array) -> jax.Array:
    """Samples exactly from `probs` `float32[B, V]` restricted to its top-p nucleus and renormalised.

    Rejection sampling: draw from the whole distribution and accept a token in the nucleus (probability = the
    nucleus mass >= p per round); rows still rejected after REJECTION_ROUNDS draw from the explicit nucleus
    (`top_p_mask`). Conditional on acceptance a draw follows the nucleus distribution, so the mixture is exact.

    Args:
      probs: `float32[B, V]` probabilities.
      p: static nucleus mass (>= 1.0: one plain draw from `probs`).
      keys: `key[B]`, one PRNG key per row: a row's draws depend only on its key and its probabilities.

    Returns:
      `int32[B]` token ids.
    """
    keys, first = _split_per_row(keys)
    tokens = inverse_cdf(probs, _uniform_per_row(first))
    if p >= 1.0:
        return tokens

    def cond(carry):
        round_, _, accepted, _ = carry
        return (round_ < REJECTION_ROUNDS) & ~jnp.all(accepted)

    def body(carry):
        round_, tokens, accepted, keys = carry
        keys, draw = _split_per_row(keys)
        fresh = inverse_cdf(probs, _uniform_per_row(draw))
        tokens = jnp.where(accepted, tokens, fresh)
        return round_ + 1, tokens, accepted | in_nucleus(probs, tokens, p), keys

    init = (jnp.ones((), jnp.int32), tokens, in_nucleus(probs, tokens, p), keys)
    _, tokens, accepted, keys = jax.lax.while_loop(cond, body, init)

    def explicit(_):
        nucleus = jnp.where(jnp.isfinite(top_p_mask(jnp.log(probs), p)), probs, 0.0)
        fresh = inverse_cdf(nucleus, _uniform_per_row(keys))
        return jnp.where(accepted, tokens, fresh)

    return jax.lax.cond(jnp.all(accepted), lambda _: tokens, explicit, None)


def choose_tokens(logits: jax.Array, keys: jax.Array, config: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """Picks one token per row and its log-probability under the sampling policy.

    Forbidden tokens are masked, then top-k; greedy takes the argmax, otherwise the token is drawn from the
    softmax restricted to the top-p nucleus.

    Args:
      logits: `[B, V]` raw model logits (any float dtype; computed in float32).
      keys: `key[B]`, one PRNG key per row (unused when greedy): a row's token depends only on its key and
        its logits, not on the other rows of the batch.
      config: the sampling settings.

    Returns:
      (tokens `int32[B]`, logprobs `float32[B]`), where the log-prob is log_softmax(logits / temperature) over
      the whole vocabulary (temperature 1 when greedy): the same quantity a full forward pass gives the trainer.
    """
    logits = logits.astype(jnp.float32)
    temperature = config.temperature if config.temperature > 0 else 1.0
    scaled = logits / temperature
    filtered = top_k_mask(mask_forbidden(scaled, config.forbidden_token_ids), config.top_k)
    if config.temperature == 0:
        tokens = jnp.argmax(filtered, axis=-1).astype(jnp.int32)
    else:
        tokens = sample_nucleus(jax.nn.softmax(filtered, axis=-1), config.top_p, keys)
    normalizer = jax.nn.logsumexp(scaled, axis=-1)
    logprobs = jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0] - normalizer
    return tokens, logprobs
