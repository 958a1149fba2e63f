"""The `mesh` and `distributed` config sections: presets, "-1 = the rest", and errors that name key and value."""

import types

import jax
import pytest

from shuffle_r1_jax.parallel.distributed import DistributedSpec, wants_initialize
from shuffle_r1_jax.parallel.mesh_config import PRESETS, MeshConfigError, MeshSpec, build_mesh, mesh_shape
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.defaults import base_config


def config(**edits):
    c = base_config()
    for key, value in edits.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


@pytest.mark.parametrize(
    "sizes, expected",
    [((1, -1, 1), (1, 8, 1)), ((2, -1, 2), (2, 2, 2)), ((-1, 2, 1), (4, 2, 1)), ((2, 2, 2), (2, 2, 2))],
)
def test_the_rest_of_the_devices(sizes, expected):
    c = config(rl__algorithm="grpo", mesh__data=sizes[0], mesh__fsdp=sizes[1], mesh__tensor=sizes[2])
    assert settings.resolve(c, check_inputs=False).mesh_shape == expected


def test_presets_name_their_sizes():
    assert mesh_shape(MeshSpec(preset="gpu_8"), 8) == PRESETS["gpu_8"] == (1, 4, 2)
    assert mesh_shape(MeshSpec(preset="tpu_v4_32"), 16) == (1, 4, 4)
    assert mesh_shape(MeshSpec(preset="tpu_v5p_64"), 32) == (2, 4, 4)
    assert mesh_shape(MeshSpec(preset="gpu_32"), 32) == (1, 4, 8)
    assert mesh_shape(MeshSpec(preset="gpu_64"), 64) == (1, 8, 8)
    assert mesh_shape(MeshSpec(preset="tpu_v5p_128"), 64) == (1, 16, 4)
    assert mesh_shape(MeshSpec(preset="single_gpu"), 1) == (1, 1, 1)
    mesh = build_mesh(MeshSpec(preset="gpu_8"))
    assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}


def test_a_one_device_mesh_by_config():
    mesh = build_mesh(MeshSpec(data=1, fsdp=1, tensor=1, num_devices=1))
    assert mesh.devices.size == 1 and jax.device_count() == 8


@pytest.mark.parametrize(
    "edits, message",
    [
        (dict(mesh__fsdp=0), r"mesh.fsdp = 0 must be a positive size or -1"),
        (dict(mesh__tensor=-3), r"mesh.tensor = -3 must be a positive size or -1"),
        (dict(mesh__data=-1), r"mesh.data and mesh.fsdp are both -1"),
        (
            dict(mesh__data=3),
            r"other axes' product 3 \(mesh.data = 3, mesh.fsdp = -1, mesh.tensor = 1\) does not divide the 8 devices",
        ),
        (
            dict(mesh__data=2, mesh__fsdp=2, mesh__tensor=1),
            r"mesh.data = 2, mesh.fsdp = 2, mesh.tensor = 1 is a mesh of 4 devices, but this run has 8",
        ),
        (
            dict(mesh__preset="tpu_v4_32"),
            r"mesh.preset = 'tpu_v4_32' is a 1 x 4 x 4 mesh of 16 devices, but this run has 8",
        ),
        (dict(mesh__preset="gpu_8", mesh__tensor=4), r"mesh.preset = 'gpu_8' sets the axis sizes"),
        (dict(mesh__preset="h100"), r"mesh.preset = 'h100' is unknown"),
        (dict(mesh__num_devices=9), r"mesh.num_devices = 9 must be in \[0, 8\]"),
        (dict(distributed__initialize="sometimes"), r"distributed.initialize = 'sometimes'"),
        (
            dict(distributed__num_processes=2, distributed__process_id=2),
            r"distributed.process_id = 2 must be in \[0, distributed.num_processes = 2\)",
        ),
        (
            dict(data__rollout_batch_prompts=3, rollout__n=2, train__minibatch_prompts=1),
            r"3 x 2 = 6 rows\) does not divide over the 8 batch shards of the mesh \(mesh data x fsdp = 1 x 8\)",
        ),
        (
            dict(
                data__rollout_batch_prompts=3,
                rollout__n=2,
                train__minibatch_prompts=1,
                mesh__data=3,
                mesh__fsdp=1,
                mesh__num_devices=3,
            ),
            None,
        ),
    ],
)
def test_config_errors_name_the_key_and_value(edits, message):
    c = config(**({"rl__algorithm": "grpo"} | edits))
    if message is None:
        settings.resolve(c, check_inputs=False)
        return
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve(c, check_inputs=False)


