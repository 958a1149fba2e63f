"""Merging scored prompt batches into one rollout batch: every prompt keeps its logits; CPPO's fill of the update
batch (two pruned prompt batches give the full batch of one)."""

import jax
import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.rl.advantages import advantages_from_scores, cppo_fill_batches, cppo_num_kept
from shuffle_r1_jax.rl.selection import SelectionConfig, rows_per_prompt, select_update_rows
from shuffle_r1_jax.rollout.merge import concat_prompts, merge_batches
from tests.models.qwen2_5_vl.hf_reference import build_sample, pad_batch, random_pixels
from tests.rollout.fakes import fake_scored


def _logits(model, inputs):
    i = jax.tree.map(jnp.asarray, inputs)
    return np.asarray(model(i.input_ids, i.attention_mask, i.position_ids, i.vision, i.vision_token_slot))


def test_concatenated_prompt_batches_give_each_prompt_its_own_logits(untied_pair):
    _, model = untied_pair
    rng = np.random.default_rng(0)
    grids_a, grids_b = [(1, 4, 4)], [(1, 8, 12), (1, 6, 10)]
    ids_a, mask_a = pad_batch([build_sample(rng, [2, grids_a[0], 3]), build_sample(rng, [5])], "left")
    ids_b, mask_b = pad_batch([build_sample(rng, [3, grids_b[0], 4]), build_sample(rng, [1, grids_b[1], 9])], "left")
    a = prepare_inputs(model.config, ids_a, mask_a, random_pixels(rng, grids_a), np.asarray(grids_a))
    b = prepare_inputs(model.config, ids_b, mask_b, random_pixels(rng, grids_b), np.asarray(grids_b))
    text_only = prepare_inputs(model.config, *pad_batch([build_sample(rng, [7])], "left"))
    merged = concat_prompts([a, text_only, b], pad_id=0)
    got = _logits(model, merged)
    offset = 0
    for part in (a, text_only, b):
        expected = _logits(model, part)
        rows = slice(offset, offset + part.input_ids.shape[0])
        length = part.input_ids.shape[1]
        np.testing.assert_allclose(
            got[rows, -length:][part.attention_mask == 1], expected[part.attention_mask == 1], atol=1e-5
        )
        offset += part.input_ids.shape[0]


def test_cppo_fill_keeps_the_top_two_of_each_group_of_both_batches_and_fills_the_update_batch():
    """n = 4, prune 0.5: k = 2 kept per group, so m = 2 prompt batches of P = 2 prompts are merged and the update
    batch has 2 P k = P n = 8 rows, the two largest |A| of each of the four groups (by hand: |s - mean| ranks as
    |A| = |s - mean| / std does)."""
    n, prune = 4, 0.5
    assert (cppo_num_kept(n, prune), cppo_fill_batches(n, prune)) == (2, 2)
    first = fake_scored([0.9, 0.1, 0.5, 0.4, 0.5, 0.0, 0.45, 1.0], n=n)  # group 0: [0, 1]; group 1: [3, 1]
    second = fake_scored([0.2, 0.3, 1.0, 0.1, 0.6, 0.5, 0.55, 0.0], n=n, first_row=100)  # [2, 3]; [3, 0]
    second.token_rewards[:, 1] = np.arange(8)
    merged = merge_batches([first, second], n, pad_id=0)
    assert merged.rollouts.tokens.shape == (16, 3) and merged.rollouts.prompts.input_ids.shape[0] == 4
    np.testing.assert_array_equal(merged.parts["overall"][8:], second.parts["overall"])
    np.testing.assert_array_equal(merged.token_rewards, np.concatenate([first.token_rewards, second.token_rewards]))

    advantages = advantages_from_scores("grpo", merged.parts["overall"], merged.rollouts.mask, n)
    cfg = SelectionConfig(selection="cppo", group_size=n, cppo_prune=prune)
    rows, valid, _ = select_update_rows(advantages.rollout, cfg, jax.random.key(0))
    expected = [0, 1, 4 + 3, 4 + 1, 8 + 2, 8 + 3, 12 + 3, 12 + 0]
    np.testing.assert_array_equal(rows, expected)
    assert valid.all() and len(rows) == 4 * rows_per_prompt(cfg) == 2 * n  # P n rows: GRPO's update batch
    # each selected row is the rollout its batch generated
    np.testing.assert_array_equal(np.asarray(merged.rollouts.tokens)[rows, 0], [0, 1, 7, 5, 102, 103, 107, 104])
