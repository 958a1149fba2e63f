"""The RL trainer: the only place that knows the order of a step.

A step, as its phases:
  collect rollouts   prompts -> sampler (n per prompt) -> rewards (host); DAPO refills uninformative groups
  targets            scores (+ DAPO's overlong punishment) -> advantages (GRPO family; or the critic's values ->
                     GAE) -> update-batch selection (PTS / ABS / ...) -> old (and reference) log-probs
  optimize           one optimizer step per mini-batch of the update batch (and the critic's on the same rows;
                     during `critic.pretrain_steps` the critic's only)
  log                rollout, selection and update metrics, timings
and around the steps: validation, checkpoints, metric writers (`fit`).

Randomness: the step's keys are a named split of `fold_in(key(seed), step)` (`StepKeys`), so a resumed run
continues the same stream.

Parallelism: one (data, fsdp, tensor) mesh from the `mesh` settings. Parameters are sharded by the logical-axis
rules, the optimizer state like the parameters it mirrors (counts replicated), rollout rows over the batch
axes (data x fsdp). Advantages, the selection and the mini-batch gathers run jitted on those global arrays;
only the per-process work (decoding and rewards of a process's own rows) and small metric reductions touch the
host. Several processes (`jax.distributed`) each read their own prompts; process 0 writes logs and run files;
checkpoints are written by all of them (orbax).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shuffle_r1_jax.checkpoint.hf_files import copy_non_weight_files
from shuffle_r1_jax.checkpoint.train_state import CheckpointSaveError, DamagedCheckpointError, TrainCheckpointer
from shuffle_r1_jax.data.pipeline import unusable_by_reason
from shuffle_r1_jax.learner.critic import CriticTargets
from shuffle_r1_jax.learner.optimizer import learning_rate_schedule, make_optimizer
from shuffle_r1_jax.learner.packing import PackingPlan, packed_rows_bucket
from shuffle_r1_jax.learner.update import UpdateTargets
from shuffle_r1_jax.models.qwen2_5_vl import load_config, load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.lora import adapters_off
from shuffle_r1_jax.models.qwen2_5_vl.value_model import initial_value_head, read_value_head, value_params_from_policy
from shuffle_r1_jax.parallel.global_arrays import (
    allgather_json,
    batch_shard_count,
    replicated_key,
    summed_over_processes,
)
from shuffle_r1_jax.parallel.mesh_config import build_mesh
from shuffle_r1_jax.parallel.sharding import mirror_shardings
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.rewards.health import AllFailedSteps
from shuffle_r1_jax.rewards.pool import RewardPool
from shuffle_r1_jax.rollout.dynamic_sampling import fill_informative
from shuffle_r1_jax.rollout.generate import RolloutGenerator
from shuffle_r1_jax.rollout.merge import merge_batches
from shuffle_r1_jax.rollout.metrics import group_pass_rates, rollout_metrics
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.rollout.types import ScoredRollouts
from shuffle_r1_jax.sampling import FINISH_LENGTH
from shuffle_r1_jax.train.components import (
    load_policy,
    prompt_encoder,
    prompt_stream,
    reward_pool,
    rollout_generator,
)
from shuffle_r1_jax.train.evaluation import Evaluator
from shuffle_r1_jax.train.export import HF_SOURCE, export_trainer_checkpoint, record_critic_source, record_lora
from shuffle_r1_jax.train.metric_writers import MetricWriter
from shuffle_r1_jax.train.preflight import check_workdir
from shuffle_r1_jax.train.programs import (
    CriticModel,
    SpecialTokens,
    StepPrograms,
    build_step_programs,
)
from shuffle_r1_jax.train.settings import DataSettings, Phase, RunSettings

logger = logging.getLogger(__name__)

# what a damaged-checkpoint error adds, by `checkpoint.on_damaged`
_ON_DAMAGED_HINTS = {
    "refuse": "checkpoint.on_damaged = 'refuse': move the step away, or set it to 'fallback' to resume from the "
    "newest intact step",
    "fallback": "checkpoint.on_damaged = 'fallback'",
}


@dataclasses.dataclass(frozen=True)
class StepKeys:
    """The PRNG keys of one step: a named split of the step's key `fold_in(run key, step)` by phase id.

    Attributes:
      step_key: the step's key, `fold_in(run key, step)`.
    """

    step_key: jax.Array

    SAMPLE = 0  # DAPO's extra prompt batch i samples with phase SAMPLE + 16 * i
    SELECT = 1

    @classmethod
    def at(cls, run_key: jax.Array, step: int) -> "StepKeys":
        """The keys of step `step` of the run whose key is `run_key`."""
        return cls(jax.random.fold_in(run_key, step))

    def sample(self, attempt: int = 0) -> jax.Array:
        """The sampler's key for the step's `attempt`-th prompt batch (0 unless DAPO refills)."""
        return jax.random.fold_in(self.step_key, self.SAMPLE + 16 * attempt)

    @property
    def select(self) -> jax.Array:
        """The update-batch selection's key (PTS random variant, ABS draws)."""
        return jax.random.fold_in(self.step_key, self.SELECT)


