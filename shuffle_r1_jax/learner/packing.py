"""Packed log-prob passes: several prompt + response sequences per row, so a pass pays for real tokens only.

Padded, a micro-batch of M rollout rows costs M x (Lp + Lr) positions, the prompt bucket plus the longest
possible response, whatever the real lengths. Packed, each sequence's real tokens (its prompt without padding,
its response up to its last masked token) are laid one after another into K rows of T = Lp + Lr positions (so
any sequence fits one row): attention never crosses a sequence (segment ids), M-RoPE positions and image-token
slots are each sequence's own, and a response token's log-prob is read back from the position that predicts
it, into the padded `[M, Lr]` layout. Losses and their aggregation therefore see exactly what the padded pass
gives them.

Where the sequences go is planned on device (`plan_micro_batches`: first-fit decreasing, deterministic, the same
on every process); the host reads how many rows the fullest micro-batch needs and rounds it up to a bucket
(`packed_rows_bucket`: exact up to 16, then eight sizes per doubling, at most M), so a run compiles each pass
for a few K only.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rollout.types import Rollouts


@functools.partial(jax.tree_util.register_dataclass, data_fields=["bin", "offset"], meta_fields=["packed_rows"])
@dataclasses.dataclass(frozen=True)
class PackingPlan:
    """Where each sequence of one or more micro-batches sits in the packed rows.

    Attributes:
      bin: `int32[..., M]` packed row of each sequence, -1 for a sequence left out (no response tokens, or a row
        marked invalid).
      offset: `int32[..., M]` position of the sequence's first token in its packed row.
      packed_rows: K, the packed rows per micro-batch (static: a pass is compiled per K).
    """

    bin: jax.Array
    offset: jax.Array
    packed_rows: int


def sequence_lengths(rollouts: Rollouts, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Real prompt tokens and response extent of rollout rows.

    Args:
      rollouts: the rollout batch.
      rows: `int32[...]` rollout row ids.

    Returns:
      (prompt tokens `int32[...]` (the prompt's attention mask summed), response extent `int32[...]`: the
      position after the last masked response token, 0 when the row's mask is empty).
    """
    prompt_rows = rows // rollouts.samples_per_prompt
    prompt_lengths = rollouts.prompts.attention_mask[prompt_rows].astype(bool).sum(-1).astype(jnp.int32)
    mask = rollouts.mask[rows].astype(bool)
    positions = jnp.arange(1, mask.shape[-1] + 1, dtype=jnp.int32)
    response_extent = jnp.max(jnp.where(mask, positions, 0), axis=-1)
    return prompt_lengths, response_extent


