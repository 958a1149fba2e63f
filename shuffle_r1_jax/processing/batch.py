"""Prompt batches: left padding to a length bucket, images and videos laid out in buckets, `ModelInputs`.

Shapes are bounded by buckets so the number of compilations stays small: the prompt length is padded to the
smallest configured length bucket that fits the longest prompt; the vision batch's rows (an image or one
temporal patch of a video each) and windows per row are padded to the smallest configured bucket that fits
(above the largest configured bucket, or with no list configured, to the next power of two).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.models.qwen2_5_vl.layout import windows_of_grid
from shuffle_r1_jax.models.qwen2_5_vl.model import ModelInputs, prepare_inputs
from shuffle_r1_jax.processing.prompts import EncodedPrompt


@dataclasses.dataclass(frozen=True)
class BucketConfig:
    """The shape buckets of prompt batches.

    A value above the largest bucket of `vision_rows` or `windows`, or any value when the list is None, is padded to
    the next power of two.

    Attributes:
      prompt_lengths: padded prompt lengths (ascending; the largest bounds max_prompt_length).
      vision_rows: row counts of the vision batch, images plus video temporal patches (None: powers of 2).
      windows: attention windows per vision row (None: powers of 2).

    Raises:
      ValueError: a list (prompt_lengths always, the others when given) is empty, not strictly ascending, or
        holds a value <= 0.
    """

    prompt_lengths: tuple[int, ...] = (256, 512, 1024, 2048)
    vision_rows: tuple[int, ...] | None = None
    windows: tuple[int, ...] | None = None

    def __post_init__(self):
        for name in ("prompt_lengths", "vision_rows", "windows"):
            value = getattr(self, name)
            if value is None and name != "prompt_lengths":
                continue
            if not value or any(int(v) <= 0 for v in value) or list(value) != sorted(set(value)):
                raise ValueError(f"buckets.{name} = {value!r} must be a non-empty ascending list of positive integers")

    @property
    def max_prompt_length(self) -> int:
        """The largest prompt length bucket: no prompt may be longer."""
        return self.prompt_lengths[-1]


def pick_bucket(value: int, buckets: Sequence[int] | None) -> int:
    """The smallest bucket >= value; beyond the list (or with none), the next power of two >= value."""
    for bucket in buckets or ():
        if bucket >= value:
            return int(bucket)
    return 1 << max(0, int(value) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class PromptExample:
    """An encoded prompt with the record's raw strings.

    Attributes:
      prompt: the encoded prompt.
      problem: the record's problem text (for logs).
      answer: the reference answer (for the reward).
      data_source: the record's data source (for logs).
      record_id: where the record comes from (file and row or line).
      record_index: the record's index in its dataset (-1 when it has none).
      reward_context: keyword arguments of the reward for this prompt: the dataset's reward columns,
        "image_sizes", one (original width, original height, resized width, resized height) per image, and
        "problem", the problem text (for model-based rewards).
    """

    prompt: EncodedPrompt
    problem: str
    answer: str
    data_source: str
    record_id: str
    record_index: int = -1
    reward_context: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """A batch of left-padded prompts.

    Attributes:
      inputs: `ModelInputs` of numpy arrays: input_ids / attention_mask `int32[B, S]` with S a length bucket,
        position_ids `int32[3, B, S]`, rope_deltas `int32[B]`, the vision layout with bucketed rows (images and
        video temporal patches) and windows, vision_token_slot `int32[B, S]`; vision and vision_token_slot are
        None when the batch has no image or video.
      prompt_lengths: `int32[B]` valid (unpadded) tokens per prompt.
      problems: the problem text per prompt, in batch order.
      answers: the reference answer per prompt, in batch order.
      data_sources: the data source per prompt, in batch order.
      record_ids: the record id per prompt, in batch order.
      record_indices: `int64[B]` each prompt's record index in its dataset (-1 when it has none).
      reward_contexts: the reward's keyword arguments per prompt, in batch order (`PromptExample.reward_context`).
    """

    inputs: ModelInputs
    prompt_lengths: np.ndarray
    problems: tuple[str, ...]
    answers: tuple[str, ...]
    data_sources: tuple[str, ...]
    record_ids: tuple[str, ...]
    record_indices: np.ndarray
    reward_contexts: tuple[Mapping[str, Any], ...]

    @property
    def batch_size(self) -> int:
        """B, the number of prompts."""
        return int(self.inputs.input_ids.shape[0])

    @property
    def length(self) -> int:
        """S, the padded prompt length (a length bucket)."""
        return int(self.inputs.input_ids.shape[1])


def pad_left(x: np.ndarray, length: int, value) -> np.ndarray:
    """`x` (`[..., L]`, L <= length) padded on the left of its last axis to `length` with `value`."""
    pad = [(0, 0)] * x.ndim
    pad[-1] = (length - x.shape[-1], 0)
    return np.pad(x, pad, constant_values=value)


def left_pad(sequences: Sequence[np.ndarray], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligns token sequences in a padded batch (left padding).

    Args:
      sequences: B sequences `int[L_i]`, each L_i <= length.
      length: the padded length.
      pad_id: the token id of the padding.

    Returns:
      (ids, mask): ids `int32[B, length]` filled with pad_id left of each sequence, mask `int32[B, length]`
      1 on the sequence's tokens.

    Raises:
      ValueError: a sequence is longer than `length`.
    """
    ids = np.full((len(sequences), length), pad_id, np.int32)
    mask = np.zeros((len(sequences), length), np.int32)
    for row, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"prompt {row} has {len(seq)} tokens, longer than the padded length {length}")
        if len(seq):
            ids[row, length - len(seq) :] = seq
            mask[row, length - len(seq) :] = 1
    return ids, mask


