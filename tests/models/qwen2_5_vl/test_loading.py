"""load_pretrained: sharded safetensors, in-memory tensor names, clear errors; HF <-> ours tensor round trip."""

import json
import shutil

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError
from shuffle_r1_jax.models.qwen2_5_vl import forward_logits, load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.params import hf_to_ours, ours_to_hf, tensor_rules
from tests.models.qwen2_5_vl.hf_reference import build_sample, hf_logits, pad_batch, random_pixels


def _rewrite(src, dst, rename=lambda n: n, drop=(), reshape=None, shards=1):
    """Copies a checkpoint directory, renaming/dropping/reshaping tensors and splitting it into shards."""
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = {rename(k): v for k, v in load_file(src / "model.safetensors").items() if k not in drop}
    if reshape:
        name, shape = reshape
        tensors[name] = np.zeros(shape, np.float32)
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, dst / "model.safetensors")
        return
    weight_map = {}
    for i, chunk in enumerate(np.array_split(np.array(names), shards)):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in chunk}, dst / file)
        weight_map.update({n: file for n in chunk})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _in_memory_name(name):
    if name.startswith("visual."):
        return "model." + name
    if name.startswith("model."):
        return "model.language_model." + name[len("model.") :]
    return name


def test_sharded_checkpoint_with_in_memory_names_gives_the_same_logits(untied_checkpoint, tmp_path):
    hf_model, path = untied_checkpoint
    _rewrite(path, tmp_path, rename=_in_memory_name, shards=3)
    ours, _ = load_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    grids = [(1, 6, 10)]
    ids, mask = pad_batch([build_sample(rng, [4, grids[0], 5])], "left")
    pixels = random_pixels(rng, grids)
    ref = hf_logits(hf_model, ids, mask, pixels, np.asarray(grids))
    got = np.asarray(forward_logits(ours, ids, mask, pixels, np.asarray(grids)))
    assert np.abs(ref - got).max() <= 1e-4


def test_missing_tensor_is_named(untied_checkpoint, tmp_path):
    _, path = untied_checkpoint
    _rewrite(path, tmp_path, drop=("model.layers.1.self_attn.k_proj.bias",))
    with pytest.raises(CheckpointError, match="'model.layers.1.self_attn.k_proj.bias' is missing"):
        load_pretrained(tmp_path)


def test_untied_model_without_lm_head_is_an_error(untied_checkpoint, tmp_path):
    _, path = untied_checkpoint
    _rewrite(path, tmp_path, drop=("lm_head.weight",))
    with pytest.raises(CheckpointError, match="'lm_head' is missing|'lm_head.weight' is missing"):
        load_pretrained(tmp_path)


def test_misshaped_tensor_names_expected_and_found(untied_checkpoint, tmp_path):
    _, path = untied_checkpoint
    _rewrite(path, tmp_path, reshape=("visual.blocks.2.attn.qkv.weight", (96, 30)))
    with pytest.raises(
        CheckpointError, match=r"'visual.blocks.2.attn.qkv.weight': expected shape \(96, 32\), found \(96, 30\)"
    ):
        load_pretrained(tmp_path)


def test_no_weights_is_a_clear_error(untied_checkpoint, tmp_path):
    _, path = untied_checkpoint
    shutil.copy(path / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_pretrained(tmp_path)


def test_every_tensor_round_trips_bit_exactly(untied_checkpoint, untied_pair):
    _, path = untied_checkpoint
    _, ours = untied_pair
    tensors = load_file(path / "model.safetensors")
    state = dict(nnx.to_flat_state(nnx.state(ours)))
    rules = tensor_rules(ours.config)
    assert {r.hf_name for r in rules} == set(tensors)
    for rule in rules:
        original = tensors[rule.hf_name]
        value = np.asarray(state[rule.path][...])
        np.testing.assert_array_equal(value, hf_to_ours(rule, original, value.shape))
        np.testing.assert_array_equal(ours_to_hf(rule, value, original.shape), original)
