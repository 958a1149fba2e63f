"""The RL trainer: the only place that knows the order of a step.

prompts -> sampler (n per prompt) -> rewards (host) -> advantages -> update-batch selection (PTS / ABS / ...)
-> old log-probs -> optimizer steps over mini-batches -> metrics, validation, checkpoint.

Randomness: every key is `fold_in(key(seed), step)` (and a phase id), so a resumed run continues the same stream.

Parallelism: one (data, fsdp, tensor) mesh from the config's `mesh` section (`parallel.mesh_config`). Parameters
are sharded by the logical-axis rules, the optimizer state like the parameters it mirrors (counts replicated),
rollout rows over the batch axes (data x fsdp). Advantages, the PTS/ABS selection and the mini-batch gathers
run jitted on those global arrays; only the per-process work (decoding and rewards of a process's own rows) and
small metric reductions touch the host. Several processes (`jax.distributed`, the `distributed` section) each
read their own prompts; process 0 writes logs and run files; checkpoints are written by all of them (orbax).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import ConfigDict

from shuffle_r1_jax.checkpoint.export import HF_SOURCE, copy_non_weight_files, export_trainer_checkpoint
from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
from shuffle_r1_jax.data.sources import Columns
from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.model import image_features_jit
from shuffle_r1_jax.parallel.batch_placement import BatchPlacer
from shuffle_r1_jax.parallel.global_arrays import allgather_json, gather_over_processes
from shuffle_r1_jax.parallel.mesh_config import build_mesh
from shuffle_r1_jax.parallel.sharding import constrain_rows, mirror_shardings
from shuffle_r1_jax.processing.batch import BucketConfig
from shuffle_r1_jax.processing.image import ImagePreprocessConfig
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.rewards.pool import RewardPool
from shuffle_r1_jax.rl.metrics import COLLAPSE_EPS, advantage_collapse, advantage_stats
from shuffle_r1_jax.sampling import Sampler, SamplingConfig
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.algorithms import select_update_rows
from shuffle_r1_jax.train.checkpointing import TrainCheckpointer
from shuffle_r1_jax.train.dynamic_sampling import fill_informative
from shuffle_r1_jax.train.evaluation import Evaluator
from shuffle_r1_jax.train.logprobs import Rollouts, response_logprobs
from shuffle_r1_jax.train.metric_writers import MetricWriter
from shuffle_r1_jax.train.optimizer import learning_rate_schedule, make_optimizer
from shuffle_r1_jax.train.rollout import compute_advantages, generate_and_score, rollout_metrics
from shuffle_r1_jax.train.update import UpdateTargets, update_minibatch

logger = logging.getLogger(__name__)

_PHASE_SAMPLE, _PHASE_SELECT = 0, 1


# The step's jitted passes, public for ahead-of-time lowering (scripts/memory_plan.py, scripts/bench_train_step.py).
def _old_logprobs_impl(graphdef, params, rollouts: Rollouts, features, *, micro: int, temperature: float, chunk: int):
    rows = jnp.arange(rollouts.tokens.shape[0]).reshape(-1, micro)

    def micro_batch(r):  # the model is merged inside the mapped body: remat layers cannot cross trace levels
        model = nnx.merge(graphdef, params)
        return response_logprobs(model, rollouts, r, temperature=temperature, chunk=chunk, image_features=features)[0]

    logp = jax.lax.map(micro_batch, rows)
    return constrain_rows(logp.reshape(rollouts.tokens.shape))


def _select_impl(rollout_advantages, cfg, key, *, minibatches: int):
    """The update batch split into `minibatches` (rows `int32[U / k]`, valid `bool[U / k]`) and the ABS stats."""
    rows, valid, stats = select_update_rows(rollout_advantages, cfg, key)
    return jnp.split(rows, minibatches), jnp.split(valid, minibatches), stats


def _selection_metrics_impl(rollout_advantages, rows, valid, mask) -> dict:
    """Advantage statistics and collapse before/after the selection, and rollout/token utilization (scalars).

    rollout_advantages: `float32[P, n]`; rows, valid: lists of the mini-batches' `[U / k]`; mask: `int32[R, T]`."""
    flat = rollout_advantages.reshape(-1)
    rows, valid = jnp.concatenate(rows), jnp.concatenate(valid)
    selected = flat[rows]
    nonzero = jnp.abs(selected) >= COLLAPSE_EPS
    selected_tokens = mask[rows] * valid[:, None] * nonzero[:, None]
    out = advantage_stats(flat)
    out["advantage/collapse_before"] = advantage_collapse(flat)
    out["advantage/collapse_after"] = advantage_collapse(selected, valid)
    out["utilization/rollouts_nonzero_advantage"] = jnp.sum(nonzero & valid) / flat.shape[0]
    out["utilization/tokens_nonzero_advantage"] = jnp.sum(selected_tokens) / jnp.maximum(jnp.sum(mask), 1)
    return out


