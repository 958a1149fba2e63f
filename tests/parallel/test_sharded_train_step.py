"""One trainer step on a (2 data, 2 fsdp, 2 tensor) mesh of the 8 simulated CPU devices gives the parameters of
the same step on a one-device mesh (fp32 throughout)."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from tests.train.conftest import make_trainer, tiny_trainer_config

# Both runs sample the same tokens and train on the same rows, so the parameters differ only by fp32
# reassociation (gradients summed over shards, matmuls split over tensor shards), which AdamW's normalisation
# m / sqrt(v) amplifies where a gradient is tiny. At learning rate 1e-3 the step moves parameters by up to 2e-3;
# the tolerance is 3e-5 absolute (the measured difference is in BUILD_NOTES.md, "Launching on a multi-GPU host").
ATOL = 3e-5
RTOL = 0.0


def step_config(cache: str, **mesh):
    """The tiny trainer config with a reward that varies within groups (so the step has a gradient)."""
    c = tiny_trainer_config(cache)
    c.reward.name = "tests.train.toy_rewards:letter_a_fraction"
    c.optim.learning_rate = 1e-3
    c.train.total_steps = 1
    for key, value in mesh.items():
        c.mesh[key] = value
    return c


def chunked_step_config(cache: str):
    """The sharded step's config on a (2, 2, 2) mesh with 8 prompts sampled 4 per sampler call (2 calls)."""
    c = step_config(cache, data=2, fsdp=2, tensor=2)
    c.data.rollout_batch_prompts = 8
    c.rollout.prompts_per_sampler_call = 4
    return c


def one_step(config, workdir):
    """(trainer, parameters before, parameters after, metrics) of one `train_step`."""
    trainer = make_trainer(config, workdir)
    try:
        before = jax.device_get(trainer.params)
        metrics = trainer.train_step()
        return trainer, before, jax.device_get(trainer.params), metrics
    finally:
        trainer.close()


@pytest.fixture(scope="module")
def runs(demo_cache, tmp_path_factory):
    single = one_step(step_config(demo_cache, data=1, fsdp=1, tensor=1, num_devices=1), tmp_path_factory.mktemp("one"))
    sharded = one_step(step_config(demo_cache, data=2, fsdp=2, tensor=2), tmp_path_factory.mktemp("sharded"))
    return single, sharded


def test_the_sharded_run_is_sharded(runs):
    (single, *_), (sharded, *_) = runs
    assert len(single.mesh.devices.ravel()) == 1 and dict(sharded.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    specs = [x.sharding.spec for x in jax.tree.leaves(sharded.params)]
    assert any("tensor" in str(s) for s in specs) and any("fsdp" in str(s) for s in specs)
    mirrored = [
        x.sharding.spec
        for x in jax.tree.leaves(sharded.opt_state)
        if x.ndim >= 2 and x.sharding.spec != PartitionSpec()
    ]
    assert mirrored, "the AdamW moments should be sharded like their parameters"


def test_a_sharded_step_gives_the_single_device_parameters(runs):
    (_, before, single_params, single_metrics), (_, _, sharded_params, sharded_metrics) = runs
    for key in ("reward/overall", "response_length/mean", "advantage/collapse_after"):
        assert single_metrics[key] == sharded_metrics[key], key  # the same rollouts and update batch
    moved = 0
    for (path, a), b, start in zip(
        jax.tree_util.tree_leaves_with_path(single_params), jax.tree.leaves(sharded_params), jax.tree.leaves(before)
    ):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=jax.tree_util.keystr(path))
        moved += int(np.max(np.abs(a - start)) > 10 * ATOL)
    assert moved > 10, "the step should move the parameters far beyond the tolerance"
    np.testing.assert_allclose(sharded_metrics["pg_loss"], single_metrics["pg_loss"], rtol=1e-5, atol=1e-7)
