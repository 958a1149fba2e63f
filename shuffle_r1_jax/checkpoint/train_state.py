"""Train-state checkpoints over orbax: parameters, optimizer state, an optional critic's parameters and optimizer
state, step, RNG key, data position, best score.

One checkpoint is one orbax step directory `<directory>/<step>/` with three items, five with a critic:

- `params`: the model parameters as a nested dict of arrays (an `nnx.State` is saved through its pure dict),
- `opt_state`: the optax state's array leaves, named by their pytree paths (empty states such as
  `optax.EmptyState` or `optax.MaskedNode` hold no arrays and come back from the restore target's structure;
  the item is left out when the optimizer state has no arrays at all),
- `critic_params`, `critic_opt_state` (only when `save` is given a critic, e.g. PPO's value model): the critic's
  parameters and optimizer state, saved exactly as `params` and `opt_state` are (`critic_opt_state` is left out
  when the critic's optimizer state has no arrays),
- `meta`: JSON with the step, the RNG key (implementation name and key data), the data-iterator state, the
  best validation score so far and which of the optional items were saved (`has_opt_state`, `has_critic`,
  `has_critic_opt_state`; a `meta` written before critics existed lacks the last two and means no critic).

A step saved with a critic restores without it (the critic items are not read: that is how the policy alone is
exported); a step saved without one refuses critic targets with `NoCriticError`, so a run that trains a critic
never resumes silently with a fresh one.

Atomicity: orbax writes each step into `<step>.orbax-checkpoint-tmp*` and renames it to `<step>` once every item
is complete, so a process killed at any moment leaves either a complete step or a temporary directory that
listing ignores (and that the next `TrainCheckpointer` removes). Retention deletes old steps by renaming them
into `<directory>/_deleted/` first (an atomic rename, then removed here), so a kill during a deletion never
leaves a half-deleted step under a step's name.

Saves are asynchronous: `save` returns once the arrays are copied off the devices (the caller may then donate or
overwrite them) and the files are written in the background. `restore`, `close` and the next `save` wait for a
save in flight; call `close` (or use the checkpointer as a context manager) before the process exits.

Failed saves: a write that fails in the background (a full disk, a lost mount) surfaces as one
`CheckpointSaveError` naming the step, the directory and the cause, raised by the next `wait_until_finished`,
`save`, `close` or `raise_if_a_save_failed` (which never blocks: a training loop calls it between steps). Earlier
steps stay; the failed step's temporary directory is ignored by listing and removed by the next
`TrainCheckpointer`. With `save_retries` k > 0 every save is waited for before `save` returns (the caller's arrays
are still needed to write them again) and a failed one is retried k times, with a warning each time.
`orbax_traceback_filter` keeps orbax's own background tracebacks of such a failure out of the log.

Damaged steps: `restore` reads all it is asked for of the step it picks (every such item present, `meta`
readable, every array read).
With `on_damaged="fallback"` a damaged latest step is moved aside into `<directory>/_damaged/<step>-<UTC time>`
(kept, never deleted) with one warning, and the newest intact step is restored; when no step is intact nothing
is moved and a `DamagedCheckpointError` names them all. With `on_damaged="refuse"` the first damaged step raises
a `DamagedCheckpointError` naming it.

Multi-process: every process calls `save`/`restore` (orbax coordinates the writes); the JSON `meta` item is
written by process 0, so `data_state` must describe the global data position.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import re
from typing import Any, Callable, Literal, Mapping, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError

logger = logging.getLogger(__name__)

PyTree = Any
Name = tuple[str, ...]
T = TypeVar("T")

_PARAMS = "params"
_OPT_STATE = "opt_state"
_CRITIC_PARAMS = "critic_params"
_CRITIC_OPT_STATE = "critic_opt_state"
_META = "meta"
_TRASH = "_deleted"
_DAMAGED = "_damaged"
_FORMAT_VERSION = 1
# The keys every `meta` holds (a step lacking one is damaged), and the keys added with critics, with the value a
# `meta` written before them stands for (steps saved before critics existed restore as steps without a critic).
_META_KEYS = ("step", "rng_key", "data_state", "best_score", "has_opt_state")
_META_DEFAULTS = {"has_critic": False, "has_critic_opt_state": False}
ON_DAMAGED = ("fallback", "refuse")
# What reading a damaged step raises (a missing item, a truncated or garbled file); other errors (a mismatched
# target, a full memory) are not the checkpoint's fault and propagate as they are.
_DAMAGE_ERRORS = (OSError, ValueError, KeyError)
_TENSORSTORE_SPEC = re.compile(r" ?\[tensorstore_spec='.*'\]")


class DamagedCheckpointError(CheckpointError):
    """A checkpoint step is incomplete or unreadable; the message names the step, its path and the cause."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint save failed; the message names the step, the checkpoint directory and the cause."""