def first_fit_decreasing(lengths: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Bins of `capacity` positions for sequences of the given lengths: longest first, each into the first bin
    with room (jittable; ties keep their order).

    Args:
      lengths: `int32[M]` sequence lengths, each <= capacity; 0 = not packed.
      capacity: positions per bin, T.

    Returns:
      (bin `int32[M]` (-1 for length 0), offset `int32[M]`, bins used `int32[]`); at most M bins are used.
    """
    count = lengths.shape[0]
    order = jnp.argsort(-lengths, stable=True)

    def place(fill, index):
        length = lengths[index]
        chosen = jnp.argmax(fill + length <= capacity).astype(jnp.int32)
        offset = fill[chosen]
        packed = length > 0
        fill = fill.at[chosen].add(jnp.where(packed, length, 0))
        return fill, (index, jnp.where(packed, chosen, -1), jnp.where(packed, offset, 0))

    fill, (indices, bins, offsets) = jax.lax.scan(place, jnp.zeros(count, jnp.int32), order)
    bin_of = jnp.zeros(count, jnp.int32).at[indices].set(bins)
    offset_of = jnp.zeros(count, jnp.int32).at[indices].set(offsets)
    return bin_of, offset_of, jnp.sum(fill > 0).astype(jnp.int32)


def plan_micro_batches(
    rollouts: Rollouts, rows: jax.Array, valid: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Packing of each micro-batch of rows into rows of T = Lp + Lr positions (jittable).

    Args:
      rollouts: the rollout batch (prompt length Lp, response length Lr).
      rows: `int32[B, M]` rollout row ids of B micro-batches.
      valid: `bool[B, M]`, False for rows the pass may leave out (their log-probs read 0); None = all count.

    Returns:
      (bin `int32[B, M]`, offset `int32[B, M]`, the most packed rows any micro-batch needs `int32[]`).
    """
    capacity = rollouts.prompts.input_ids.shape[1] + rollouts.tokens.shape[1]
    prompt_lengths, response_extent = sequence_lengths(rollouts, rows)
    lengths = jnp.where(response_extent > 0, prompt_lengths + response_extent, 0)
    if valid is not None:
        lengths = jnp.where(valid, lengths, 0)
    bins, offsets, used = jax.vmap(functools.partial(first_fit_decreasing, capacity=capacity))(lengths)
    return bins, offsets, jnp.max(used)


def packed_rows_bucket(needed: int, rows: int, shards: int = 1) -> int:
    """The packed rows K a pass is compiled for: `needed` itself up to 16, above that rounded up to eight steps per
    doubling (18, 20, ..., 32, 36, ...: at most 12.5 % over), then to a multiple of `shards` when `rows` is one
    (so packed rows split over the devices as the padded rows do), and at most `rows`.

    Args:
      needed: packed rows the fullest micro-batch needs.
      rows: M, sequences per micro-batch (K = M always fits).
      shards: the mesh's batch shards.

    Raises:
      ValueError: `needed` is above `rows`.
    """
    if needed > rows:
        raise ValueError(f"{needed} packed rows needed for a micro-batch of {rows} rows")
    step = 1 << max((max(needed, 1) - 1).bit_length() - 4, 0)
    bucket = -(-max(needed, 1) // step) * step
    if rows % shards == 0:
        bucket = -(-bucket // shards) * shards
    return min(bucket, rows)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedSequences:
    """K packed rows of T positions.

    Attributes:
      input_ids: `int32[K, T]` token ids (0 at unused positions).
      position_ids: `int32[3, K, T]` M-RoPE positions, each sequence's own.
      segment_ids: `int32[K, T]` 1 + the sequence's index in the micro-batch, 0 at unused positions.
      vision_token_slot: `int32[K, T]` merged-token slot of each image or video token, -1 elsewhere; None without
        images and videos.
    """

    input_ids: jax.Array
    position_ids: jax.Array
    segment_ids: jax.Array
    vision_token_slot: jax.Array | None

    @property
    def next_ids(self) -> jax.Array:
        """`int32[K, T]` the token at the next position (the target a position predicts), 0 at the last."""
        return jnp.pad(self.input_ids[:, 1:], ((0, 0), (0, 1)))


def pack_sequences(
    ids: jax.Array,
    positions: jax.Array,
    slots: jax.Array | None,
    keep: jax.Array,
    bins: jax.Array,
    offsets: jax.Array,
    packed_rows: int,
) -> PackedSequences:
    """Moves the kept positions of M padded sequences into their packed rows, in order.

    Args:
      ids: `int32[M, T]` padded sequences.
      positions: `int32[3, M, T]` their M-RoPE positions.
      slots: `int32[M, T]` image-token slots, or None.
      keep: `bool[M, T]` the real tokens of each sequence (its prompt tokens and response up to its extent).
      bins: `int32[M]` packed row of each sequence, -1 = left out.
      offsets: `int32[M]` start of each sequence in its packed row.
      packed_rows: K.

    Returns:
      The `PackedSequences`.
    """
    count, length = ids.shape
    keep = keep & (bins >= 0)[:, None]
    column = offsets[:, None] + jnp.cumsum(keep, axis=1, dtype=jnp.int32) - 1
    row = jnp.where(keep, bins[:, None], packed_rows)  # out of range: dropped by the scatters
    column = jnp.where(keep, column, 0)

    def scatter(values, fill):
        return jnp.full((packed_rows, length), fill, values.dtype).at[row, column].set(values, mode="drop")

    segments = jnp.broadcast_to(jnp.arange(1, count + 1, dtype=jnp.int32)[:, None], (count, length))
    return PackedSequences(
        input_ids=scatter(ids, 0),
        position_ids=jnp.stack([scatter(p, 0) for p in positions]),
        segment_ids=scatter(segments, 0),
        vision_token_slot=None if slots is None else scatter(slots, -1),
    )


def unpack_responses(
    packed: jax.Array,
    bins: jax.Array,
    offsets: jax.Array,
    prompt_lengths: jax.Array,
    response_extent: jax.Array,
    response_length: int,
) -> jax.Array:
    """Per-position values of the packed rows read back at the positions that predict each response token.

    Args:
      packed: `float[K, T]` a value per packed position (e.g. the log-prob of the next token).
      bins: `int32[M]` packed row of each sequence, -1 = left out.
      offsets: `int32[M]` start of each sequence in its packed row.
      prompt_lengths: `int32[M]` real prompt tokens of each sequence.
      response_extent: `int32[M]` response positions packed.
      response_length: Lr.

    Returns:
      `float[M, Lr]`: entry (m, j) is the value at the position predicting response token j of sequence m
      (its position minus one), 0 beyond the extent and for left-out sequences.
    """
    j = jnp.arange(response_length, dtype=jnp.int32)[None, :]
    column = offsets[:, None] + prompt_lengths[:, None] - 1 + j
    present = (bins[:, None] >= 0) & (j < response_extent[:, None])
    row = jnp.maximum(bins, 0)[:, None]
    values = packed[row, jnp.clip(column, 0, packed.shape[1] - 1)]
    return jnp.where(present, values, 0)
