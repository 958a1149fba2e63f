"""HF -> orbax conversion: the converted directory loads with the same parameters, sharded on a mesh too."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from shuffle_r1_jax.models.qwen2_5_vl import forward_logits, load_pretrained
from shuffle_r1_jax.parallel.sharding import make_mesh
from tests.models.qwen2_5_vl.hf_reference import build_sample, hf_logits, pad_batch, random_pixels


def test_convert_then_load_gives_the_hf_logits_and_restores_sharded(untied_checkpoint, tmp_path):
    hf_model, path = untied_checkpoint
    out = tmp_path / "orbax"
    script = Path(__file__).resolve().parents[2] / "scripts" / "convert_hf_to_orbax.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--hf_dir",
            str(path),
            "--out",
            str(out),
            "--dtype",
            "float32",
            "--mesh",
            "2,2,2",
        ],  # a sharded conversion over the 8 simulated devices (XLA_FLAGS is inherited)
        capture_output=True,
        text=True,
        check=True,
    )
    assert "peak host memory" in result.stdout and (out / "params").is_dir() and (out / "config.json").exists()

    original, _ = load_pretrained(path)
    converted, config = load_pretrained(out)
    for a, b in zip(jax.tree.leaves(nnx.state(original, nnx.Param)), jax.tree.leaves(nnx.state(converted, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12)]
    ids, mask = pad_batch([build_sample(rng, [3, grids[0], 4])], "left")
    pixels = random_pixels(rng, grids)
    expected = hf_logits(hf_model, ids, mask, pixels, np.asarray(grids))
    np.testing.assert_allclose(
        np.asarray(forward_logits(converted, ids, mask, pixels, np.asarray(grids))), expected, atol=1e-4
    )

    sharded, _ = load_pretrained(out, mesh=make_mesh(data=2, fsdp=2, tensor=2))
    kernel = sharded.layers[1].self_attn.q_proj.kernel[...]
    assert kernel.sharding.spec == PartitionSpec("fsdp", "tensor", None) and len(kernel.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(converted.layers[1].self_attn.q_proj.kernel[...]))


def test_hf_to_orbax_to_hf_round_trip_is_bit_exact(untied_checkpoint, tmp_path):
    import torch
    from safetensors.numpy import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint

    hf_model, path = untied_checkpoint
    script = Path(__file__).resolve().parents[2] / "scripts" / "convert_hf_to_orbax.py"
    subprocess.run(
        [sys.executable, str(script), "--hf_dir", str(path), "--out", str(tmp_path / "orbax"), "--dtype", "float32"],
        capture_output=True,
        check=True,
    )
    converted, _ = load_pretrained(tmp_path / "orbax")
    save_hf_checkpoint(converted, tmp_path / "hf")
    original, exported = load_file(path / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert set(original) == set(exported)
    for name, tensor in original.items():
        np.testing.assert_array_equal(exported[name], tensor, err_msg=name)
    reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    rng = np.random.default_rng(1)
    grids = [(1, 6, 10)]
    ids, mask = pad_batch([build_sample(rng, [2, grids[0], 5])], "left")
    pixels = random_pixels(rng, grids)
    np.testing.assert_array_equal(
        hf_logits(reloaded, ids, mask, pixels, np.asarray(grids)),
        hf_logits(hf_model, ids, mask, pixels, np.asarray(grids)),
    )
    assert torch.is_tensor(next(reloaded.parameters()))