def collate_prompts(
    examples: Sequence[PromptExample], config: Qwen25VLConfig, buckets: BucketConfig, pad_token_id: int
) -> PromptBatch:
    """Left-pads the prompts to a length bucket and lays out all their images and videos for one vision call.

    Args:
      examples: the encoded prompts, in batch order.
      config: the model config (vision settings, image and video token ids).
      buckets: the length, vision-row and window buckets.
      pad_token_id: the token id of the left padding.

    Returns:
      The `PromptBatch`; its length is the smallest length bucket that fits the longest prompt.

    Raises:
      ValueError: the batch is empty, or a prompt is longer than the largest length bucket (the data pipeline
        filters those out beforehand as "prompt_too_long" records).
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    prompts = [e.prompt for e in examples]
    lengths = np.asarray([len(p.input_ids) for p in prompts], np.int32)
    if lengths.max() > buckets.max_prompt_length:
        raise ValueError(
            f"a prompt has {int(lengths.max())} tokens, over the largest length bucket {buckets.max_prompt_length}"
        )
    length = pick_bucket(int(lengths.max()), buckets.prompt_lengths)
    ids, mask = left_pad([p.input_ids for p in prompts], length, pad_token_id)
    images = np.concatenate([p.image_grid_thw.reshape(-1, 3) for p in prompts]).astype(np.int64)
    videos = np.concatenate([p.video_grid_thw.reshape(-1, 3) for p in prompts]).astype(np.int64)
    grids = np.concatenate([images, videos])
    vision = {}
    if len(images):
        vision.update(
            pixel_values=np.concatenate([p.pixel_values for p in prompts if len(p.pixel_values)]),
            image_grid_thw=images,
        )
    if len(videos):
        vision.update(
            pixel_values_videos=np.concatenate([p.pixel_values_videos for p in prompts if len(p.video_grid_thw)]),
            video_grid_thw=videos,
            second_per_grid_ts=np.concatenate([p.second_per_grid_ts for p in prompts]),
        )
    if len(grids):
        windows = max(int(np.prod(windows_of_grid(int(h), int(w), config.vision))) for _, h, w in grids)
        vision.update(
            rows_bucket=pick_bucket(int(grids[:, 0].sum()), buckets.vision_rows),
            windows_bucket=pick_bucket(windows, buckets.windows),
        )
    inputs = prepare_inputs(config, ids, mask, **vision)
    return PromptBatch(
        inputs=inputs,
        prompt_lengths=lengths,
        problems=tuple(e.problem for e in examples),
        answers=tuple(e.answer for e in examples),
        data_sources=tuple(e.data_source for e in examples),
        record_ids=tuple(e.record_id for e in examples),
        record_indices=np.asarray([e.record_index for e in examples], np.int64),
        reward_contexts=tuple(e.reward_context for e in examples),
    )
