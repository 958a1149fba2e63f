"""Analytic model FLOPs of Qwen2.5-VL passes (for model-FLOP utilisation): matmuls count 2 FLOPs per
multiply-add; norms, activations and softmax are left out."""

from __future__ import annotations

from shuffle_r1_jax.models.qwen2_5_vl.config import TextConfig, VisionConfig


def decoder_matmul_params(t: TextConfig) -> int:
    """Matmul parameters of the decoder layers (q, k, v, o, gate, up, down), embeddings and norms excluded."""
    attention = t.hidden_size * (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim
    attention += t.num_attention_heads * t.head_dim * t.hidden_size
    return t.num_hidden_layers * (attention + 3 * t.hidden_size * t.intermediate_size)


def decoder_forward_flops(t: TextConfig, rows: int, seq: int, logit_positions: int) -> int:
    """Forward FLOPs of the decoder layers and the output projection.

    The attention term counts every query/key pair of the `seq` x `seq` square (no causal discount).

    Args:
      t: the text config.
      rows: sequences in the batch.
      seq: positions per sequence.
      logit_positions: positions per row whose logits are computed.

    Returns:
      The FLOP count.
    """
    dense = 2 * decoder_matmul_params(t) * rows * seq
    attention = 4 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * seq * seq * rows
    logits = 2 * t.hidden_size * t.vocab_size * rows * logit_positions
    return dense + attention + logits


def vision_forward_flops(v: VisionConfig, images: int, slots: int) -> int:
    """Forward FLOPs of the vision tower: patch embedding, blocks and merger.

    Args:
      v: the vision config.
      images: laid-out image rows.
      slots: patch slots per row, padding included.

    Returns:
      The FLOP count.
    """
    h, tokens = v.hidden_size, images * slots
    full_blocks = sum(1 for i in v.fullatt_block_indexes if i < v.depth)
    block_dense = 2 * (4 * h * h + 3 * h * v.intermediate_size) * tokens
    attention = 4 * h * tokens * (full_blocks * slots + (v.depth - full_blocks) * v.window_patches)
    merged_width = v.merge_unit * h
    merger = 2 * (merged_width * merged_width + merged_width * v.out_hidden_size) * (tokens // v.merge_unit)
    return 2 * v.patch_dim * h * tokens + v.depth * block_dense + attention + merger
