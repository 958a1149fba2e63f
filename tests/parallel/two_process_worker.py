"""One process of the two-process test: `python -m tests.parallel.two_process_worker PORT PROCESS_ID CACHE WORKDIR OUT`.

Starts `jax.distributed` through the trainer's config (4 simulated CPU devices per process, gloo collectives),
runs one training step on a (2 data, 2 fsdp, 2 tensor) mesh over both processes, then validation, and writes
the step's checkpoint; process 0 saves the gathered parameters to OUT (.npz, keys are the parameter paths).
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def two_process_config(cache: str, port: int, process_id: int):
    from tests.parallel.test_sharded_train_step import step_config

    c = step_config(cache, data=2, fsdp=2, tensor=2)
    c.distributed.initialize = "always"
    c.distributed.coordinator_address = f"localhost:{port}"
    c.distributed.num_processes = 2
    c.distributed.process_id = process_id
    c.distributed.initialization_timeout_s = 120
    c.eval.every = 1  # validation at the end of the step: each process evaluates its share, metrics summed
    c.eval.max_prompts = 0  # the 8 validation prompts: 4 per process, 2 batches each
    return c


def main(port: str, process_id: str, cache: str, workdir: str, out: str) -> None:
    from shuffle_r1_jax.train.trainer import Trainer

    trainer = Trainer(two_process_config(cache, int(port), int(process_id)), workdir)
    try:
        assert jax.process_count() == 2 and jax.device_count() == 8, (jax.process_count(), jax.device_count())
        trainer.fit()
        gathered = multihost_utils.process_allgather(trainer.params, tiled=True)
    finally:
        trainer.close()
    if jax.process_index() == 0:
        flat = {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(gathered)}
        np.savez(out, **flat)


if __name__ == "__main__":
    main(*sys.argv[1:])
