"""Several scored prompt batches merged into one static-shape rollout batch, the one piece of code DAPO's refill
(`dynamic_sampling.fill_informative`: the informative groups of each batch) and CPPO's fill (`merge_batches`: every
group of each batch, pruned afterwards by the "cppo" selector) share.

Prompts are left-padded to the longest prompt length, image rows are stacked (padded to the widest window count),
and each prompt's image-token slots are re-pointed at its images' new place. With several processes each merges its
own rows (the processes agree on how many prompt batches to generate), and the merged batch is placed on the mesh
again.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.model import ModelInputs, VisionInputs
from shuffle_r1_jax.processing.batch import pad_left
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.rollout.types import Rollouts, ScoredRollouts


def concat_prompts(batches: list[ModelInputs], pad_id: int) -> ModelInputs:
    """Concatenate host prompt batches along the batch axis into one static-shape batch.

    Prompts are left-padded to the longest length, image rows are widened to the widest one and stacked, and
    image-token slots are re-pointed at their images' new rows (see the module docstring).

    Args:
      batches: host (numpy) `ModelInputs` prompt batches, image slots into each batch's own image rows.
      pad_id: the prompt padding token.

    Returns:
      numpy `ModelInputs` of all the batches' rows, in order.
    """
    length = max(b.input_ids.shape[1] for b in batches)
    with_images = [b for b in batches if b.vision is not None]
    slots_per_row = max((b.vision.patches.shape[1] for b in with_images), default=0) // 4
    token_slots, vision_rows, offset = [], [], 0
    for b in batches:
        slot = (
            np.full(b.input_ids.shape, -1, np.int32) if b.vision_token_slot is None else np.asarray(b.vision_token_slot)
        )
        if b.vision is not None:
            old_row = b.vision.patches.shape[1] // 4
            slot = np.where(slot >= 0, (slot // old_row + offset) * slots_per_row + slot % old_row, -1)
            widen = ((0, 0), (0, slots_per_row * 4 - b.vision.patches.shape[1]))
            vision_rows.append(
                VisionInputs(
                    np.pad(b.vision.patches, widen + ((0, 0),)),
                    np.pad(b.vision.patch_pos, widen + ((0, 0),)),
                    np.pad(b.vision.patch_valid, widen),
                )
            )
            offset += b.vision.patches.shape[0]
        token_slots.append(pad_left(slot, length, -1))
    vision = (
        VisionInputs(
            *(np.concatenate([getattr(v, f.name) for v in vision_rows]) for f in dataclasses.fields(VisionInputs))
        )
        if vision_rows
        else None
    )
    return ModelInputs(
        input_ids=np.concatenate([pad_left(np.asarray(b.input_ids), length, pad_id) for b in batches]),
        attention_mask=np.concatenate([pad_left(np.asarray(b.attention_mask), length, 0) for b in batches]),
        position_ids=np.concatenate([pad_left(np.asarray(b.position_ids), length, 0) for b in batches], axis=1),
        rope_deltas=np.concatenate([np.asarray(b.rope_deltas) for b in batches]),
        vision=vision,
        vision_token_slot=np.concatenate(token_slots) if vision is not None else None,
    )


def merge_groups(
    parts: list[tuple[ScoredRollouts, np.ndarray]], n: int, pad_id: int, placer: BatchPlacer | None = None
) -> ScoredRollouts:
    """One `ScoredRollouts` of the chosen groups of several scored batches.

    With a `placer`, each process merges its own rows and the result is placed as global arrays again (a
    collective call); without, the rollouts are one process's device arrays.

    Args:
      parts: (scored batch, this process's chosen group ids `int[k]`) pairs, in order.
      n: rollouts per prompt.
      pad_id: the prompt padding token.
      placer: places the merged batch on the mesh, or None.

    Returns:
      The merged `ScoredRollouts`, groups in the order of `parts`; its `image_features` is None, and its
      `host_prompts` is the merged host batch with a `placer` (None without).
    """
    local = np.asarray if placer is None else placer.local
    host = [
        jax.tree.map(np.asarray, s.rollouts.prompts) if s.host_prompts is None else s.host_prompts for s, _ in parts
    ]
    prompts = concat_prompts(host, pad_id)
    starts = np.cumsum([0] + [h.input_ids.shape[0] for h in host])
    prompt_rows = np.concatenate([start + groups for start, (_, groups) in zip(starts, parts)])
    rollout_rows = [(groups[:, None] * n + np.arange(n)).reshape(-1) for _, groups in parts]

    def rows_of(get, on_device: bool = False):
        return np.concatenate(
            [(local(get(s)) if on_device else np.asarray(get(s)))[r] for (s, _), r in zip(parts, rollout_rows)]
        )

    prompts = prompts.take_rows(prompt_rows)
    names = parts[0][0].parts.keys()
    place_rows = jnp.asarray if placer is None else placer.rows
    return ScoredRollouts(
        rollouts=Rollouts(
            jax.tree.map(jnp.asarray, prompts) if placer is None else placer.prompts(prompts),
            place_rows(rows_of(lambda s: s.rollouts.tokens, on_device=True)),
            place_rows(rows_of(lambda s: s.rollouts.mask, on_device=True)),
            place_rows(rows_of(lambda s: s.rollouts.sampler_logprobs, on_device=True)),
        ),
        responses=[s.responses[i] for (s, _), r in zip(parts, rollout_rows) for i in r],
        parts={k: rows_of(lambda s, k=k: s.parts[k]) for k in names},
        token_rewards=rows_of(lambda s: s.token_rewards),
        reward_failures={k: sum(s.reward_failures[k] for s, _ in parts) for k in parts[0][0].reward_failures},
        finish=rows_of(lambda s: s.finish),
        timings={k: sum(s.timings[k] for s, _ in parts) for k in parts[0][0].timings},
        host_prompts=None if placer is None else prompts,
    )


def merge_batches(
    batches: list[ScoredRollouts], n: int, pad_id: int, placer: BatchPlacer | None = None
) -> ScoredRollouts:
    """Every group of several scored batches in one `ScoredRollouts` (CPPO's fill: m prompt batches of G groups
    become one rollout batch of m * G groups).

    Args:
      batches: scored batches of this process, each of `G_i` prompt groups of n rollouts.
      n: rollouts per prompt.
      pad_id: the prompt padding token.
      placer: places the merged batch on the mesh (a collective call), or None.

    Returns:
      The merged `ScoredRollouts` of sum(G_i) groups in the order of `batches` (`merge_groups`).
    """
    return merge_groups([(s, np.arange(len(s.responses) // n)) for s in batches], n, pad_id, placer)