old_logprobs_pass = jax.jit(_old_logprobs_impl, static_argnames=("graphdef", "micro", "temperature", "chunk"))
_advantages = jax.jit(compute_advantages, static_argnums=(0, 3))
_select = jax.jit(_select_impl, static_argnames=("cfg", "minibatches"))
_selection_metrics = jax.jit(_selection_metrics_impl)


@dataclasses.dataclass
class RunSummary:
    """What a run ends with: steps done, first and last validation accuracy (None without validation)."""

    steps: int
    start_accuracy: float | None
    end_accuracy: float | None
    best_accuracy: float | None


class Trainer:
    """Builds everything from a validated config and runs the loop; resumes from `workdir` when it has a checkpoint."""

    def __init__(self, config: ConfigDict, workdir: str):
        self.config = config
        settings.start_distributed(config)
        self.run = settings.resolve(config)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        run, c = self.run, config
        self.mesh = build_mesh(run.mesh)
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        logger.info("mesh %s over %d processes", dict(self.mesh.shape), jax.process_count())
        model, self.model_config = load_pretrained(
            run.checkpoint, run.dtype, param_dtype=run.param_dtype, attention_impl=c.model.attention_impl,
            remat=c.model.remat, mesh=self.mesh,
        )
        self.graphdef = nnx.graphdef(model)
        self.params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        self.param_shardings = jax.tree.map(lambda x: x.sharding, self.params)
        # the starting policy, copied: the update step donates (and so frees) the training parameters' buffers
        self.ref_params = (
            jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=self.param_shardings)(self.params)
            if c.loss.kl_coef > 0
            else None
        )
        image_config = ImagePreprocessConfig(min_pixels=c.data.min_pixels, max_pixels=c.data.max_pixels)
        self.encoder = PromptEncoder.from_checkpoint(
            run.checkpoint, image_config, prompt_format=c.data.prompt_format, max_prompt_length=c.data.max_prompt_length
        )
        self.tokenizer = self.encoder.tokenizer
        columns = Columns(prompt=c.data.prompt_column, answer=c.data.answer_column, images=c.data.images_column,
                          image_dir=c.data.image_dir or None)  # fmt: skip
        self.buckets = BucketConfig(prompt_lengths=tuple(c.data.prompt_buckets))
        self.train_batches = prompt_batches(
            run.train_data, self.encoder, self.model_config,
            PipelineConfig(batch_size=run.prompts_per_process, seed=c.seed, shuffle=True, num_epochs=None,
                           process_index=jax.process_index(), process_count=jax.process_count(),
                           on_bad_record=c.data.on_bad_record),
            buckets=self.buckets, columns=columns,
        )  # fmt: skip
        stop_ids = tuple(sorted({self.model_config.eos_token_id, int(self.tokenizer.eos_token_id)}))
        forbidden = (self.model_config.image_token_id, self.model_config.video_token_id)
        pad = self.encoder.pad_token_id
        self.placer = BatchPlacer(self.mesh, pad, self.model_config.vision.spatial_merge_size**2)
        self.sampler = Sampler(self.graphdef, SamplingConfig(
            temperature=c.rollout.temperature, top_p=c.rollout.top_p, top_k=c.rollout.top_k,
            stop_token_ids=stop_ids, forbidden_token_ids=forbidden, pad_token_id=pad), mesh=self.mesh)  # fmt: skip
        self.reward_pool = RewardPool(c.reward.name, num_workers=c.reward.num_workers)
        self.optimizer = make_optimizer(run.optimizer, self.params)
        self.opt_shardings = mirror_shardings(
            jax.eval_shape(self.optimizer.init, self.params), self.params, self.param_shardings, self.mesh
        )
        self.opt_state = jax.jit(self.optimizer.init, out_shardings=self.opt_shardings)(self.params)
        self._update = jax.jit(
            update_minibatch, static_argnames=("graphdef", "optimizer", "micro_batches", "cfg"),
            donate_argnames=("params", "opt_state"),
            out_shardings=(self.param_shardings, self.opt_shardings, self.replicated),
        )  # fmt: skip
        self.schedule = learning_rate_schedule(run.optimizer)
        self.evaluator = (
            Evaluator(self, run.val_data, columns, stop_ids, forbidden, pad) if run.val_data else None
        )
        self.checkpointer = TrainCheckpointer(
            self.workdir / "checkpoints", keep_last=c.checkpoint.keep_last, keep_best=c.checkpoint.keep_best,
            best_metric="val/accuracy", best_mode="max",
        )  # fmt: skip
        if jax.process_index() == 0:
            copy_non_weight_files(run.checkpoint, self.workdir / "checkpoints" / HF_SOURCE)
        self.step = 0
        self.best_score: float | None = None
        self.base_key = self.replicated_key(jax.random.key(c.seed))
        self._restore()
        self.writer = MetricWriter(
            self.workdir, total_steps=c.train.total_steps, start_step=self.step + 1 if self.step else 0
        )

    def replicated_key(self, key: jax.Array) -> jax.Array:
        """`key` (the same on every process) replicated over the mesh."""
        data = jax.device_put(np.asarray(jax.random.key_data(key)), self.replicated)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))

    def _restore(self) -> None:
        latest = self.checkpointer.latest_step()
        if latest is None:
            return
        restored = self.checkpointer.restore(
            abstract_params=_abstract(self.params), abstract_opt_state=_abstract(self.opt_state)
        )
        self.params, self.opt_state, self.step = restored.params, restored.opt_state, restored.step
        self.best_score = restored.best_score
        self.base_key = self.replicated_key(restored.rng_key)
        self._restore_data_position(restored.data_state)
        logger.info("resumed from step %d (%s)", self.step, self.checkpointer.directory)

    def _restore_data_position(self, data_state: dict) -> None:
        """Each process takes its own saved iterator state; a checkpoint of another process count restarts the
        data stream from its seed (the parameters, optimizer state and step still resume)."""
        states = data_state.get("processes", [data_state])
        if len(states) != jax.process_count():
            logger.warning(
                "the checkpoint's data position was saved by %d processes and this run has %d: the prompt stream "
                "restarts from data seed %d", len(states), jax.process_count(), self.config.seed,
            )  # fmt: skip
            return
        self.train_batches.set_state(states[jax.process_index()])

    def _save(self, metrics: dict) -> None:
        data_state = {"processes": allgather_json(self.train_batches.get_state())}
        self.checkpointer.save(
            self.step, self.params, self.opt_state, self.base_key, data_state, self.best_score,
            metrics={k: v for k, v in metrics.items() if k.startswith("val/")},
        )  # fmt: skip

    def _validate(self) -> dict:
        metrics = self.evaluator.evaluate(self.params, self.step)
        accuracy = metrics.get("val/accuracy")
        if accuracy is not None and (self.best_score is None or accuracy > self.best_score):
            self.best_score = accuracy
        return metrics

    def train_step(self) -> dict:
        """One rollout batch and its optimizer steps; returns the step's metrics (the same on every process)."""
        run, c = self.run, self.config
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batch = next(self.train_batches)
        key = jax.random.fold_in(self.base_key, self.step)
        timings["data"] = time.perf_counter() - start

        def sample(attempt: int = 0):
            return generate_and_score(
                self.sampler, self.params, batch if attempt == 0 else next(self.train_batches), n=c.rollout.n,
                max_new_tokens=c.rollout.max_new_tokens, key=jax.random.fold_in(key, _PHASE_SAMPLE + 16 * attempt),
                tokenizer=self.tokenizer, reward_pool=self.reward_pool, reward_timeout_s=c.reward.timeout_s,
                placer=self.placer, prompts_per_call=run.prompts_per_sampler_call,
            )  # fmt: skip

        dapo_stats = {}
        if run.dynamic_sampling:
            attempts = iter(range(c.rl.dynamic_sampling_max_tries))
            scored, dapo_stats = fill_informative(
                lambda: sample(next(attempts)), run.prompts_per_process, c.rollout.n,
                max_tries=c.rl.dynamic_sampling_max_tries, fallback=c.rl.dynamic_sampling_fallback,
                pad_id=self.encoder.pad_token_id, placer=self.placer,
            )  # fmt: skip
        else:
            scored = sample()
        timings.update(scored.timings)
        with jax.set_mesh(self.mesh):
            metrics = self._update_from(scored, key, timings)
        metrics.update(dapo_stats)
        metrics["learning_rate"] = float(self.schedule(self.step * run.num_minibatches))
        total = time.perf_counter() - start
        tokens = metrics["response_length/mean"] * c.data.rollout_batch_prompts * c.rollout.n
        metrics.update({f"timing/{k}": v for k, v in timings.items()})
        metrics.update({"timing/step": total, "throughput/tokens_per_s": tokens / total})
        counts = self.train_batches.counts()
        summed = gather_over_processes(np.asarray([[counts[k] for k in sorted(counts)]], np.int64)).sum(0)
        metrics.update({f"data/{k}": float(v) for k, v in zip(sorted(counts), summed)})
        metrics["compile/sampler_programs"] = float(self.sampler.compilations)
        return metrics

    def _update_from(self, scored, key: jax.Array, timings: dict[str, float]) -> dict:
        """Advantages, the update batch, old (and reference) log-probs and the optimizer steps of one scored
        rollout batch, on global arrays; returns the rollout, selection and update metrics."""
        run, c = self.run, self.config
        t = time.perf_counter()
        rollouts = scored.rollouts
        scores = self.placer.rows(np.asarray(scored.parts["overall"], np.float32))
        advantages = _advantages(run.estimator, scores, rollouts.mask, c.rollout.n)
        rows, valid, abs_stats = _select(
            advantages.rollout, run.selection, jax.random.fold_in(key, _PHASE_SELECT), minibatches=run.num_minibatches
        )
        token_advantages = advantages.token.reshape(rollouts.tokens.shape)
        timings["advantage"] = time.perf_counter() - t

        t = time.perf_counter()
        features = None
        if run.optimizer.freeze_vision and rollouts.prompts.vision is not None:
            # the sampler's, under the same parameters; a DAPO batch merged from several has none
            features = scored.image_features
            if features is None:
                features = image_features_jit(self.graphdef, self.params, rollouts.prompts.vision)
        if c.rl.old_logprobs == "sampler":
            old = rollouts.sampler_logprobs
        else:
            old = old_logprobs_pass(self.graphdef, self.params, rollouts, features, micro=run.old_logprob_micro,
                                temperature=c.rollout.temperature, chunk=c.loss.logprob_chunk)  # fmt: skip
        ref = None
        if self.ref_params is not None:
            ref = old_logprobs_pass(self.graphdef, self.ref_params, rollouts, features, micro=run.old_logprob_micro,
                                temperature=c.rollout.temperature, chunk=c.loss.logprob_chunk)  # fmt: skip
        targets = UpdateTargets(advantages=token_advantages, old_logprobs=old, ref_logprobs=ref, image_features=features)
        jax.block_until_ready(old)
        timings["old_logprobs"] = time.perf_counter() - t

        t = time.perf_counter()
        update_metrics = []
        for mini_rows, mini_valid in zip(rows, valid):
            self.params, self.opt_state, m = self._update(
                self.graphdef, self.params, self.opt_state, self.optimizer, rollouts, targets, mini_rows, mini_valid,
                micro_batches=run.micro_batches, cfg=run.loss,
            )  # fmt: skip
            update_metrics.append(m)
        update_metrics = jax.device_get(update_metrics)
        timings["update"] = time.perf_counter() - t

        metrics = rollout_metrics(scored)
        selection = _selection_metrics(advantages.rollout, rows, valid, rollouts.mask)
        metrics.update({k: float(v) for k, v in jax.device_get(selection).items()})
        metrics.update({k: float(np.mean([m[k] for m in update_metrics])) for k in update_metrics[0]})
        metrics["update_skipped"] = float(np.sum([m["update_skipped"] for m in update_metrics]))
        metrics.update({k: float(v) for k, v in jax.device_get(abs_stats).items()})
        return metrics

    def fit(self) -> RunSummary:
        """Runs to `train.total_steps` (validation before, every k steps and at the end; checkpoints every k)."""
        c = self.config
        history: list[float] = []
        if self.evaluator is not None and c.eval.before_training and self.step == 0:
            metrics = self._validate()
            history.append(metrics["val/accuracy"])
            self.writer.write(0, metrics)
        nonfinite_in_a_row = 0
        try:
            while self.step < c.train.total_steps:
                metrics = self.train_step()
                self.step += 1
                nonfinite_in_a_row = nonfinite_in_a_row + 1 if metrics["update_skipped"] else 0
                last = self.step == c.train.total_steps
                if self.evaluator is not None and c.eval.every and (self.step % c.eval.every == 0 or last):
                    metrics.update(self._validate())
                    history.append(metrics["val/accuracy"])
                self.writer.write(self.step, metrics)
                if self.step % c.checkpoint.every == 0 or last:
                    self._save(metrics)
                if nonfinite_in_a_row >= c.train.max_nonfinite_in_a_row:
                    raise FloatingPointError(
                        f"{nonfinite_in_a_row} updates in a row had a non-finite loss or gradient (step {self.step}); "
                        "stopping (train.max_nonfinite_in_a_row)"
                    )
        finally:
            self.checkpointer.wait_until_finished()
        if c.checkpoint.export_hf and jax.process_index() == 0:
            step = export_trainer_checkpoint(self.workdir / "checkpoints", c.checkpoint.export_hf)
            logger.info("exported step %d to %s (Hugging Face layout)", step, c.checkpoint.export_hf)
        history = _logged_accuracies(self.workdir / "metrics.jsonl") or history
        return RunSummary(
            steps=self.step,
            start_accuracy=history[0] if history else None,
            end_accuracy=history[-1] if history else None,
            best_accuracy=self.best_score,
        )

    def close(self) -> None:
        """Waits for a checkpoint in flight and releases the reward workers, orbax and the writers."""
        self.reward_pool.close()
        self.checkpointer.close()
        self.writer.close()


def _abstract(tree):
    """Shape, dtype and sharding of each array of `tree` (a restore target on the current mesh)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _logged_accuracies(metrics_file: Path) -> list[float]:
    """The validation accuracies in the run's metrics file, in step order (so a resumed or re-run workdir
    reports its whole history); [] where this process writes no metrics file."""
    if not metrics_file.exists():
        return []
    records = (json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip())
    return [r["val/accuracy"] for r in sorted(records, key=lambda r: r["step"]) if "val/accuracy" in r]


def write_summary(workdir: str, summary: RunSummary) -> None:
    (Path(workdir) / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2) + "\n")

