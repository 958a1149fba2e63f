"""The forward under a (data=2, fsdp=2, tensor=2) mesh of 8 simulated CPU devices equals one device."""

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from shuffle_r1_jax.models.qwen2_5_vl import ModelInputs, forward_jit, load_pretrained, prepare_inputs
from shuffle_r1_jax.parallel.sharding import make_mesh
from tests.models.qwen2_5_vl.hf_reference import build_sample, pad_batch, random_pixels


def test_sharded_forward_equals_single_device(untied_checkpoint, untied_pair):
    _, path = untied_checkpoint
    _, single = untied_pair
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded, config = load_pretrained(path, mesh=mesh)
    q_kernel = sharded.layers[0].self_attn.q_proj.kernel[...]
    assert q_kernel.sharding.spec == PartitionSpec("fsdp", "tensor", None)
    assert len(q_kernel.addressable_shards) == 8 and q_kernel.addressable_shards[0].data.shape == (32, 2, 16)

    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 6, 10), (1, 4, 4), (1, 2, 2)]
    samples = [build_sample(rng, [3, g, 5 + i]) for i, g in enumerate(grids)]
    ids, mask = pad_batch(samples, "left")
    inputs = prepare_inputs(config, ids, mask, random_pixels(rng, grids), np.asarray(grids))
    expected = np.asarray(forward_jit(*nnx.split(single), inputs))
    batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    sharded_inputs = ModelInputs(
        input_ids=jax.device_put(inputs.input_ids, batch),
        attention_mask=jax.device_put(inputs.attention_mask, batch),
        position_ids=jax.device_put(inputs.position_ids, NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp")))),
        rope_deltas=jax.device_put(inputs.rope_deltas, batch),
        vision=jax.device_put(inputs.vision, batch),
        vision_token_slot=jax.device_put(inputs.vision_token_slot, batch),
    )
    got = forward_jit(*nnx.split(sharded), sharded_inputs)
    assert len(got.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5, rtol=0)