class NoCriticError(CheckpointError):
    """`restore` was given critic targets for a step saved without a critic (a `ValueError`, like every
    `CheckpointError`); the message names the step and its path."""


@dataclasses.dataclass(frozen=True)
class _Trees:
    """One model's two items, its parameters and its optimizer state, and how the checkpoint names them.

    Attributes:
      params: the parameters' item name (also the name of `save`'s argument).
      opt_state: the optimizer state's item name (also the name of `save`'s argument).
      has_opt_state: the `meta` key recording whether the optimizer state had arrays (and so an item).
      label: what error messages put before "parameter" and "optimizer state leaf".
    """

    params: str
    opt_state: str
    has_opt_state: str
    label: str


_POLICY = _Trees(_PARAMS, _OPT_STATE, "has_opt_state", "")
_CRITIC = _Trees(_CRITIC_PARAMS, _CRITIC_OPT_STATE, "has_critic_opt_state", "critic ")


@dataclasses.dataclass(frozen=True)
class RestoredState:
    """What `TrainCheckpointer.restore` returns.

    Attributes:
      step: the restored step.
      params: the same type as the `abstract_params` target (an `nnx.State` or a dict) holding restored arrays.
      opt_state: the optax state with the structure of `abstract_opt_state`, or None when that was None.
      rng_key: a new-style `jax.random.key` with the saved implementation and key data.
      data_state: the data-iterator state dict passed to `save`.
      best_score: the best validation score passed to `save`, or None.
      critic_params: the critic's parameters, the same type as `abstract_critic_params`, or None when that was
        None.
      critic_opt_state: the critic's optax state with the structure of `abstract_critic_opt_state`, or None when
        that was None.
    """

    step: int
    params: PyTree
    opt_state: PyTree | None
    rng_key: jax.Array
    data_state: dict
    best_score: float | None
    critic_params: PyTree | None = None
    critic_opt_state: PyTree | None = None


