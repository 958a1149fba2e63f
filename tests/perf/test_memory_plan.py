"""The memory planner on the tiny model over a (2, 2, 2) mesh of simulated devices, from a trainer config: its
per-device figures against independent computations, remat's effect on the train step, and failures reported
rather than raised."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from shuffle_r1_jax.demo.tiny_checkpoint import PRESETS
from shuffle_r1_jax.models.qwen2_5_vl import Qwen25VLConfig, abstract_model
from shuffle_r1_jax.models.qwen2_5_vl.value_model import abstract_value_model
from shuffle_r1_jax.parallel.sharding import make_mesh, param_shardings
from shuffle_r1_jax.perf import memory_plan as mp
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.defaults import base_config

DATA = mp.DataShapes(images_per_prompt=1, image_tokens=16)


def tiny_model_config() -> Qwen25VLConfig:
    """The tests' tiny model (checkpoint preset "test") with a 512-token vocabulary."""
    preset = PRESETS["test"]
    return Qwen25VLConfig(
        text=dataclasses.replace(preset.text, vocab_size=512),
        vision=preset.vision,
        tie_word_embeddings=preset.tie_word_embeddings,
        image_token_id=500,
        video_token_id=501,
        vision_start_token_id=502,
        vision_end_token_id=503,
        bos_token_id=504,
        eos_token_id=505,
    )


def small_settings(**edits):
    """8 prompts x n = 4 (PTS keeps one pair), 64 + 64 tokens, 4-prompt mini-batches of 8 rows, bf16, on 2x2x2."""
    c = base_config()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
    c.model.dtype = c.model.param_dtype = "bfloat16"
    c.model.remat = "full"
    c.data.rollout_batch_prompts, c.rollout.n = 8, 4
    c.data.max_prompt_length, c.data.prompt_buckets, c.rollout.max_new_tokens = 64, (64,), 64
    c.train.minibatch_prompts, c.train.micro_batch_rows = 4, 8
    c.rl.abs_rounds = 4
    for key, value in edits.items():
        section, name = key.split("__")
        c[section][name] = value
    return settings.resolve(c, check_inputs=False)


def planned(programs, **edits):
    return mp.plan_memory(
        small_settings(**edits), tiny_model_config(), model_name="tiny", data=DATA, programs=programs, log=_quiet
    )


def _quiet(_line: str) -> None:
    pass


def _independent_param_bytes(dtype, build=abstract_model) -> int:
    """Sum over the parameters of `build(config)` of size * itemsize / (product of the mesh axes its spec names)."""
    mesh = make_mesh(2, 2, 2)
    state = nnx.state(build(tiny_model_config(), dtype=dtype, param_dtype=dtype), nnx.Param)
    total = 0
    for var, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(param_shardings(state, mesh))):
        names = [a for entry in sharding.spec if entry for a in ((entry,) if isinstance(entry, str) else entry)]
        ways = math.prod(mesh.shape[a] for a in names)
        assert math.prod(var.shape) % ways == 0
        total += math.prod(var.shape) * jnp.dtype(var.dtype).itemsize // ways
    return total


@pytest.fixture(scope="module")
def train_plans():
    """The train step planned with remat "full" and "none" (compiled once for the module)."""
    return {remat: planned(("train_step",), model__remat=remat) for remat in ("full", "none")}


def test_parameter_and_state_bytes_match_an_independent_count(train_plans):
    plan = train_plans["full"]
    assert plan.params == _independent_param_bytes(jnp.bfloat16)
    # AdamW keeps two moments per trained (text) parameter, in the parameters' dtype; the vision tower is frozen
    assert 0 < plan.opt_state < 2 * plan.params
    fp32 = planned((), model__param_dtype="float32")
    assert fp32.params == _independent_param_bytes(jnp.float32) == 2 * plan.params


def test_train_step_figures(train_plans):
    full, none = train_plans["full"].program("train_step"), train_plans["none"].program("train_step")
    for plan, program in ((train_plans["full"], full), (train_plans["none"], none)):
        s = program.stats
        assert s is not None, program.error
        # resident: parameters, optimizer state, rollout batch and targets, plus the mini-batch's row ids (int32)
        # and valid flags (bool), replicated; the passes are planned padded (their largest form: no packing plan);
        # the program's arguments are those of them it reads
        rows = 4 * 2  # minibatch_prompts x rows kept per prompt (PTS keeps 1 pair of n = 4)
        assert program.resident == plan.params + plan.opt_state + plan.rollouts + rows * 4 + rows
        assert plan.params + plan.opt_state < s.argument_size_in_bytes <= program.resident
        assert s.temp_size_in_bytes > 0 and program.phase_peak >= program.peak >= s.argument_size_in_bytes
        # parameters and optimizer state are donated and come back in place
        assert s.alias_size_in_bytes >= plan.params + plan.opt_state
    # without rematerialisation every layer's intermediates live until the backward pass
    assert none.stats.temp_size_in_bytes > full.stats.temp_size_in_bytes