@dataclasses.dataclass
class UpdateBatch:
    """The targets of one rollout batch's optimizer steps (U update rows in k mini-batches).

    Attributes:
      rows: one int32 `[U / k]` array of rollout-row indices per mini-batch.
      valid: one bool `[U / k]` array of valid flags per mini-batch.
      targets: the per-row targets (token advantages, old and reference log-probs, image features).
      selection_metrics: the selection's metrics (and GAE's and the overlong punishment's), float32 scalars.
      selector_stats: the selector's statistics (ABS draws), float32 scalars.
      plans: the packing of each mini-batch's micro-batches (None each with `train.pack_sequences` off).
      critic_targets: the critic's targets (its predictions and the GAE returns), None without a critic.
    """

    rows: list[jax.Array]
    valid: list[jax.Array]
    targets: UpdateTargets
    selection_metrics: dict[str, jax.Array]
    selector_stats: dict[str, jax.Array]
    plans: list[PackingPlan | None]
    critic_targets: CriticTargets | None = None


@dataclasses.dataclass
class RunSummary:
    """What a run ends with.

    The first and last accuracies are read from the workdir's metrics log where it exists (so a resumed run
    reports its whole history), else from this process's validations; all three are None without validation.

    Attributes:
      steps: the steps done.
      start_accuracy: the first validation accuracy.
      end_accuracy: the last validation accuracy.
      best_accuracy: the best validation accuracy (kept in the checkpoints, so a resumed run's earlier steps
        count).
      records_read: training records read over all processes (kept in the checkpoints with the data position).
      skipped_records: the training records skipped as unusable, by reason (reasons with none left out).
    """

    steps: int
    start_accuracy: float | None
    end_accuracy: float | None
    best_accuracy: float | None
    records_read: int
    skipped_records: dict[str, int]


