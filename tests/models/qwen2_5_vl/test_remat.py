"""Gradient checkpointing of the decoder layers (`Qwen25VL(remat=...)`): what the backward pass keeps, and the
memory XLA assigns to a gradient.

Residuals are read from the `jax.vjp` closure on abstract inputs (no compile, no compiler in the loop). The
compile-time check uses the CPU's memory-optimized scheduler: the CPU default (concurrency-optimized,
breadth-first) runs each layer's recomputation next to its forward pass, so under it remat "full" and "none"
compile to the same temporary bytes (BUILD_NOTES.md, "Memory plan").
"""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from shuffle_r1_jax.demo.tiny_checkpoint import PRESETS
from shuffle_r1_jax.models.qwen2_5_vl import Qwen25VLConfig, abstract_model
from shuffle_r1_jax.models.qwen2_5_vl.config import TextConfig
from shuffle_r1_jax.models.qwen2_5_vl.text import causal_mask

BATCH, SEQ, HIDDEN = 2, 256, 128
MEMORY_OPTIMIZED = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _config(layers: int) -> Qwen25VLConfig:
    """A text decoder big enough that attention scores dominate its activations (4 heads x SEQ^2)."""
    text = TextConfig(
        vocab_size=256,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        mrope_section=(4, 6, 6),
    )
    return Qwen25VLConfig(
        text=text,
        vision=dataclasses.replace(PRESETS["test"].vision, out_hidden_size=HIDDEN),
        tie_word_embeddings=False,
        image_token_id=250,
        video_token_id=251,
        vision_start_token_id=252,
        vision_end_token_id=253,
        bos_token_id=254,
        eos_token_id=255,
    )


def _decoder_loss(layers: int, remat: str, batch: int = BATCH):
    """(loss, abstract args, abstract model): sum of squares of `decode` over fp32 parameters and inputs."""
    model = abstract_model(_config(layers), remat=remat)
    graphdef, state = nnx.split(model, nnx.Param)

    def loss(params, embeds, positions, attention_mask):
        hidden, _ = nnx.merge(graphdef, params).decode(embeds, positions, causal_mask(attention_mask))
        return jnp.sum(hidden**2)

    args = (
        nnx.to_pure_dict(state),
        jax.ShapeDtypeStruct((batch, SEQ, HIDDEN), jnp.float32),
        jax.ShapeDtypeStruct((3, batch, SEQ), jnp.int32),
        jax.ShapeDtypeStruct((batch, SEQ), jnp.int32),
    )
    return loss, args, model


def _residual_bytes(layers: int, remat: str) -> int:
    """Bytes of everything the backward pass of `_decoder_loss` keeps (parameters and inputs included)."""
    loss, args, _ = _decoder_loss(layers, remat)
    leaves = jax.eval_shape(lambda *a: jax.tree.leaves(jax.vjp(loss, *a)[1]), *args)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)


def test_full_remat_keeps_only_each_layer_input():
    """One more layer adds exactly its parameters and its [B, S, H] input to the residuals with remat "full";
    without remat it adds its activations (attention scores among them), several times more."""
    _, _, model = _decoder_loss(1, "full")
    layer_params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model.layers[0], nnx.Param)))
    layer_input = BATCH * SEQ * HIDDEN * 4
    full = _residual_bytes(3, "full") - _residual_bytes(2, "full")
    none = _residual_bytes(3, "none") - _residual_bytes(2, "none")
    assert full == layer_params + layer_input
    assert none - layer_params > 8 * layer_input


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the scheduler option is the CPU compiler's")
def test_full_remat_lowers_compiled_temp_bytes():
    """With the memory-optimized CPU scheduler, remat "full" compiles to well under half the temporary bytes of
    no remat, and "dots" in between."""

    def temp_bytes(remat: str) -> int:
        loss, args, _ = _decoder_loss(4, remat, batch=1)
        compiled = jax.jit(jax.grad(loss)).lower(*args).compile(compiler_options=MEMORY_OPTIMIZED)
        return compiled.memory_analysis().temp_size_in_bytes

    none, dots, full = temp_bytes("none"), temp_bytes("dots"), temp_bytes("full")
    assert full < 0.5 * none
    assert full < dots < none