def test_a_program_that_does_not_compile_is_reported():
    # the cuDNN attention kernel has no CPU lowering: the plan says so instead of raising
    failed = planned(("sampler_prefill",), model__attention_impl="cudnn")
    program = failed.program("sampler_prefill")
    assert program.stats is None and program.error
    assert "did not compile" in mp.format_plan(failed)


def test_sampler_programs_compile_per_call_and_the_cache_scales_with_it():
    programs = ("image_features", "sampler_prefill", "sampler_decode")
    whole = planned(programs)
    chunked = planned(programs, rollout__prompts_per_sampler_call=4)
    for each in (whole, chunked):
        assert all(each.program(name).stats is not None for name in programs), [p.error for p in each.programs]
    # the KV caches: layers x 2 (k, v) x (prompts x 64 prompt positions + prompts x n rows x 64 response positions)
    # x kv heads x head_dim x 2 bytes (bf16), with prompts and rows over the 4 batch shards and kv heads over the
    # 2 tensor shards; plus one int32 fill count per layer
    t = tiny_model_config().text
    for each, prompts in ((whole, 8), (chunked, 4)):
        positions = prompts // 4 * 64 + prompts * 4 // 4 * 64
        heads = t.num_key_value_heads // 2 if t.num_key_value_heads % 2 == 0 else t.num_key_value_heads
        assert each.kv_cache == t.num_hidden_layers * 2 * positions * heads * t.head_dim * 2 + 4 * t.num_hidden_layers
    # the vision pass is the whole batch's either way; the decode loop's peak follows the cache
    assert chunked.program("image_features").peak == whole.program("image_features").peak
    assert chunked.program("sampler_decode").peak < whole.program("sampler_decode").peak
    with pytest.raises(settings.ConfigError, match=r"prompts_per_sampler_call = 2 must be a multiple of the 4 batch"):
        small_settings(rollout__prompts_per_sampler_call=2)


def test_a_critic_is_planned_beside_the_policy():
    """ppo: the critic's parameters (the policy's less lm_head and the vision tower, plus the value head) and its
    AdamW moments stay resident in every phase; its two programs compile and donate its state."""
    plan = planned(("critic_values", "critic_step"), rl__algorithm="ppo")
    policy = planned((), rl__algorithm="grpo")
    assert plan.critic_params == _independent_param_bytes(jnp.bfloat16, abstract_value_model) < plan.params
    # AdamW's two moments of every critic parameter (none is frozen: it has no vision tower), and its count
    assert 2 * plan.critic_params <= plan.critic_opt_state <= 2 * plan.critic_params + 64
    assert policy.critic_params == policy.critic_opt_state == 0 and policy.programs == []
    critic_state = plan.critic_params + plan.critic_opt_state
    for name in ("critic_values", "critic_step"):
        program = plan.program(name)
        assert program.stats is not None, program.error
        assert program.resident >= plan.params + plan.opt_state + critic_state
    step = plan.program("critic_step").stats
    assert step.alias_size_in_bytes >= plan.critic_params + plan.critic_opt_state
    text = mp.format_plan(plan)
    assert "| critic parameters |" in text and "| critic_step |" in text


def test_cppo_fill_plans_the_merged_rollout_batch_and_its_full_update_batch():
    """cppo at n = 4, prune 0.5 (k = 2): two prompt batches of 8 merged, 64 rollout rows; the old log-probs cover the
    2 x 8 x 2 = 32 kept rows (GRPO's 8 x 4), the sampler still 8 prompts per call."""
    plan = planned(("old_logprobs",), rl__algorithm="cppo")
    program = plan.program("old_logprobs")
    assert program.stats is not None, program.error
    assert program.shape.startswith("32 update rows of 64,")
    assert "8 prompts x n=4 x 2 prompt batches (CPPO fill)" in mp.format_plan(plan)
    assert planned((), rl__algorithm="cppo", rl__cppo_fill=False).settings.rl.update_rows_per_prompt == 2
