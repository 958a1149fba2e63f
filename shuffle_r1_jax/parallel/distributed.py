"""Multi-host start-up: `jax.distributed.initialize` from the config section `distributed` or the environment.

`distributed.initialize`:
  "never"  one process (the default machine set-up of a single host);
  "always" initialize; coordinator_address / num_processes / process_id come from the config where given, else
           the launcher's JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, else JAX detects them
           (Cloud TPU VMs, SLURM, Open MPI, Kubernetes);
  "auto"   initialize when something says this is a multi-process run: a configured coordinator address, one of
           the variables above, SLURM_NTASKS or OMPI_COMM_WORLD_SIZE > 1, or a multi-host mesh preset.
It must run before anything touches a JAX device; a second call (the process is already initialized) is a no-op.
On CPU the cross-process collectives are `distributed.cpu_collectives` ("gloo").
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax

from shuffle_r1_jax.parallel.mesh_config import MULTI_HOST_PRESETS

logger = logging.getLogger(__name__)

MODES = ("auto", "always", "never")
_LAUNCHER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")
_WORLD_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES")


class DistributedConfigError(ValueError):
    """The `distributed` config section is invalid; the message names the key and value."""


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """The `distributed` config section as plain values.

    Attributes:
      initialize: "auto", "always" or "never" (see the module docstring).
      coordinator_address: the coordinator's "host:port" ("" = detect).
      num_processes: the number of processes (-1 = detect).
      process_id: this process's id, in [0, num_processes) (-1 = detect).
      cpu_collectives: the CPU backend's cross-process collectives, "gloo" or "mpi".
      initialization_timeout_s: seconds `jax.distributed.initialize` waits for every process to connect.
    """

    initialize: str = "auto"
    coordinator_address: str = ""
    num_processes: int = -1
    process_id: int = -1
    cpu_collectives: str = "gloo"
    initialization_timeout_s: int = 300

    @classmethod
    def from_config(cls, section) -> "DistributedSpec":
        """The spec from the config section `distributed` (a mapping with one key per field)."""
        return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls)})

    def validate(self) -> None:
        """Checks every field.

        Raises:
          DistributedConfigError: a field is out of range; the message names the key and value.
        """
        if self.initialize not in MODES:
            raise DistributedConfigError(f"distributed.initialize = {self.initialize!r}; expected one of {MODES}")
        if self.num_processes == 0 or self.num_processes < -1:
            raise DistributedConfigError(
                f"distributed.num_processes = {self.num_processes} must be >= 1 or -1 (detect)"
            )
        if self.process_id < -1 or (self.num_processes > 0 and self.process_id >= self.num_processes):
            raise DistributedConfigError(
                f"distributed.process_id = {self.process_id} must be in [0, distributed.num_processes = "
                f"{self.num_processes}) or -1 (detect)"
            )
        if self.initialization_timeout_s <= 0:
            raise DistributedConfigError(
                f"distributed.initialization_timeout_s = {self.initialization_timeout_s} must be > 0"
            )
        if self.cpu_collectives not in ("gloo", "mpi"):
            raise DistributedConfigError(
                f"distributed.cpu_collectives = {self.cpu_collectives!r}; expected 'gloo' or 'mpi'"
            )


def wants_initialize(spec: DistributedSpec, mesh_preset: str = "", environ=os.environ) -> bool:
    """Whether `initialize_distributed` would start the distributed runtime (see the module docstring).

    Args:
      spec: the `distributed` config section.
      mesh_preset: the `mesh.preset` of the run; a multi-host preset makes "auto" initialize.
      environ: the environment whose launcher and world-size variables "auto" consults.

    Returns:
      True when the runtime is to be started: "always", or "auto" with a sign of a multi-process run.

    Raises:
      DistributedConfigError: the spec is invalid.
    """
    spec.validate()
    if spec.initialize != "auto":
        return spec.initialize == "always"
    if spec.coordinator_address or spec.num_processes > 1 or mesh_preset in MULTI_HOST_PRESETS:
        return True
    if any(environ.get(name) for name in _LAUNCHER_VARIABLES):
        return True
    return any(int(environ.get(name, "1") or 1) > 1 for name in _WORLD_SIZE_VARIABLES)


def initialize_distributed(spec: DistributedSpec, mesh_preset: str = "") -> bool:
    """Starts `jax.distributed` when the spec asks for it (see `wants_initialize`).

    Args:
      spec: the `distributed` config section; its num_processes / process_id fall back to JAX_NUM_PROCESSES /
        JAX_PROCESS_ID when -1, and to JAX's cluster detection when those are unset too.
      mesh_preset: the `mesh.preset` of the run.

    Returns:
      True when the process is initialized after the call (including when it already was), False when the
      spec does not ask for the distributed runtime.

    Raises:
      DistributedConfigError: the spec is invalid.
    """
    if jax.distributed.is_initialized():
        return True
    if not wants_initialize(spec, mesh_preset):
        return False
    jax.config.update("jax_cpu_collectives_implementation", spec.cpu_collectives)
    num_processes = spec.num_processes if spec.num_processes > 0 else _env_int("JAX_NUM_PROCESSES")
    process_id = spec.process_id if spec.process_id >= 0 else _env_int("JAX_PROCESS_ID")
    jax.distributed.initialize(
        coordinator_address=spec.coordinator_address or None,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=spec.initialization_timeout_s,
    )
    logger.info(
        "jax.distributed: process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value else None


def is_main_process() -> bool:
    """True on process 0, the one that logs and writes run files."""
    return jax.process_index() == 0