class Trainer:
    """Builds everything a run needs from its resolved settings and runs the loop.

    Resumes from `workdir` when it holds a checkpoint: parameters, optimizer state (and the critic's of a
    value-based run), step, best score, the run's key and the data position.

    Args:
      settings: the resolved run settings.
      workdir: the run directory (checkpoints, `metrics.jsonl`, TensorBoard events, `eval_samples.jsonl`),
        created if missing.
      instrument: applied to the step's programs once they are built (the step benchmark wraps them to record
        their calls); None keeps them as built.

    Attributes:
      settings: the run settings.
      mesh: the (data, fsdp, tensor) device mesh.
      graphdef: the policy's graph definition.
      params: the trained parameters, a pure dict of sharded arrays.
      param_shardings: the parameters' shardings.
      model_config: the policy's model config.
      optimizer: the optax optimizer.
      opt_state: the optimizer state, sharded like the parameters it mirrors.
      opt_shardings: the optimizer state's shardings.
      programs: the step's jitted programs (`StepPrograms`).
      critic: the critic's graph definition, optimizer and shardings (`CriticModel`), None without one.
      critic_params: the critic's parameters, a pure dict of sharded arrays (None without a critic).
      critic_opt_state: the critic's optimizer state (None without a critic).
      critic_schedule: the critic's learning-rate schedule (None without a critic).
      step: the steps done.
      best_score: the best validation accuracy so far (None before any validation).
    """

    def __init__(
        self, settings: RunSettings, workdir: str, *, instrument: Callable[[StepPrograms], StepPrograms] | None = None
    ):
        self.settings = settings
        self.workdir = Path(workdir)
        # what can fail without the model fails before it loads: the workdir, the tokenizer, the data files
        check_workdir(self.workdir, settings)
        self.model_config = load_config(settings.model.checkpoint)
        self._encoders: dict[str, PromptEncoder] = {}
        self.encoder = self._encoder(settings.data)
        self.phases = settings.phases or (Phase(0, "", 0, settings.train.total_steps, settings),)
        self.phase = self.phases[0]
        self.settings = self.phase.settings
        self.train_batches = self._training_stream(self.phase)
        self.mesh = build_mesh(settings.mesh)
        logger.info("mesh %s over %d processes", dict(self.mesh.shape), jax.process_count())
        self.graphdef, self.params = load_policy(settings, self.mesh)
        self.param_shardings = jax.tree.map(lambda x: x.sharding, self.params)
        self.ref_params = self._reference_params()
        self.placer = BatchPlacer(self.mesh, self.encoder.pad_token_id, self.model_config.vision.spatial_merge_size**2)
        self.optimizer = make_optimizer(settings.optimizer, self.params)
        self.schedule = learning_rate_schedule(settings.optimizer)
        self.opt_shardings = mirror_shardings(
            jax.eval_shape(self.optimizer.init, self.params), self.params, self.param_shardings, self.mesh
        )
        self.opt_state = jax.jit(self.optimizer.init, out_shardings=self.opt_shardings)(self.params)
        self.critic, self.critic_params, self.critic_opt_state, self.critic_schedule = None, None, None, None
        if settings.critic is not None:
            self.critic, self.critic_params, self.critic_opt_state = self._load_critic()
            self.critic_schedule = learning_rate_schedule(settings.critic.optimizer)
        self.tokens = SpecialTokens.of(self.model_config, self.encoder.tokenizer)
        self.instrument = instrument
        self._programs: dict[tuple, StepPrograms] = {}
        self._reward_pools: dict[str, RewardPool] = {}
        self._use_phase_programs()
        # validation: the run's own settings (the longest responses, its reward) whatever the phase
        self.evaluator = self._evaluator(settings) if settings.data.val else None
        self.checkpointer = TrainCheckpointer(
            self.workdir / "checkpoints",
            keep_last=settings.checkpoint.keep_last,
            keep_best=settings.checkpoint.keep_best,
            best_metric="val/accuracy",
            best_mode="max",
            on_damaged=settings.checkpoint.on_damaged,
            save_retries=settings.checkpoint.save_retries,
        )
        if jax.process_index() == 0:
            copy_non_weight_files(settings.model.checkpoint, self.workdir / "checkpoints" / HF_SOURCE)
            record_lora(self.workdir / "checkpoints", settings.model.lora)
            if settings.critic is not None:
                record_critic_source(
                    self.workdir / "checkpoints",
                    settings.critic.checkpoint or settings.model.checkpoint,
                    with_vision=not settings.critic.share_image_features,
                )
        self.step = 0
        self.best_score: float | None = None
        self.base_key = replicated_key(jax.random.key(settings.seed), self.mesh)
        self._restore()
        self.writer = MetricWriter(
            self.workdir, total_steps=settings.train.total_steps, start_step=self.step + 1 if self.step else 0
        )

    # ---------------------------------------------------------------------------------------------- builders

    def _load_critic(self):
        """(`CriticModel`, parameters, optimizer state) of the critic: the policy's starting parameters (or
        `critic.checkpoint`'s) as a value model, its value head read beside that checkpoint or fresh (seeded by
        `seed`)."""
        settings, m = self.settings, self.settings.model
        critic = settings.critic
        with_vision = not critic.share_image_features
        if critic.checkpoint:
            model, config = load_pretrained(
                critic.checkpoint,
                m.dtype,
                param_dtype=m.param_dtype,
                mesh=self.mesh,
                rules=settings.mesh.rules,
            )
            source = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            head = read_value_head(critic.checkpoint, config.text.hidden_size)
        else:
            config, source, head = self.model_config, self.params, None
        head_source = "fresh" if head is None else "saved"
        if head is None:
            head = initial_value_head(config.text.hidden_size, settings.seed, m.param_dtype)
        model = CriticModel.of(settings, config, self.mesh)
        params = value_params_from_policy(source, head, with_vision=with_vision)
        params = jax.jit(
            lambda p: jax.tree.map(lambda x: jnp.asarray(x, m.param_dtype), p), out_shardings=model.param_shardings
        )(params)
        opt_state = jax.jit(model.optimizer.init, out_shardings=model.opt_shardings)(params)
        logger.info(
            "critic from %s (%s value head, %s)",
            critic.checkpoint or "the policy's starting parameters",
            head_source,
            "its own vision tower" if with_vision else "the policy's image features",
        )
        return model, params, opt_state

    def _use_phase_programs(self) -> None:
        """Points the step at the current phase's programs, reward pool and rollout generator; programs are built
        once per response length (and overlong shaping), reward pools once per reward."""
        settings = self.settings
        key = (settings.rollout.max_new_tokens, settings.reward.overlong_buffer, settings.reward.overlong_factor)
        if key not in self._programs:
            programs = build_step_programs(
                settings,
                self.graphdef,
                self.mesh,
                self.optimizer,
                self.tokens,
                param_shardings=self.param_shardings,
                opt_shardings=self.opt_shardings,
                critic=self.critic,
            )
            self._programs[key] = programs if self.instrument is None else self.instrument(programs)
        self.programs = self._programs[key]
        self.reward_pool = self._reward_pool(settings)
        self.generate = self._rollout_generator(self.programs.sampler, settings.rollout.n)

    def _reward_pool(self, settings: RunSettings) -> RewardPool:
        """The scoring pool of `settings.reward.name` (one per reward: a stage may have its own)."""
        reward = settings.reward.name
        if reward not in self._reward_pools:
            self._reward_pools[reward] = reward_pool(settings)
        return self._reward_pools[reward]

    def _training_stream(self, phase: Phase):
        """This process's training prompt batches of `phase`'s stage (each stage its own stream, seeded by
        `data.seed` + the stage's index)."""
        data = phase.settings.data
        return self._prompt_stream(data, data.train, shuffle=True, seed=data.seed + phase.stage, sampling=data.sampling)

    def _enter_phase(self, phase: Phase, data_state: dict | None = None) -> None:
        """Switches the run to `phase`: its settings, programs, reward and, for a new stage, the stage's data stream
        (positioned by `data_state` when that was saved in the same stage)."""
        new_stage = phase.stage != self.phase.stage
        self.phase, self.settings = phase, phase.settings
        if new_stage:
            self.train_batches = self._training_stream(phase)
        if data_state is not None and data_state.get("stage", 0) == phase.stage:
            self._restore_data_position(data_state)
        self._use_phase_programs()
        if phase.name:
            logger.info(
                "step %d: stage %d (%s), responses up to %d tokens",
                self.step,
                phase.stage,
                phase.name,
                phase.settings.rollout.max_new_tokens,
            )
        else:
            logger.info("step %d: responses up to %d tokens", self.step, phase.settings.rollout.max_new_tokens)

    def _phase_at(self, step: int) -> Phase:
        """The phase whose steps include the step after `step` steps (the last phase at the end of the run)."""
        return next((p for p in self.phases if p.first_step <= step < p.last_step), self.phases[-1])

    def _reference_params(self):
        """A copy of the starting policy for the KL loss (the update donates, and so frees, the trained
        parameters' buffers), or None without KL or under LoRA (whose reference, the base weights with the adapters
        off, `reference_policy` builds each step from the current parameters)."""
        if self.settings.loss.kl_coef <= 0 or self.settings.model.lora is not None:
            return None
        copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=self.param_shardings)
        return copy(self.params)

    def reference_policy(self):
        """The parameters of the KL loss's reference policy, or None without KL: the starting policy's copy, or
        under LoRA the current parameters with every adapter's B set to zero (the frozen base weights; valid until
        the next update donates them)."""
        if self.settings.loss.kl_coef <= 0:
            return None
        if self.settings.model.lora is None:
            return self.ref_params
        return adapters_off(self.params)

    def _prompt_stream(self, data: DataSettings, spec: str, **order):
        """This process's prompt batches of `spec` read with `data`'s columns and prompt format
        (`components.prompt_stream`; `order`: shuffle, seed, epochs, sampling)."""
        return prompt_stream(data, spec, self._encoder(data), self.model_config, **order)

    def _encoder(self, data: DataSettings) -> PromptEncoder:
        """The prompt encoder of `data`'s prompt format (one per format: a stage may have its own)."""
        if data.prompt_format not in self._encoders:
            self._encoders[data.prompt_format] = prompt_encoder(self.settings.model.checkpoint, data)
        return self._encoders[data.prompt_format]

    def _rollout_generator(
        self, sampler, n: int, settings: RunSettings | None = None, pool: RewardPool | None = None
    ) -> RolloutGenerator:
        """A rollout generator over `sampler` with `n` samples per prompt, the response length and reward limits of
        `settings` (default: the current phase's) and the rewards of `pool` (default: the phase's)."""
        return rollout_generator(
            settings or self.settings,
            sampler,
            self.programs.image_features,
            self.placer,
            self.encoder.tokenizer,
            pool or self.reward_pool,
            n,
        )

    def _evaluator(self, settings: RunSettings) -> Evaluator:
        """The validation over `data.val` of `settings` (its reward and response length), with its own samplers and
        key (`evaluation.validation_key`)."""
        return Evaluator.build(
            settings,
            graphdef=self.graphdef,
            mesh=self.mesh,
            tokens=self.tokens,
            image_features=self.programs.image_features,
            placer=self.placer,
            encoder=self._encoder(settings.data),
            model_config=self.model_config,
            pool=self._reward_pool(settings),
            samples_file=self.workdir / "eval_samples.jsonl",
        )

    # ------------------------------------------------------------------------------------------------ state

    def _restore(self) -> None:
        """Restores the newest intact checkpoint of the workdir, if any (damaged newer ones are moved aside or
        refused by `checkpoint.on_damaged`).

        Raises:
          DamagedCheckpointError: naming the damaged step, its path and `checkpoint.on_damaged`.
        """
        if self.checkpointer.latest_step() is None:
            return
        try:
            restored = self.checkpointer.restore(
                abstract_params=_abstract(self.params),
                abstract_opt_state=_abstract(self.opt_state),
                abstract_critic_params=None if self.critic is None else _abstract(self.critic_params),
                abstract_critic_opt_state=None if self.critic is None else _abstract(self.critic_opt_state),
            )
        except DamagedCheckpointError as err:
            raise DamagedCheckpointError(f"{err} ({_ON_DAMAGED_HINTS[self.settings.checkpoint.on_damaged]})") from err
        self.params, self.opt_state, self.step = restored.params, restored.opt_state, restored.step
        if self.critic is not None:
            self.critic_params, self.critic_opt_state = restored.critic_params, restored.critic_opt_state
        self.best_score = restored.best_score
        self.base_key = replicated_key(restored.rng_key, self.mesh)
        phase = self._phase_at(self.step)
        if phase is self.phase:
            self._restore_data_position(restored.data_state)
        else:
            self._enter_phase(phase, restored.data_state)
        logger.info("resumed from step %d (%s)", self.step, self.checkpointer.directory)

    def _restore_data_position(self, data_state: dict) -> None:
        """Each process takes its own saved iterator state (of the current stage: a state saved at the end of the
        previous one is not taken, the new stage's stream starts); a checkpoint of another process count restarts
        the data stream from its seed (the parameters, optimizer state and step still resume)."""
        if data_state.get("stage", 0) != self.phase.stage:
            return
        states = data_state.get("processes", [data_state])
        if len(states) != jax.process_count():
            logger.warning(
                "the checkpoint's data position was saved by %d processes and this run has %d: the prompt stream "
                "restarts from data seed %d",
                len(states),
                jax.process_count(),
                self.settings.data.seed,
            )
            return
        self.train_batches.set_state(states[jax.process_index()])

    def _save(self, metrics: dict) -> None:
        """Saves the step's checkpoint: parameters, optimizer state (the critic's too), run key, every process's data
        position, the best score and the step's `val/` metrics."""
        data_state = {"stage": self.phase.stage, "processes": allgather_json(self.train_batches.get_state())}
        self.checkpointer.save(
            self.step,
            self.params,
            self.opt_state,
            self.base_key,
            data_state,
            self.best_score,
            metrics={k: v for k, v in metrics.items() if k.startswith("val/")},
            critic_params=self.critic_params,
            critic_opt_state=self.critic_opt_state,
        )

    def _validate(self) -> dict:
        """Runs validation, updates the best score and returns the `val/` metrics."""
        metrics = self.evaluator.evaluate(self.params, self.step)
        accuracy = metrics.get("val/accuracy")
        if accuracy is not None and (self.best_score is None or accuracy > self.best_score):
            self.best_score = accuracy
        return metrics

    # ------------------------------------------------------------------------------------------------- step

    def train_step(self) -> dict:
        """One rollout batch and its optimizer steps; returns the step's metrics (the same on every process)."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        keys = StepKeys.at(self.base_key, self.step)
        batch = next(self.train_batches)
        timings["data"] = time.perf_counter() - start
        scored, metrics = self.collect_rollouts(batch, keys)
        timings.update(scored.timings)
        with jax.set_mesh(self.mesh):
            update_batch = self.targets(scored, keys.select, timings)
            update_metrics = self.optimize(scored, update_batch, timings)
        metrics.update(self.log_metrics(scored, update_batch, update_metrics, timings, start))
        return metrics

    def collect_rollouts(self, batch, keys: StepKeys) -> tuple[ScoredRollouts, dict]:
        """Generates and scores the step's rollouts.

        Args:
          batch: this process's prompt batch of the step.
          keys: the step's keys.

        Returns:
          (the scored rollout batch, its refill statistics). With DAPO's dynamic sampling the batch is refilled
          with informative groups from further prompt batches; with CPPO's fill it merges `rl.fill_batches` prompt
          batches (the step's and the next of the stream: `fill_batches` x the prompts), statistic
          `cppo/prompt_batches`; otherwise the statistics are empty.
        """
        rl = self.settings.rl
        if not rl.dynamic_sampling and rl.fill_batches == 1:
            return self._generate_tracked(batch, keys.sample()), {}
        attempts = iter(range(rl.dynamic_sampling_max_tries if rl.dynamic_sampling else rl.fill_batches))

        def sample() -> ScoredRollouts:
            attempt = next(attempts)
            prompts = batch if attempt == 0 else next(self.train_batches)
            return self._generate_tracked(prompts, keys.sample(attempt))

        if not rl.dynamic_sampling:
            scored = [sample() for _ in range(rl.fill_batches)]
            merged = merge_batches(scored, self.settings.rollout.n, self.encoder.pad_token_id, self.placer)
            return merged, {"cppo/prompt_batches": float(rl.fill_batches)}
        return fill_informative(
            sample,
            self.settings.data.prompts_per_process,
            self.settings.rollout.n,
            max_tries=rl.dynamic_sampling_max_tries,
            fallback=rl.dynamic_sampling_fallback,
            pad_id=self.encoder.pad_token_id,
            placer=self.placer,
        )

    def _generate_tracked(self, batch, key: jax.Array) -> ScoredRollouts:
        """Generates and scores the rollouts of a training prompt batch; its prompts' pass rates go to the training
        stream's pass-rate table (which prioritized sampling draws by)."""
        scored = self.generate(self.params, batch, key)
        self.train_batches.observe(batch.record_indices, group_pass_rates(scored.parts, self.settings.rollout.n))
        return scored

    def targets(self, scored: ScoredRollouts, key: jax.Array, timings: dict[str, float]) -> UpdateBatch:
        """Advantages, the update batch and the old (and reference) log-probs of a scored rollout batch.

        Args:
          scored: the step's scored rollouts.
          key: the selection's key (`StepKeys.select`); folded with 1, also the LoRA adapters' dropout key.
          timings: the step's phase seconds; "advantage" and "old_logprobs" are added.

        The scores are the reward's "overall" plus DAPO's overlong punishment when `reward.overlong_buffer` is on
        (DAPO's dynamic sampling chose the groups on the raw scores before); the estimators (and GAE) also take the
        reward's span rewards at their tokens (`ScoredRollouts.token_rewards`); with `rl.mask_truncated` the policy
        loss leaves out the responses cut at `rollout.max_new_tokens`.

        Returns:
          The `UpdateBatch` of the step.
        """
        settings = self.settings
        programs = self.programs
        t = time.perf_counter()
        rollouts = scored.rollouts
        features = self._image_features(scored)
        policy_features = features if settings.optimizer.freeze_vision else None
        # the raw scores DAPO's dynamic sampling filtered on, then the overlong punishment (every estimator sees it)
        scores = self.placer.rows(np.asarray(scored.parts["overall"], np.float32))
        overlong_metrics = {}
        if programs.overlong_penalty is not None:
            penalty, overlong_metrics = programs.overlong_penalty(rollouts.mask)
            scores = scores + penalty
        span_rewards = self.placer.rows(np.asarray(scored.token_rewards, np.float32))
        critic_targets, gae_metrics = None, {}
        if self.critic is None:
            advantages = programs.advantages(scores, span_rewards, rollouts.mask)
        else:
            critic_features = features if settings.critic.share_image_features else None
            values = programs.values(self.critic_params, rollouts, critic_features)
            advantages, returns, gae_metrics = programs.gae(scores, span_rewards, rollouts.mask, values)
            critic_targets = CriticTargets(old_values=values, returns=returns, image_features=critic_features)
        rows, valid, selector_stats = programs.select(advantages.rollout, key)
        timings["advantage"] = time.perf_counter() - t

        t = time.perf_counter()
        plans, logprob_plan, packing = self.packing_plans(rollouts, rows, valid)
        if settings.rl.old_logprobs == "sampler":
            old = rollouts.sampler_logprobs
        else:
            old = programs.logprobs(self.params, rollouts, policy_features, rows, logprob_plan)
        reference = self.reference_policy()
        ref = None
        if reference is not None:
            ref = programs.logprobs(reference, rollouts, policy_features, rows, logprob_plan)
        jax.block_until_ready(old)
        timings["old_logprobs"] = time.perf_counter() - t
        loss_rows = None
        if settings.rl.mask_truncated:  # the critic's targets keep them: it learns what truncation scores
            loss_rows = self.placer.rows(np.asarray(scored.finish) != FINISH_LENGTH)
        lora = settings.model.lora
        targets = UpdateTargets(
            advantages=advantages.token.reshape(rollouts.tokens.shape),
            old_logprobs=old,
            ref_logprobs=ref,
            image_features=policy_features,
            loss_rows=loss_rows,
            dropout_key=jax.random.fold_in(key, 1) if lora is not None and lora.dropout > 0 else None,
        )
        metrics = {
            **programs.selection_metrics(advantages.rollout, rows, valid, rollouts.mask),
            **packing,
            **gae_metrics,
            **overlong_metrics,
        }
        return UpdateBatch(rows, valid, targets, metrics, selector_stats, plans, critic_targets)

    def _image_features(self, scored: ScoredRollouts) -> jax.Array | None:
        """The frozen image features the step's passes read (the policy's with `optim.freeze_vision`, the critic's
        with `critic.share_image_features`), or None when none reads them or the prompts have no images: the
        sampler's, under the same parameters; a DAPO batch merged from several has none, so they are computed."""
        vision = scored.rollouts.prompts.vision
        critic_reads = self.settings.critic is not None and self.settings.critic.share_image_features
        if vision is None or not (self.settings.optimizer.freeze_vision or critic_reads):
            return None
        if scored.image_features is not None:
            return scored.image_features
        return self.programs.image_features(self.params, vision)

    def packing_plans(
        self, rollouts, rows: list[jax.Array], valid: list[jax.Array]
    ) -> tuple[list[PackingPlan | None], PackingPlan | None, dict[str, float]]:
        """Where the update rows' sequences sit in the packed rows of the update and log-prob passes.

        The packed rows per pass are the plan's need rounded up to a bucket (`learner.packing.packed_rows_bucket`),
        so the passes compile for a few sizes only. A pass whose bucket is as many rows as it has sequences (no
        two sequences share a row) runs padded: packing would save nothing and cost its gathers.

        Args:
          rollouts: the rollout batch.
          rows: the mini-batches' rows (`select`'s lists).
          valid: their valid flags.

        Returns:
          (one plan per mini-batch or None each, the log-prob passes' plan or None, {"packing/update_rows",
          "packing/logprob_rows": packed rows over padded rows of a micro-batch}); (None per mini-batch, None,
          {}) with `train.pack_sequences` off.
        """
        train = self.settings.train
        if not train.pack_sequences:
            return [None] * len(rows), None, {}
        update, logprob, needed = self.programs.plan_packing(rollouts, rows, valid)
        update_needed, logprob_needed = (int(x) for x in jax.device_get(needed))
        shards = batch_shard_count(self.mesh)
        update_micro_rows = rows[0].shape[0] // train.micro_batches
        update_rows = packed_rows_bucket(update_needed, update_micro_rows, shards)
        logprob_rows = packed_rows_bucket(logprob_needed, train.logprob_micro_batch_rows, shards)
        plans = [PackingPlan(*plan, update_rows) if update_rows < update_micro_rows else None for plan in update]
        logprob_plan = PackingPlan(*logprob, logprob_rows) if logprob_rows < train.logprob_micro_batch_rows else None
        ratios = {
            "packing/update_rows": update_rows / update_micro_rows,
            "packing/logprob_rows": logprob_rows / train.logprob_micro_batch_rows,
        }
        return plans, logprob_plan, ratios

    @property
    def pretraining_critic(self) -> bool:
        """Whether the next step trains the critic only (its first `critic.pretrain_steps` steps)."""
        return self.settings.critic is not None and self.step < self.settings.critic.pretrain_steps

    def optimize(self, scored: ScoredRollouts, update_batch: UpdateBatch, timings: dict[str, float]) -> list[dict]:
        """One optimizer step per mini-batch of `update_batch` (the policy's, unless the critic is pretraining, and
        the critic's); "update" seconds are added to `timings`.

        Returns:
          Each optimizer step's metrics, on the host.
        """
        t = time.perf_counter()
        metrics = []
        train_policy = not self.pretraining_critic
        targets, dropout_key = update_batch.targets, update_batch.targets.dropout_key
        for minibatch, (rows, valid, plan) in enumerate(zip(update_batch.rows, update_batch.valid, update_batch.plans)):
            step_metrics = {}
            if train_policy:
                if dropout_key is not None:  # each mini-batch's adapters drop with their own masks
                    targets = dataclasses.replace(targets, dropout_key=jax.random.fold_in(dropout_key, minibatch))
                self.params, self.opt_state, step_metrics = self.programs.update(
                    self.params, self.opt_state, scored.rollouts, targets, rows, valid, plan
                )
            if self.critic is not None:
                self.critic_params, self.critic_opt_state, critic_metrics = self.programs.critic_update(
                    self.critic_params,
                    self.critic_opt_state,
                    scored.rollouts,
                    update_batch.critic_targets,
                    rows,
                    valid,
                    plan,
                )
                step_metrics = {**step_metrics, **critic_metrics}
            metrics.append(step_metrics)
        metrics = jax.device_get(metrics)
        timings["update"] = time.perf_counter() - t
        return metrics

    def log_metrics(
        self, scored: ScoredRollouts, update_batch: UpdateBatch, updates: list[dict], timings: dict, start: float
    ) -> dict:
        """The step's metrics: rollout, selection, update, learning rate, timings, throughput, data counts and
        sampler compilations.

        Args:
          scored: the step's scored rollouts.
          update_batch: the step's update batch.
          updates: each optimizer step's metrics; they are averaged, except `update_skipped` and
            `critic/update_skipped`, which are summed.
          timings: the step's phase seconds.
          start: the `time.perf_counter()` at the step's start.

        Returns:
          The metrics by name, floats.
        """
        settings = self.settings
        metrics = rollout_metrics(scored)
        metrics.update({k: float(v) for k, v in jax.device_get(update_batch.selection_metrics).items()})
        metrics.update({k: float(np.mean([m[k] for m in updates])) for k in updates[0]})
        for skipped in ("update_skipped", "critic/update_skipped"):
            if skipped in updates[0]:
                metrics[skipped] = float(np.sum([m[skipped] for m in updates]))
        metrics.update({k: float(v) for k, v in jax.device_get(update_batch.selector_stats).items()})
        minibatches = settings.train.num_minibatches
        pretrain_steps = 0 if settings.critic is None else settings.critic.pretrain_steps
        # the policy's optimizer steps start after the critic's pretraining
        metrics["learning_rate"] = float(self.schedule(max(self.step - pretrain_steps, 0) * minibatches))
        if settings.critic is not None:
            metrics["critic/pretraining"] = float(self.pretraining_critic)
            metrics["critic/learning_rate"] = float(self.critic_schedule(self.step * minibatches))
        total = time.perf_counter() - start
        generated = settings.data.rollout_batch_prompts * settings.rl.fill_batches * settings.rollout.n
        tokens = metrics["response_length/mean"] * generated
        metrics.update({f"timing/{k}": v for k, v in timings.items()})
        metrics.update({"timing/step": total, "throughput/tokens_per_s": tokens / total})
        metrics.update({f"data/{k}": float(v) for k, v in self.data_counts().items()})
        metrics["compile/sampler_programs"] = float(sum(p.sampler.compilations for p in self._programs.values()))
        metrics["stage"] = float(self.phase.stage)
        metrics["rollout/max_new_tokens"] = float(settings.rollout.max_new_tokens)
        return metrics

    def data_counts(self) -> dict[str, int]:
        """The training stream's counters (`PromptBatchIterator.counts`) summed over the processes (a collective:
        every process calls it)."""
        return summed_over_processes(self.train_batches.counts())

    def _report_skipped_records(self, metrics: dict, skipped_before: float) -> None:
        """Logs the skipped training records by reason when the step skipped some: a warning when over
        `data.warn_bad_fraction` of the records read so far were skipped."""
        skipped, read = metrics["data/bad_records/total"], metrics["data/records_read"]
        if skipped == skipped_before or not read:
            return
        reasons = ", ".join(f"{r} {int(n)}" for r, n in unusable_by_reason(metrics, "data/bad_records/").items())
        fraction = skipped / read
        level = logging.WARNING if fraction > self.settings.data.warn_bad_fraction else logging.INFO
        logger.log(
            level,
            "step %d: %d of %d training records read so far skipped (%.1f%%; data.warn_bad_fraction = %g): %s",
            self.step,
            skipped,
            read,
            100 * fraction,
            self.settings.data.warn_bad_fraction,
            reasons,
        )

    # ------------------------------------------------------------------------------------------------- loop

    def fit(self, after_step: Callable[[int, dict], None] | None = None) -> RunSummary:
        """Runs to `train.total_steps` (validation before, every k steps and at the end; checkpoints every k).

        With `checkpoint.export_hf` set, process 0 exports the latest checkpoint in the Hugging Face layout at
        the end.

        Args:
          after_step: called with (step, metrics) when a step's training is done, before its validation,
            logging and checkpoint (the step benchmark's hook).

        Returns:
          The `RunSummary` of the run.

        Raises:
          FloatingPointError: `train.max_nonfinite_in_a_row` steps in a row had a skipped (non-finite) update.
          RewardHealthError: every sample's reward failed in `reward.max_failed_steps` steps in a row.
          CheckpointSaveError: a checkpoint save failed (after `checkpoint.save_retries` retries); the failure of a
            save written in the background stops the run before the next step.
        """
        settings = self.settings
        total = settings.train.total_steps
        history: list[float] = []
        if self.evaluator is not None and settings.eval.before_training and self.step == 0:
            metrics = self._validate()
            history.append(metrics["val/accuracy"])
            self.writer.write(0, metrics)
        nonfinite_in_a_row = 0
        skipped_before = float(self.data_counts()["bad_records/total"])
        failed_rewards = AllFailedSteps(settings.reward.max_failed_steps, settings.reward.name)
        try:
            while self.step < total:
                self.checkpointer.raise_if_a_save_failed()
                if self.step >= self.phase.last_step:
                    self._enter_phase(self._phase_at(self.step))
                metrics = self.train_step()
                self.step += 1
                self._report_skipped_records(metrics, skipped_before)
                skipped_before = metrics["data/bad_records/total"]
                last = self.step == total
                skipped = metrics.get("update_skipped", 0.0) + metrics.get("critic/update_skipped", 0.0)
                nonfinite_in_a_row = nonfinite_in_a_row + 1 if skipped else 0
                if after_step is not None:
                    after_step(self.step, metrics)
                if self.evaluator is not None and _due(settings.eval.every, self.step, last):
                    metrics.update(self._validate())
                    history.append(metrics["val/accuracy"])
                self.writer.write(self.step, metrics)
                if _due(settings.checkpoint.every, self.step, last):
                    self._save(metrics)
                if nonfinite_in_a_row >= settings.train.max_nonfinite_in_a_row:
                    raise FloatingPointError(
                        f"{nonfinite_in_a_row} steps in a row skipped an update for a non-finite loss or gradient "
                        f"(step {self.step}); stopping (train.max_nonfinite_in_a_row)"
                    )
                failed_rewards.observe(*self._reward_outcomes(metrics))
        except CheckpointSaveError as err:
            saved = self.checkpointer.latest_step()
            raise CheckpointSaveError(
                f"{err} (the run stopped after training step {self.step}; the latest saved step is {saved})"
            ) from err
        finally:
            self.checkpointer.wait_until_finished()
        if settings.checkpoint.export_hf and jax.process_index() == 0:
            step = export_trainer_checkpoint(self.workdir / "checkpoints", settings.checkpoint.export_hf)
            logger.info("exported step %d to %s (Hugging Face layout)", step, settings.checkpoint.export_hf)
        history = _logged_accuracies(self.workdir / "metrics.jsonl") or history
        counts = self.data_counts()
        return RunSummary(
            steps=self.step,
            start_accuracy=history[0] if history else None,
            end_accuracy=history[-1] if history else None,
            best_accuracy=self.best_score,
            records_read=counts["records_read"],
            skipped_records=unusable_by_reason(counts),
        )

    def _reward_outcomes(self, metrics: dict) -> tuple[dict[str, float], int]:
        """(failed samples by reason, samples scored) of a step over all processes, from its metrics; a DAPO step
        scored `dapo/tries` prompt batches, a CPPO step with fill `rl.fill_batches`."""
        failed = {k.removeprefix("reward_failures/"): v for k, v in metrics.items() if k.startswith("reward_failures/")}
        batch = self.settings.data.rollout_batch_prompts * self.settings.rollout.n
        return failed, batch * int(metrics.get("dapo/tries", self.settings.rl.fill_batches))

    def close(self) -> None:
        """Releases the reward workers, the checkpointer (waiting for a checkpoint in flight) and the writers."""
        for pool in self._reward_pools.values():
            pool.close()
        self.checkpointer.close()
        self.writer.close()


def _due(every: int, step: int, last: bool) -> bool:
    """Whether a periodic action (every `every` steps, 0 = never, and at the last step) runs after `step`."""
    return bool(every) and (step % every == 0 or last)


def _abstract(tree):
    """Shape, dtype and sharding of each array of `tree` (a restore target on the current mesh)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _logged_accuracies(metrics_file: Path) -> list[float]:
    """The validation accuracies in the run's metrics file, in step order.

    Reading the file lets a resumed or re-run workdir report its whole history. [] where the metrics file does
    not exist (only process 0 writes it).
    """
    if not metrics_file.exists():
        return []
    records = (json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip())
    return [r["val/accuracy"] for r in sorted(records, key=lambda r: r["step"]) if "val/accuracy" in r]


def write_summary(workdir: str, summary: RunSummary) -> None:
    """Writes `summary` to `<workdir>/summary.json`."""
    (Path(workdir) / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2) + "\n")
