"""The jitted programs of a training run, built in one place from the resolved settings.

`build_step_programs` declares every program's static arguments (closed over), donation and output shardings
once. The trainer calls them; the memory planner (`perf.memory_plan`) and the step benchmark
(`perf.step_benchmark`) lower the very same objects on abstract inputs (`program.lower(...)`). Parameters are
always arguments (a pure dict of arrays), never constants.

  image_features     (params, vision) -> f[M, H]: the vision tower and merger once per rollout batch
  sampler            `Sampler` whose `prefill_program` / `decode_program` run once per sampler call
  overlong_penalty   (mask i32[R, T]) -> (f32[R], metrics): DAPO's overlong punishment of each response, added to
                     its score before the advantages (None with `reward.overlong_buffer` 0)
  advantages         (scores f32[R], span rewards f32[R, T], mask i32[R, T]) -> Advantages ([P, n, T] and
                     [P, n]): the estimator over the scores and the rewards' span rewards at their tokens
  select             (rollout advantages f32[P, n], key) -> (rows, valid, stats): the update batch, cut into
                     `train.num_minibatches` lists of `int32[U / k]` rows and `bool[U / k]` valid flags
  selection_metrics  (rollout advantages, rows, valid, mask) -> float32 scalars
  plan_packing       (rollouts, rows, valid) -> the packing plans of the update's micro-batches and of the
                     log-prob passes, and the packed rows each needs (`learner.packing`); the host rounds
                     those up to a bucket (`PackingPlan.packed_rows`, static)
  logprobs           (params, rollouts, features, rows, plan) -> f32[R, T]: old and reference log-probs of the
                     update's rows (`select`'s lists), micro-batched, packed by `plan` (None: padded rows); 0 at
                     rows the update does not use
  update             (params, opt_state, rollouts, targets, rows, valid, plan) -> (params, opt_state, metrics):
                     one optimizer step over a mini-batch, its micro-batches packed by `plan` (None: padded);
                     gradients of the parameters `optim` trains only (LoRA: the adapters); params and opt_state
                     donated, outputs sharded like the inputs
and with a critic (the value-based algorithms):
  values             (critic params, rollouts, features) -> f32[R, T]: the critic's predictions over every row
  gae                (scores f32[R], span rewards f32[R, T], mask i32[R, T], values f32[R, T]) -> (Advantages,
                     returns f32[R, T], metrics)
  critic_update      (critic params, critic opt_state, rollouts, critic targets, rows, valid, plan) -> (critic
                     params, critic opt_state, metrics): the critic's step over the policy's mini-batch
The update is jitted per build (its output shardings are the trainer's); the others are module-level jitted
functions with their static arguments bound (`BoundProgram`), so equal settings share compilations.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shuffle_r1_jax.learner.critic import rollout_values, update_critic_minibatch
from shuffle_r1_jax.learner.logprobs import rollout_logprobs
from shuffle_r1_jax.learner.optimizer import make_optimizer
from shuffle_r1_jax.learner.packing import plan_micro_batches
from shuffle_r1_jax.learner.update import update_minibatch
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.models.qwen2_5_vl.value_model import abstract_value_model
from shuffle_r1_jax.parallel.sharding import mirror_shardings, param_shardings
from shuffle_r1_jax.rl.advantages import advantages_from_scores
from shuffle_r1_jax.rl.batch_shuffle import chunked_step_order
from shuffle_r1_jax.rl.dapo import overlong_reward_penalty
from shuffle_r1_jax.rl.gae import advantages_from_values
from shuffle_r1_jax.rl.metrics import selection_metrics
from shuffle_r1_jax.rl.selection import select_update_rows
from shuffle_r1_jax.sampling import Sampler, SamplingConfig
from shuffle_r1_jax.train.settings import RunSettings


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Token ids the samplers need.

    Attributes:
      stop: the ids that end a response.
      forbidden: the ids never sampled (the image and video placeholders).
      pad: the id written after a response ends.
    """

    stop: tuple[int, ...]
    forbidden: tuple[int, ...]
    pad: int

    @classmethod
    def of(cls, config: Qwen25VLConfig, tokenizer=None) -> "SpecialTokens":
        """The special tokens of a model.

        Args:
          config: the model config (its eos, image and video token ids).
          tokenizer: the tokenizer, or None; when given, its eos token also stops and its pad token pads
            (without it the model's eos token pads).

        Returns:
          The `SpecialTokens`.
        """
        stop = {config.eos_token_id}
        if tokenizer is not None:
            stop.add(int(tokenizer.eos_token_id))
        pad = config.eos_token_id if tokenizer is None else int(tokenizer.pad_token_id)
        return cls(tuple(sorted(stop)), (config.image_token_id, config.video_token_id), pad)

    def sampling(self, temperature: float, top_p: float = 1.0, top_k: int = 0) -> SamplingConfig:
        """A sampling config with these tokens at `temperature`, `top_p` and `top_k` (0 = off)."""
        return SamplingConfig(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop_token_ids=self.stop,
            forbidden_token_ids=self.forbidden,
            pad_token_id=self.pad,
        )


