"""One process of the two-process tests: `python -m tests.parallel.two_process_worker PORT PROCESS_ID CACHE WORKDIR
OUT DAPO_WORKDIR DAPO_ASSETS`.

Starts `jax.distributed` through the trainer's config (4 simulated CPU devices per process, gloo collectives),
then, on a (2 data, 2 fsdp, 2 tensor) mesh over both processes:
  1. one Shuffle-R1 training step (the rollout batch sampled in two sampler calls), then validation, and the
     step's checkpoint; process 0 saves the gathered parameters to OUT (.npz, keys are the parameter paths);
  2. in DAPO_WORKDIR, one DAPO step whose dynamic sampling drops and refills groups, then validation over a
     7-prompt set (4 + 3 prompts: process 1 has a short batch); DAPO_ASSETS is a JSON file with the checkpoint,
     train and val paths. Process 0 saves the gathered parameters to DAPO_WORKDIR/params.npz.
"""

import json
import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def two_process_config(cache: str, port: int, process_id: int):
    from tests.parallel.test_sharded_train_step import chunked_step_config

    c = chunked_step_config(cache)
    c.distributed.initialize = "always"
    c.distributed.coordinator_address = f"localhost:{port}"
    c.distributed.num_processes = 2
    c.distributed.process_id = process_id
    c.distributed.initialization_timeout_s = 120
    c.eval.every = 1  # validation at the end of the step: each process evaluates its share, metrics summed
    c.eval.max_prompts = 0  # the 8 validation prompts: 4 per process, one batch each
    return c


def dapo_config(cache: str, port: int, process_id: int, assets: dict):
    """Scenario 2: DAPO on a reward that gives no signal to non-colour prompts; explicit asset paths, so that
    validation reads the 7-prompt set."""
    c = two_process_config(cache, port, process_id)
    c.setup = ""
    c.model.checkpoint, c.data.train, c.data.val = assets["checkpoint"], assets["train"], assets["val"]
    c.rl.algorithm = "dapo"
    c.rl.dynamic_sampling_max_tries = 4
    c.data.rollout_batch_prompts = 4
    c.rollout.prompts_per_sampler_call = 0
    c.reward.name = "tests.train.toy_rewards:distinct_characters_of_color_answers"
    return c


def run(config, workdir: str, out: str) -> None:
    from tests.train.conftest import make_trainer

    trainer = make_trainer(config, workdir)
    try:
        assert jax.process_count() == 2 and jax.device_count() == 8, (jax.process_count(), jax.device_count())
        trainer.fit()
        gathered = multihost_utils.process_allgather(trainer.params, tiled=True)
    finally:
        trainer.close()
    if jax.process_index() == 0:
        flat = {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(gathered)}
        np.savez(out, **flat)


def main(port: str, process_id: str, cache: str, workdir: str, out: str, dapo_workdir: str, dapo_assets: str) -> None:
    run(two_process_config(cache, int(port), int(process_id)), workdir, out)
    assets = json.loads(Path(dapo_assets).read_text())
    run(dapo_config(cache, int(port), int(process_id), assets), dapo_workdir, str(Path(dapo_workdir) / "params.npz"))


if __name__ == "__main__":
    main(*sys.argv[1:])