def test_prompts_must_divide_over_processes_and_batch_shards(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(settings.ConfigError, match=r"data.rollout_batch_prompts = 5 does not divide over 2 processes"):
        settings.resolve(
            config(rl__algorithm="grpo", data__rollout_batch_prompts=5, rollout__n=8, train__minibatch_prompts=1),
            check_inputs=False,
        )
    with pytest.raises(
        settings.ConfigError, match=r"data.rollout_batch_prompts = 4 does not divide over the 8 batch shards"
    ):
        settings.resolve(
            config(rl__algorithm="grpo", data__rollout_batch_prompts=4, rollout__n=4, train__minibatch_prompts=2),
            check_inputs=False,
        )


def test_a_tensor_group_may_not_span_processes():
    devices = [types.SimpleNamespace(id=i, process_index=i // 4) for i in range(8)]
    with pytest.raises(MeshConfigError, match="a tensor group of 8 devices spans processes"):
        build_mesh(MeshSpec(data=1, fsdp=1, tensor=8), devices)
    with pytest.raises(MeshConfigError, match="a subset of the devices is for one process only"):
        build_mesh(MeshSpec(data=1, fsdp=1, tensor=1, num_devices=1), devices)


@pytest.mark.parametrize(
    "spec, preset, environ, expected",
    [
        (DistributedSpec(), "", {}, False),
        (DistributedSpec(), "", {"SLURM_NTASKS": "4"}, True),
        (DistributedSpec(), "", {"SLURM_NTASKS": "1"}, False),
        (DistributedSpec(), "", {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"}, True),
        (DistributedSpec(), "tpu_v4_32", {}, True),
        (DistributedSpec(coordinator_address="localhost:1234"), "", {}, True),
        (DistributedSpec(initialize="never"), "tpu_v4_32", {"SLURM_NTASKS": "4"}, False),
        (DistributedSpec(initialize="always"), "", {}, True),
    ],
)
def test_when_auto_starts_jax_distributed(spec, preset, environ, expected):
    assert wants_initialize(spec, preset, environ) is expected


def test_sharding_rules_are_config_data():
    """`mesh.rules` reaches the settings checked, and decides where each named parameter dimension goes."""
    from flax import nnx

    from shuffle_r1_jax.models.qwen2_5_vl import abstract_model
    from shuffle_r1_jax.parallel.sharding import DEFAULT_RULES, param_shardings
    from tests.perf.test_memory_plan import tiny_model_config

    replicated_embed = tuple((name, None if name == "embed" else axes) for name, axes in DEFAULT_RULES)
    run = settings.resolve(config(rl__algorithm="grpo", mesh__rules=replicated_embed), check_inputs=False)
    assert run.mesh.rules == replicated_embed
    state = nnx.state(abstract_model(tiny_model_config()), nnx.Param)
    mesh = build_mesh(run.mesh)
    default = param_shardings(state, mesh)["embed_tokens"]["embedding"].spec
    custom = param_shardings(state, mesh, run.mesh.rules)["embed_tokens"]["embedding"].spec
    assert tuple(default) == (None, "fsdp") and tuple(custom) in ((None, None), ())


@pytest.mark.parametrize(
    "rules, message",
    [
        ((("vocab", "tensr"),), r"unknown mesh axes \['tensr'\]"),
        ((("vocab", "tensor"), ("vocab", None)), "names a logical axis twice"),
        ((("vocab",),), "must be a pair"),
    ],
)
def test_bad_sharding_rules_are_named(rules, message):
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve(config(rl__algorithm="grpo", mesh__rules=rules), check_inputs=False)