class TrainCheckpointer:
    """Saves and restores the RL trainer's state in `directory`, keeping the last `keep_last` steps plus the best.

    Args:
      directory: the checkpoint root (created if missing); each step is a subdirectory `<directory>/<step>/`.
      keep_last: how many of the latest steps to keep, at least 1.
      keep_best: also keep the step whose `metrics[best_metric]` (as passed to `save`) is the best so far by
        `best_mode`, however old; steps saved without that metric (or with NaN) never count as best.
      best_metric: the metric name that ranks steps for `keep_best`.
      best_mode: "max" or "min", whether a higher or a lower metric is better.
      on_damaged: what `restore` does with a damaged step: "fallback" moves it aside and restores the newest
        intact step, "refuse" raises `DamagedCheckpointError`.
      save_retries: how many times a failed save is retried before `CheckpointSaveError`; above 0 every save
        is waited for before `save` returns.

    Raises:
      ValueError: when `keep_last` is not an integer >= 1, `best_mode` is neither "max" nor "min", `on_damaged`
        is neither "fallback" nor "refuse" or `save_retries` is not an integer >= 0.
    """

    def __init__(
        self,
        directory: str | epath.PathLike,
        *,
        keep_last: int = 3,
        keep_best: bool = True,
        best_metric: str = "val/accuracy",
        best_mode: Literal["max", "min"] = "max",
        on_damaged: Literal["fallback", "refuse"] = "fallback",
        save_retries: int = 0,
    ):
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if on_damaged not in ON_DAMAGED:
            raise ValueError(f"on_damaged must be one of {ON_DAMAGED}, got {on_damaged!r}")
        if not isinstance(save_retries, int) or save_retries < 0:
            raise ValueError(f"save_retries must be an integer >= 0, got {save_retries!r}")
        self._directory = epath.Path(directory).absolute()
        self._keep_best = keep_best
        self._best_metric = best_metric
        self._best_mode = best_mode
        self._on_damaged = on_damaged
        self._save_retries = save_retries
        self._step_in_flight: int | None = None
        self._purge_trash()
        policies: list[ocp.checkpoint_managers.PreservationPolicy] = [ocp.checkpoint_managers.LatestN(n=keep_last)]
        if keep_best:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=self._score,
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # best_fn makes orbax store the metrics with each step; the preservation policy alone decides retention.
            best_fn=self._score if keep_best else None,
            best_mode=best_mode,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            todelete_subdir=_TRASH,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=True,
            create=True,
        )
        # Reads the saved shapes of one array item at a time.
        self._item_reader = ocp.StandardCheckpointHandler()
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=options,
            item_handlers={
                _PARAMS: ocp.StandardCheckpointHandler(),
                _OPT_STATE: ocp.StandardCheckpointHandler(),
                _CRITIC_PARAMS: ocp.StandardCheckpointHandler(),
                _CRITIC_OPT_STATE: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            },
        )

    @property
    def directory(self) -> epath.Path:
        """The checkpoint root as an absolute path."""
        return self._directory

    def save(
        self,
        step: int,
        params: PyTree,
        opt_state: PyTree,
        rng_key: jax.Array,
        data_state: dict,
        best_score: float | None,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
        *,
        critic_params: PyTree | None = None,
        critic_opt_state: PyTree | None = None,
    ) -> bool:
        """Starts an asynchronous save of step `step`; waits for the previous save to finish first.

        Args:
          step: a non-negative integer. A step at or below the latest saved step is skipped unless `force`.
          params: the model parameters, an `nnx.State` or a nested dict of arrays.
          opt_state: the optax state.
          rng_key: a single, replicated new-style `jax.random.key`.
          data_state: a JSON-serialisable dict with string keys describing the global data position.
          best_score: the best validation score so far, a finite float or None.
          metrics: scalars stored with the step to rank it for `keep_best` (ignored when keep_best is off).
          force: save even a step at or below the latest one (orbax's `StepAlreadyExistsError` if that step
            exists).
          critic_params: the critic's parameters (an `nnx.State` or a nested dict of arrays), or None for a run
            without a critic; given together with `critic_opt_state`.
          critic_opt_state: the critic's optax state, or None; given together with `critic_params`.

        Returns:
          Whether a save was started (False for a skipped step).

        Raises:
          CheckpointSaveError: the previous save failed in the background, or (with `save_retries` > 0) this one
            failed `save_retries` + 1 times.
          ValueError: when `step` is negative or not an integer, only one of `critic_params` and
            `critic_opt_state` is given, `rng_key` is not a single replicated key, `best_score` is not finite, a
            metric is not a scalar (with keep_best), or a tree is a bare array or has two leaves with the same path.
          TypeError: when `rng_key` is not a new-style key, `data_state` is not a JSON-serialisable dict with
            string keys, or `best_score` is not a float or None.
        """
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        step = int(step)
        if (critic_params is None) != (critic_opt_state is None):
            given = "critic_params" if critic_opt_state is None else "critic_opt_state"
            raise ValueError(
                f"critic_params and critic_opt_state must be given together (or neither), got only {given} "
                f"for step {step}"
            )
        items: dict[str, Any] = {}
        has_opt_state = _add_save_items(items, _POLICY, params, opt_state)
        has_critic = critic_params is not None
        has_critic_opt_state = has_critic and _add_save_items(items, _CRITIC, critic_params, critic_opt_state)
        items[_META] = ocp.args.JsonSave(
            {
                "format_version": _FORMAT_VERSION,
                "step": step,
                "rng_key": _key_to_json(rng_key),
                "data_state": _checked_json(data_state, "data_state"),
                "best_score": _checked_best_score(best_score),
                "has_opt_state": has_opt_state,
                "has_critic": has_critic,
                "has_critic_opt_state": has_critic_opt_state,
            }
        )
        scalars = _scalar_metrics(metrics) if self._keep_best else None
        args = ocp.args.Composite(**items)
        self.wait_until_finished()
        if self._save_retries == 0:
            return self._start_save(step, args, scalars, force)
        for retry in range(1, self._save_retries + 1):
            try:
                return self._save_and_wait(step, args, scalars, force)
            except CheckpointSaveError as err:
                logger.warning("%s; retrying it (retry %d of save_retries = %d)", err, retry, self._save_retries)
                self._remove_partial_save(step)
        return self._save_and_wait(step, args, scalars, force)

    def _start_save(self, step: int, args: ocp.args.Composite, metrics: dict | None, force: bool) -> bool:
        """Starts orbax's asynchronous save of `step` and remembers it as the save in flight."""
        started = self._manager.save(step, args=args, metrics=metrics, force=force)
        self._step_in_flight = step if started else None
        return started

    def _save_and_wait(self, step: int, args: ocp.args.Composite, metrics: dict | None, force: bool) -> bool:
        """Saves `step` and waits for the write; raises `CheckpointSaveError` when it fails."""
        started = self._start_save(step, args, metrics, force)
        self.wait_until_finished()
        return started

    def _remove_partial_save(self, step: int) -> None:
        """Removes the temporary directories a failed save of `step` left (process 0; the others wait)."""
        if jax.process_index() == 0:
            for partial in self._directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                partial.rmtree()
        _sync_processes(f"train_state_remove_partial_{step}")

    def restore(
        self,
        step: int | None = None,
        *,
        abstract_params: PyTree,
        abstract_opt_state: PyTree | None,
        abstract_critic_params: PyTree | None = None,
        abstract_critic_opt_state: PyTree | None = None,
    ) -> RestoredState:
        """Restores `step` onto the given targets, reading all they ask for; with `step` None, the newest intact step.

        The targets' leaves are `jax.ShapeDtypeStruct`s (from `jax.eval_shape` / `nnx.eval_shape`) or arrays;
        restored arrays take their shapes, dtypes (saved values are cast) and `.sharding`; a leaf without a
        sharding gets the one it was saved with (orbax's sharding metadata: the same devices must exist).

        A step is damaged when an item it is read from is missing (`params`, `meta`, `opt_state` when `meta` says
        it was saved; with critic targets `critic_params`, and `critic_opt_state` when saved), `meta` is unreadable
        or an array does not read. With `step` None and `on_damaged="fallback"`, damaged steps newer than the newest
        intact one are moved into `<directory>/_damaged/` with one warning each. Without critic targets the critic
        items of a step saved with a critic are not read.

        Args:
          step: the step to restore; None (default) restores the latest complete one.
          abstract_params: the parameter target, an `nnx.State` or a nested dict.
          abstract_opt_state: the optimizer-state target, or None to skip the optimizer state.
          abstract_critic_params: the critic's parameter target, an `nnx.State` or a nested dict, or None (default)
            to skip the critic.
          abstract_critic_opt_state: the critic's optimizer-state target, or None (default) to skip it; needs
            `abstract_critic_params`.

        Returns:
          The restored `RestoredState`.

        Raises:
          FileNotFoundError: when there is no complete checkpoint, or none for `step`.
          DamagedCheckpointError: `step` is damaged; with `step` None, the latest step is damaged and
            `on_damaged` is "refuse", or every step is damaged (nothing is moved then).
          NoCriticError: critic targets were given and the step (with `step` None, the newest intact one) was
            saved without a critic; nothing is moved aside then.
          ValueError: naming the leaves missing from the checkpoint or extra in it, the first leaf shaped
            differently from the target, or a target leaf sharded over an abstract mesh; or when
            `abstract_critic_opt_state` is given without `abstract_critic_params`.
          CheckpointSaveError: a save in flight failed.
        """
        if abstract_critic_params is None and abstract_critic_opt_state is not None:
            raise ValueError("abstract_critic_opt_state was given without abstract_critic_params")
        targets = {
            _POLICY: (abstract_params, abstract_opt_state),
            _CRITIC: (abstract_critic_params, abstract_critic_opt_state),
        }
        self.wait_until_finished()
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(f"no checkpoint for step {step} in {self._directory}; complete steps: {steps}")
            return self._restore_step(step, targets)
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {self._directory} (incomplete saves are ignored)")
        damaged: list[tuple[int, DamagedCheckpointError]] = []
        for candidate in reversed(steps):
            try:
                restored = self._restore_step(candidate, targets)
            except DamagedCheckpointError as err:
                if self._on_damaged == "refuse":
                    raise
                damaged.append((candidate, err))
                continue
            self._set_aside(damaged, restored.step)
            return restored
        raise DamagedCheckpointError(
            f"every checkpoint step in {self._directory} is damaged ({'; '.join(str(err) for _, err in damaged)}); "
            "nothing was moved or restored: remove or repair the steps (the run would start from scratch without them)"
        )

    def _restore_step(self, step: int, targets: dict[_Trees, tuple[PyTree | None, PyTree | None]]) -> RestoredState:
        """Reads what `targets` ask for of `step`, each model's (parameter target or None, optimizer-state target or
        None) (see `restore`).

        Raises:
          DamagedCheckpointError: an item is missing, `meta` is unreadable or an array does not read.
          NoCriticError: critic targets were given and the step has no critic.
          ValueError: the targets do not match the checkpoint's leaves or shapes.
        """
        path = self._directory / str(step)
        meta = _read_or_damaged(step, path, lambda: self._read_meta(step))
        rng_key = _read_or_damaged(step, path, lambda: _key_from_json(meta["rng_key"]))
        if targets[_CRITIC][0] is not None and not meta["has_critic"]:
            raise NoCriticError(
                f"checkpoint step {step} at {path} has no critic (it was saved without critic_params and "
                "critic_opt_state), so the critic cannot be restored from it; resume a run that trains a critic only "
                "from its own checkpoints"
            )
        requested = {trees: pair for trees, pair in targets.items() if pair[0] is not None}
        expected = []
        for trees, (_, abstract_opt) in requested.items():
            expected.append(trees.params)
            if meta[trees.has_opt_state] and abstract_opt is not None:
                expected.append(trees.opt_state)
        missing = [item for item in expected if not (path / item).is_dir()]
        if missing:
            raise DamagedCheckpointError(_damage_message(step, path, f"the item {missing[0]!r} is missing"))

        def saved_shapes(item: str) -> dict[Name, tuple[int, ...]]:
            # Only the items asked for are read (orbax's step metadata would read every item, the critic's too).
            return _read_or_damaged(step, path, lambda: _saved_shapes(self._item_reader.metadata(path / item)))

        plans = {
            trees: _TreeRestore(trees, step, meta[trees.has_opt_state], saved_shapes, *pair)
            for trees, pair in requested.items()
        }
        args = ocp.args.Composite(**{item: arg for plan in plans.values() for item, arg in plan.targets.items()})
        restored = _read_or_damaged(step, path, lambda: self._manager.restore(step, args=args))

        params, opt_state = plans[_POLICY].rebuild(restored)
        critic_params, critic_opt_state = plans[_CRITIC].rebuild(restored) if _CRITIC in plans else (None, None)
        return RestoredState(
            step=step,
            params=params,
            opt_state=opt_state,
            rng_key=rng_key,
            data_state=meta["data_state"],
            best_score=meta["best_score"],
            critic_params=critic_params,
            critic_opt_state=critic_opt_state,
        )

    def _read_meta(self, step: int) -> dict:
        """The `meta` item of `step`.

        Returns:
          The item's dict, with `_META_DEFAULTS` for the keys a step saved before critics existed lacks.

        Raises:
          OSError, ValueError, KeyError: the item is missing or unreadable, or lacks one of `_META_KEYS`.
        """
        meta = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        if not isinstance(meta, Mapping):
            raise ValueError(f"the item 'meta' holds {type(meta).__name__}, not a JSON object")
        absent = [key for key in _META_KEYS if key not in meta]
        if absent:
            raise KeyError(f"the item 'meta' lacks {absent}")
        return {**_META_DEFAULTS, **meta}

    def _set_aside(self, damaged: list[tuple[int, DamagedCheckpointError]], restored_step: int) -> None:
        """Moves each damaged step into `<directory>/_damaged/<step>-<UTC time>` (process 0; the others wait),
        logs one warning per step and reloads orbax's list of steps."""
        if not damaged:
            return
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        for step, err in damaged:
            target = self._directory / _DAMAGED / f"{step}-{stamp}"
            if jax.process_index() == 0:
                target.parent.mkdir(parents=True, exist_ok=True)
                (self._directory / str(step)).rename(target)
            logger.warning("%s; moved it to %s and resumed from step %d", err, target, restored_step)
        _sync_processes(f"train_state_set_aside_{restored_step}")
        self._manager.reload()

    def latest_step(self) -> int | None:
        """The latest saved step (one still being written asynchronously counts; `restore` waits for it), or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The saved steps, ascending (one still being written asynchronously included)."""
        return sorted(self._manager.all_steps())

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric`, or None (keep_best off, or no step has the metric)."""
        if not self._keep_best:
            return None
        self.wait_until_finished()
        scored = [(step, self._score(self._manager.metrics(step))) for step in self.all_steps()]
        scored = [(step, score) for step, score in scored if math.isfinite(score)]
        if not scored:
            return None
        pick = max if self._best_mode == "max" else min
        return pick(scored, key=lambda item: item[1])[0]

    def metrics(self, step: int) -> dict[str, float] | None:
        """The metrics stored with `step` (None when keep_best is off or none were stored)."""
        if not self._keep_best:
            return None
        self.wait_until_finished()
        return self._manager.metrics(step)

    def wait_until_finished(self) -> None:
        """Blocks until a save in flight (and the deletions it triggers) is complete.

        Raises:
          CheckpointSaveError: the save in flight failed (raised once; the failed step is not listed and its
            temporary directory is removed by the next `TrainCheckpointer`).
        """
        step, self._step_in_flight = self._step_in_flight, None
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # a background write may fail with any error type; all of them end the save
            raise CheckpointSaveError(
                f"checkpoint save of step {step} to {self._directory} failed: {_one_line(err)}"
            ) from err
        self._purge_trash()

    def raise_if_a_save_failed(self) -> None:
        """Returns at once unless the save in flight has already failed: it never waits for a write.

        Raises:
          CheckpointSaveError: the save in flight failed.
        """
        if self._step_in_flight is not None and not self._manager.is_saving_in_progress():
            self.wait_until_finished()

    def close(self) -> None:
        """Waits for a save in flight, then releases orbax's resources.

        Raises:
          CheckpointSaveError: the save in flight failed (the resources are released all the same).
        """
        try:
            self.wait_until_finished()
        finally:
            self._manager.close()
            self._item_reader.close()
            self._purge_trash()

    def __enter__(self) -> TrainCheckpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _score(self, metrics: Mapping[str, Any] | None) -> float:
        """The ranking value of a step's metrics; a missing or NaN metric ranks worst."""
        worst = -math.inf if self._best_mode == "max" else math.inf
        value = (metrics or {}).get(self._best_metric)
        if value is None or math.isnan(float(value)):
            return worst
        return float(value)

    def _purge_trash(self) -> None:
        trash = self._directory / _TRASH
        if jax.process_index() == 0 and trash.exists():
            trash.rmtree()


def orbax_traceback_filter(record: logging.LogRecord) -> bool:
    """A logging filter (for the "absl" logger) that drops orbax's error records carrying a traceback.

    A failed background save makes orbax log the same exception from several threads, each with its
    traceback; `TrainCheckpointer` raises it once as a one-line `CheckpointSaveError` instead.

    Returns:
      False for an ERROR (or worse) record from orbax's checkpoint package with exception info, True otherwise.
    """
    from_orbax = f"orbax{os.sep}checkpoint" in record.pathname
    return not (from_orbax and record.levelno >= logging.ERROR and record.exc_info)


def _one_line(err: BaseException) -> str:
    """`err`'s message on one line (whitespace runs collapsed, tensorstore's spec dump cut), or its type name when
    the message is empty."""
    message = _TENSORSTORE_SPEC.sub("", " ".join(str(err).split()))
    return message or type(err).__name__


def _damage_message(step: int, path: epath.Path, cause: str) -> str:
    return f"checkpoint step {step} at {path} is damaged: {cause}"


def _read_or_damaged(step: int, path: epath.Path, read: Callable[[], T]) -> T:
    """`read()`, with the errors a damaged step raises turned into a `DamagedCheckpointError` naming it."""
    try:
        return read()
    except _DAMAGE_ERRORS as err:
        cause = f"{type(err).__name__}: {_one_line(err)}"
        raise DamagedCheckpointError(_damage_message(step, path, cause)) from err


def _add_save_items(items: dict[str, Any], trees: _Trees, params: PyTree, opt_state: PyTree) -> bool:
    """Adds one model's save arguments to `items`: its parameters, and its optimizer state's array leaves named by
    their paths (no item when the state has no arrays).

    Returns:
      Whether the optimizer state has arrays (and so an item).

    Raises:
      ValueError: a tree is a bare array or has two leaves with the same path.
    """
    items[trees.params] = ocp.args.StandardSave(_nest(_named_leaves(_pure(params), trees.params)[0]))
    opt_names = _named_leaves(opt_state, trees.opt_state)[0]
    if opt_names:
        items[trees.opt_state] = ocp.args.StandardSave(_nest(opt_names))
    return bool(opt_names)


class _TreeRestore:
    """One model's part of a step's restore: its targets, checked against the step's saved leaves and shapes, then
    the trees rebuilt from what orbax read.

    Args:
      trees: the model's items.
      step: the step being restored (for the errors).
      has_opt_state: whether the step's `meta` says the optimizer state item was saved.
      saved_shapes: reads an item's saved leaf shapes by name, raising `DamagedCheckpointError` when it cannot.
      abstract_params: the parameter target, an `nnx.State` or a nested dict.
      abstract_opt_state: the optimizer-state target, or None to skip the optimizer state.

    Raises:
      DamagedCheckpointError: the saved shapes do not read.
      ValueError: the targets do not match the checkpoint's leaves or shapes, or a target leaf is sharded over an
        abstract mesh.
    """

    def __init__(
        self,
        trees: _Trees,
        step: int,
        has_opt_state: bool,
        saved_shapes: Callable[[str], dict[Name, tuple[int, ...]]],
        abstract_params: PyTree,
        abstract_opt_state: PyTree | None,
    ):
        self._trees = trees
        self._abstract_params = abstract_params
        self._params_leaves, self._params_def = _named_leaves(_pure(abstract_params), f"abstract_{trees.params}")
        what = f"{trees.label}parameter"
        _check_against_checkpoint(self._params_leaves, saved_shapes(trees.params), what, step)
        self.targets = {trees.params: ocp.args.StandardRestore(_nest(_restore_targets(self._params_leaves, what)))}
        self._opt_def: jax.tree_util.PyTreeDef | None = None
        self._opt_leaves: list[tuple[Name, Any]] = []
        if abstract_opt_state is not None:
            self._opt_leaves, self._opt_def = _named_leaves(abstract_opt_state, f"abstract_{trees.opt_state}")
            what = f"{trees.label}optimizer state leaf"
            saved_opt = saved_shapes(trees.opt_state) if has_opt_state else {}
            _check_against_checkpoint(self._opt_leaves, saved_opt, what, step)
            if self._opt_leaves:
                opt_targets = _nest(_restore_targets(self._opt_leaves, what))
                self.targets[trees.opt_state] = ocp.args.StandardRestore(opt_targets)

    def rebuild(self, restored: Mapping) -> tuple[PyTree, PyTree | None]:
        """The parameters (the target's type) and the optimizer state (None when its target was None) from orbax's
        restored items."""
        params = _rebuild(self._abstract_params, self._params_def, self._params_leaves, restored[self._trees.params])
        if self._opt_def is None:
            return params, None
        return params, self._opt_def.unflatten(
            [_lookup(restored[self._trees.opt_state], n) for n, _ in self._opt_leaves]
        )


def _sync_processes(name: str) -> None:
    """A barrier over all processes (nothing to wait for with one)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _pure(tree: PyTree) -> PyTree:
    """An `nnx.State` as its pure dict of arrays; any other pytree as it is."""
    return tree.to_pure_dict() if isinstance(tree, nnx.State) else tree


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _named_leaves(tree: PyTree, what: str) -> tuple[list[tuple[Name, Any]], jax.tree_util.PyTreeDef]:
    """The leaves of `tree` with their paths as tuples of strings, and the tree's structure."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    named = [(tuple(_key_name(entry) for entry in path), leaf) for path, leaf in with_paths]
    seen: set[Name] = set()
    for name, _ in named:
        if not name:
            raise ValueError(f"{what} must be a tree of arrays (a dict, State or optax state), not a single array")
        if name in seen:
            raise ValueError(f"{what}: two leaves share the path {'/'.join(name)!r}")
        seen.add(name)
    return named, treedef


def _nest(named: list[tuple[Name, Any]]) -> dict:
    nested: dict = {}
    for name, value in named:
        node = nested
        for part in name[:-1]:
            node = node.setdefault(part, {})
        node[name[-1]] = value
    return nested


def _lookup(nested: Mapping, name: Name) -> Any:
    for part in name:
        nested = nested[part]
    return nested


def _flatten_nested(nested: Any, prefix: Name = ()) -> dict[Name, Any]:
    if isinstance(nested, Mapping):
        flat: dict[Name, Any] = {}
        for key, value in nested.items():
            flat.update(_flatten_nested(value, prefix + (str(key),)))
        return flat
    return {prefix: nested}


def _saved_shapes(item_metadata: Any) -> dict[Name, tuple[int, ...]]:
    tree = getattr(item_metadata, "tree", item_metadata)
    return {name: tuple(meta.shape) for name, meta in _flatten_nested(tree).items()}


def _check_against_checkpoint(
    leaves: list[tuple[Name, Any]], saved: dict[Name, tuple[int, ...]], what: str, step: int
) -> None:
    """Raises a ValueError naming the first missing, extra or differently shaped leaf."""
    expected = {name: tuple(leaf.shape) for name, leaf in leaves}
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {_names(missing)}")
        if extra:
            parts.append(f"in the checkpoint but not in the target: {_names(extra)}")
        raise ValueError(f"the {what} paths of checkpoint step {step} do not match the target: " + "; ".join(parts))
    for name, shape in expected.items():
        if saved[name] != shape:
            raise ValueError(
                f"{what} {'/'.join(name)!r}: checkpoint step {step} has shape {saved[name]}, the target expects {shape}"
            )


def _names(names: list[Name], limit: int = 5) -> str:
    shown = ", ".join(repr("/".join(name)) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _restore_targets(leaves: list[tuple[Name, Any]], what: str) -> list[tuple[Name, jax.ShapeDtypeStruct]]:
    targets = []
    for name, leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(getattr(sharding, "mesh", None), jax.sharding.AbstractMesh):
            raise ValueError(
                f"{what} {'/'.join(name)!r}: its sharding {sharding} is over an abstract mesh; give a target whose "
                "sharding names devices (the arrays themselves, or jax.ShapeDtypeStruct(..., sharding=NamedSharding"
                "(mesh, spec)) with a concrete mesh)"
            )
        targets.append((name, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)))
    return targets


def _rebuild(abstract: PyTree, treedef: jax.tree_util.PyTreeDef, leaves: list[tuple[Name, Any]], restored: Mapping):
    pure = treedef.unflatten([_lookup(restored, name) for name, _ in leaves])
    if not isinstance(abstract, nnx.State):
        return pure
    state = jax.tree.map(lambda leaf: leaf, abstract)
    nnx.replace_by_pure_dict(state, pure)
    return state


def _key_to_json(key: jax.Array) -> dict:
    if not isinstance(key, jax.Array) or not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise TypeError(f"rng_key must be a new-style jax.random.key, got {type(key).__name__} {key!r}")
    if key.shape != ():
        raise ValueError(f"rng_key must be a single key (shape ()), got shape {key.shape}")
    data = jax.random.key_data(key)
    if not data.is_fully_replicated:
        raise ValueError(f"rng_key must be replicated, got sharding {data.sharding}")
    return {"impl": str(jax.random.key_impl(key)), "data": np.asarray(data.addressable_data(0)).tolist()}


def _key_from_json(saved: Mapping) -> jax.Array:
    return jax.random.wrap_key_data(jnp.asarray(saved["data"], dtype=jnp.uint32), impl=saved["impl"])


def _checked_json(value: Any, what: str) -> Any:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a JSON-serialisable dict, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be strings, got {key!r}")
        try:
            json.dumps(item, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{what}[{key!r}] is not JSON-serialisable: {item!r} ({err})") from err
    return dict(value)


def _checked_best_score(best_score: Any) -> float | None:
    if best_score is None:
        return None
    try:
        score = float(best_score)
    except (TypeError, ValueError) as err:
        raise TypeError(f"best_score must be a float or None, got {best_score!r}") from err
    if not math.isfinite(score):
        raise ValueError(f"best_score must be finite or None, got {best_score!r}")
    return score


def _scalar_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    scalars: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        array = np.asarray(value)
        if array.size != 1:
            raise ValueError(f"metrics[{key!r}] must be a scalar, got shape {array.shape}")
        scalars[str(key)] = float(array.reshape(()))
    return scalars