class BoundProgram:
    """A module-level jitted function with its static arguments bound: called and lowered like a jitted function
    of the others.

    Programs with equal static arguments share one compilation cache across trainers (tests and comparisons build
    many in one process).

    Args:
      jitted: the module-level jitted function.
      **static: its static keyword arguments, passed to every call and lowering.
    """

    def __init__(self, jitted, **static):
        self.jitted = jitted
        self.static = static

    def __call__(self, *args):
        return self.jitted(*args, **self.static)

    def lower(self, *args):
        return self.jitted.lower(*args, **self.static)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _image_features(params, vision, *, graphdef):
    return nnx.merge(graphdef, params).image_features(vision)


@functools.partial(jax.jit, static_argnames=("max_length", "buffer_length", "factor"))
def _overlong_penalty(mask, *, max_length, buffer_length, factor):
    """DAPO's overlong punishment `float32[R]` of the responses of `mask` `int32[R, T]`, with its metrics: the mean
    punishment (`reward/overlong_penalty`) and the fraction of responses longer than `max_length - buffer_length`
    (`reward/overlong_band_ratio`: in the band or cut at the limit)."""
    lengths = jnp.sum(mask, axis=1)
    penalty = overlong_reward_penalty(lengths, max_length=max_length, buffer_length=buffer_length, factor=factor)
    metrics = {
        "reward/overlong_penalty": jnp.mean(penalty),
        "reward/overlong_band_ratio": jnp.mean((lengths > max_length - buffer_length).astype(jnp.float32)),
    }
    return penalty, metrics


@functools.partial(jax.jit, static_argnames=("estimator", "n"))
def _advantages(scores, span_rewards, mask, *, estimator, n):
    return advantages_from_scores(estimator, scores, mask, n, span_rewards)


@functools.partial(jax.jit, static_argnames=("selection", "minibatches"))
def select_minibatches(rollout_advantages, key, *, selection, minibatches):
    """The update batch of `selection` (`rl.selection`), in the step order its `update_chunks` asks for, cut into
    `minibatches` lists of rows `int32[U / k]` and valid flags `bool[U / k]`; and the selector's statistics."""
    rows, valid, stats = select_update_rows(rollout_advantages, selection, key)
    if selection.update_chunks:
        order = chunked_step_order(rows.shape[0], selection.update_chunks, minibatches)
        rows, valid = rows[order], valid[order]
    return jnp.split(rows, minibatches), jnp.split(valid, minibatches), stats


@functools.partial(jax.jit, static_argnames=("n", "cfg"))
def _gae(scores, span_rewards, mask, values, *, n, cfg):
    return advantages_from_values(scores, mask, values, n, cfg, span_rewards)


@functools.partial(jax.jit, static_argnames=("graphdef", "micro_batch_rows"))
def _values(params, rollouts, features, *, graphdef, micro_batch_rows):
    return rollout_values(graphdef, params, rollouts, features, micro_batch_rows=micro_batch_rows)


@jax.jit
def _selection_metrics(rollout_advantages, rows, valid, mask):
    return selection_metrics(rollout_advantages, jnp.concatenate(rows), jnp.concatenate(valid), mask)


@functools.partial(jax.jit, static_argnames=("graphdef", "micro_batch_rows", "temperature", "chunk"))
def _logprobs(params, rollouts, features, rows, plan, *, graphdef, micro_batch_rows, temperature, chunk):
    return rollout_logprobs(
        graphdef,
        params,
        rollouts,
        features,
        jnp.concatenate(rows),
        micro_batch_rows=micro_batch_rows,
        temperature=temperature,
        chunk=chunk,
        plan=plan,
    )


@functools.partial(jax.jit, static_argnames=("micro_batches", "logprob_micro_batch_rows"))
def plan_packing(rollouts, rows, valid, *, micro_batches, logprob_micro_batch_rows):
    """Packing plans (`learner.packing.plan_micro_batches`) of a step's passes over the update rows.

    Args:
      rollouts: the rollout batch.
      rows: `select`'s lists of mini-batch rows `int32[U / k]`.
      valid: their valid flags `bool[U / k]`.
      micro_batches: gradient-accumulation micro-batches per mini-batch.
      logprob_micro_batch_rows: rows per old-log-prob pass.

    Returns:
      (one (bin, offset) `int32[micro_batches, U / k / micro_batches]` pair per mini-batch, the log-prob passes'
      (bin, offset) `int32[U / logprob_micro_batch_rows, logprob_micro_batch_rows]`, `int32[2]` the most packed
      rows an update micro-batch and a log-prob pass need).
    """
    update, update_needed = [], []
    for mini_rows, mini_valid in zip(rows, valid):
        bins, offsets, needed = plan_micro_batches(
            rollouts, mini_rows.reshape(micro_batches, -1), mini_valid.reshape(micro_batches, -1)
        )
        update.append((bins, offsets))
        update_needed.append(needed)
    # every listed row is computed: a row repeated with valid and invalid copies keeps one set of log-probs
    bins, offsets, logprob_needed = plan_micro_batches(
        rollouts, jnp.concatenate(rows).reshape(-1, logprob_micro_batch_rows)
    )
    return update, (bins, offsets), jnp.stack([jnp.max(jnp.stack(update_needed)), logprob_needed])


