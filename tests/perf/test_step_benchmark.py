"""The step benchmark: the compile counter, and two steps of the benchmark on the tiny trainer."""

import jax
import jax.numpy as jnp
import pytest

from shuffle_r1_jax.perf.compiles import CompileMonitor
from shuffle_r1_jax.perf.peak import Peak
from shuffle_r1_jax.perf.step_benchmark import run_benchmark
from shuffle_r1_jax.train.settings import prepare
from tests.train.conftest import tiny_trainer_config

# XLA's count (one-trip program) includes the log-prob chunk's rematerialised forward and elementwise work the
# analytic model count leaves out; on the tiny model that is a few percent. Beyond this factor, one is wrong.
FLOP_AGREEMENT = 1.25


def _times_three_plus_one(x):
    return x * 3.0 + 1.0


def test_compile_monitor_counts_a_fresh_jit_once_per_shape():
    fresh = jax.jit(_times_three_plus_one)
    seven, eight = jnp.ones(7), jnp.ones(8)
    jax.block_until_ready((seven, eight))
    with CompileMonitor() as monitor:
        monitor.step = 0
        fresh(seven).block_until_ready()
        fresh(seven).block_until_ready()
        monitor.step = 1
        fresh(eight).block_until_ready()
    ours = [e for e in monitor.compiles if "_times_three_plus_one" in e.program]
    assert [e.step for e in ours] == [0, 1]
    assert all(e.seconds > 0 for e in ours)
    assert any("_times_three_plus_one" in m and "f32[8]" in m for m in monitor.logs[1])  # jax_log_compiles' line
    assert not jax.config.jax_log_compiles  # restored


def test_two_steps_of_the_benchmark(tmp_path, demo_cache):
    config = tiny_trainer_config(demo_cache)
    config.mesh.num_devices = 1  # the analytic count is of the work, unreplicated
    peak = Peak(1e11, "test peak", per_device=False)
    _, settings = prepare(config)
    result = run_benchmark(settings, str(tmp_path / "work"), warmup_steps=1, steps=1, peak=peak)

    phases = {p.name: p for p in result.phases}
    assert {"generate", "reward", "advantage", "old_logprobs", "update"} <= set(phases)
    assert sum(p.seconds for name, p in phases.items() if name != "other") <= result.step_seconds
    assert phases["other"].seconds >= 0

    update = phases["update"]
    assert update.flops_xla is not None
    assert 1 / FLOP_AGREEMENT <= update.flops_xla / update.flops_analytic <= FLOP_AGREEMENT
    # the update's count: 3 x forward over (mini-batches x rows per mini-batch) sequences
    minibatches = config.data.rollout_batch_prompts // config.train.minibatch_prompts
    assert len(result.program_flops["update"]) == 1
    ((_, per_call),) = result.program_flops["update"].values()
    assert update.flops_analytic == pytest.approx(minibatches * per_call)
    assert update.mfu == pytest.approx(update.flops_analytic / update.seconds / 1e11)

    assert result.compiles_per_step[0] > 0  # the first step compiles every program
    assert len(result.compiles_per_step) == 2
    assert result.response_tokens > 0 and result.prompt_tokens > 0