@dataclasses.dataclass(frozen=True)
class StepPrograms:
    """Every jitted program of one training step (see the module docstring for their signatures).

    Attributes:
      image_features: the vision tower and merger, once per rollout batch.
      sampler: the rollout `Sampler` (its prefill and decode programs).
      advantages: the advantage estimator over a flat rollout batch.
      overlong_penalty: DAPO's overlong punishment of each response and its metrics (None with
        `reward.overlong_buffer` 0).
      select: the update-batch selection, cut into mini-batches.
      selection_metrics: the selection's metrics.
      plan_packing: where each update row's sequence sits in the packed rows of its passes.
      logprobs: the old and reference log-probs, micro-batched.
      update: one optimizer step (parameters and optimizer state donated).
      values: the critic's predictions over the rollout batch (None without a critic).
      gae: GAE advantages and returns from the critic's predictions (None without a critic).
      critic_update: one critic optimizer step (its parameters and optimizer state donated; None without a critic).
    """

    image_features: Callable
    sampler: Sampler
    advantages: Callable
    select: Callable
    selection_metrics: Callable
    plan_packing: Callable
    logprobs: Callable
    update: Callable
    overlong_penalty: Callable | None = None
    values: Callable | None = None
    gae: Callable | None = None
    critic_update: Callable | None = None


@dataclasses.dataclass(frozen=True)
class CriticModel:
    """What the critic's programs are built over.

    Attributes:
      graphdef: the value model's graph definition.
      optimizer: its optax optimizer.
      param_shardings: the tree of `NamedSharding`s of its parameters.
      opt_shardings: the tree of `NamedSharding`s of its optimizer state.
      abstract_params: its parameters as `ShapeDtypeStruct`s with those shardings (a pure dict).
    """

    graphdef: nnx.GraphDef
    optimizer: optax.GradientTransformation
    param_shardings: Any
    opt_shardings: Any
    abstract_params: Any

    @classmethod
    def of(cls, settings: RunSettings, config: Qwen25VLConfig, mesh: Mesh) -> "CriticModel":
        """The critic of `settings` (a value model of `config`, `critic.share_image_features` deciding its vision
        tower) on `mesh`, sharded by `mesh.rules`, with the critic's optimizer; nothing is allocated."""
        m = settings.model
        abstract = abstract_value_model(
            config,
            with_vision=not settings.critic.share_image_features,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            attention_impl=m.attention_impl,
            remat=m.remat,
        )
        graphdef, state = nnx.split(abstract)
        shardings = nnx.to_pure_dict(param_shardings(state, mesh, settings.mesh.rules))
        params = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nnx.to_pure_dict(state), shardings
        )
        optimizer = make_optimizer(settings.critic.optimizer, params)
        opt_shardings = mirror_shardings(jax.eval_shape(optimizer.init, params), params, shardings, mesh)
        return cls(graphdef, optimizer, shardings, opt_shardings, params)


def build_step_programs(
    settings: RunSettings,
    graphdef: nnx.GraphDef,
    mesh: Mesh,
    optimizer: optax.GradientTransformation,
    tokens: SpecialTokens,
    *,
    param_shardings: Any,
    opt_shardings: Any,
    critic: CriticModel | None = None,
) -> StepPrograms:
    """The step's programs for `settings` over the model `graphdef` on `mesh`.

    Args:
      settings: the resolved run settings.
      graphdef: the policy's graph definition (static in every program).
      mesh: the device mesh the programs are traced under.
      optimizer: the optax optimizer the update applies.
      tokens: special token ids of the samplers.
      param_shardings: the tree of `NamedSharding`s of the parameters (the update's outputs keep them).
      opt_shardings: the tree of `NamedSharding`s of the optimizer state (the update's outputs keep them).
      critic: the critic of a value-based algorithm, or None.

    Returns:
      The `StepPrograms`; each has `.lower(*args)` for ahead-of-time compilation.
    """
    rollout, loss, train = settings.rollout, settings.loss, settings.train
    image_features, sampler = build_rollout_programs(settings, graphdef, mesh, tokens)
    replicated = NamedSharding(mesh, PartitionSpec())

    def minibatch_step(step, graphdef, optimizer, cfg, param_shardings, opt_shardings, **static):
        """`step` (`update_minibatch` or `update_critic_minibatch`, with its other `static` keywords) jitted over
        (params, opt_state, rollouts, targets, rows, valid, plan), its state donated and its outputs sharded like
        its inputs."""

        def run(params, opt_state, rollouts, targets, rows, valid, plan):
            return step(
                graphdef,
                params,
                opt_state,
                optimizer,
                rollouts,
                targets,
                rows,
                valid,
                plan,
                micro_batches=train.micro_batches,
                cfg=cfg,
                **static,
            )

        out_shardings = (param_shardings, opt_shardings, replicated)
        return jax.jit(run, donate_argnames=("params", "opt_state"), out_shardings=out_shardings)

    critic_programs = {}
    if critic is not None:
        critic_programs = dict(
            values=BoundProgram(_values, graphdef=critic.graphdef, micro_batch_rows=train.value_micro_batch_rows),
            gae=BoundProgram(_gae, n=rollout.n, cfg=settings.rl.gae),
            critic_update=minibatch_step(
                update_critic_minibatch,
                critic.graphdef,
                critic.optimizer,
                settings.critic.loss,
                critic.param_shardings,
                critic.opt_shardings,
            ),
        )
    reward = settings.reward
    overlong = None
    if reward.overlong_buffer:
        overlong = BoundProgram(
            _overlong_penalty,
            max_length=rollout.max_new_tokens,
            buffer_length=reward.overlong_buffer,
            factor=reward.overlong_factor,
        )
    return StepPrograms(
        image_features=image_features,
        sampler=sampler,
        advantages=BoundProgram(_advantages, estimator=settings.rl.estimator, n=rollout.n),
        select=BoundProgram(select_minibatches, selection=settings.rl.selection, minibatches=train.num_minibatches),
        selection_metrics=BoundProgram(_selection_metrics),
        plan_packing=BoundProgram(
            plan_packing,
            micro_batches=train.micro_batches,
            logprob_micro_batch_rows=train.logprob_micro_batch_rows,
        ),
        logprobs=BoundProgram(
            _logprobs,
            graphdef=graphdef,
            micro_batch_rows=train.logprob_micro_batch_rows,
            temperature=rollout.temperature,
            chunk=loss.logprob_chunk,
        ),
        update=minibatch_step(
            update_minibatch,
            graphdef,
            optimizer,
            loss,
            param_shardings,
            opt_shardings,
            trains=settings.optimizer.trains,
        ),
        overlong_penalty=overlong,
        **critic_programs,
    )


def build_rollout_programs(
    settings: RunSettings, graphdef: nnx.GraphDef, mesh: Mesh, tokens: SpecialTokens
) -> tuple[BoundProgram, Sampler]:
    """The programs that sample the training rollouts of `settings` (also those of the offline pass-rate filter).

    Args:
      settings: the resolved run settings (`rollout.temperature`, `rollout.top_p`, `rollout.top_k`,
        `rollout.decode_block`, `rollout.decode_stages`).
      graphdef: the policy's graph definition.
      mesh: the device mesh.
      tokens: special token ids of the sampler.

    Returns:
      (the image-features program `(params, vision) -> f[M, H]`, the rollout `Sampler`).
    """
    rollout = settings.rollout
    sampling = tokens.sampling(rollout.temperature, rollout.top_p, rollout.top_k)
    sampler = Sampler(
        graphdef, sampling, mesh=mesh, decode_block=rollout.decode_block, decode_stages=rollout.decode_stages
    )
    return BoundProgram(_image_features, graphdef=graphdef), sampler


def build_eval_samplers(
    settings: RunSettings, graphdef: nnx.GraphDef, mesh: Mesh, tokens: SpecialTokens
) -> tuple[Sampler, Sampler]:
    """The validation samplers of `settings` over the model `graphdef` on `mesh`.

    Args:
      settings: the resolved run settings (`eval.temperature`, `eval.top_p`, `rollout.decode_block`,
        `rollout.decode_stages`).
      graphdef: the policy's graph definition.
      mesh: the device mesh.
      tokens: special token ids of the samplers.

    Returns:
      (the sampler at `eval.temperature`, the greedy sampler).
    """
    layout = dict(decode_block=settings.rollout.decode_block, decode_stages=settings.rollout.decode_stages)
    sampled = Sampler(graphdef, tokens.sampling(settings.eval.temperature, settings.eval.top_p), mesh=mesh, **layout)
    return sampled, Sampler(graphdef, tokens.sampling(0.0), mesh=mesh, **layout)
