"""The run's config, checked and resolved once into typed settings; errors name the key and the value.

`resolve(config)` is pure: it validates every key, derives the batch arithmetic (prompts per process, update
rows, micro-batches), checks that the setup function imports and, unless `check_inputs=False`, that the inputs
exist (the checkpoint, the datasets, the reward function imports). It never builds anything. The trainer, the
evaluator, the memory planner and the step benchmark read only the `RunSettings` it returns.

`run_setup(config)` runs the config's `setup` function (the demo builds its assets there) and returns the
config pointing at what it built; `prepare(config)` is the whole start-up order: start `jax.distributed` when
configured, resolve (fail fast on a bad value), set up, resolve again with the inputs checked.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Any

import jax
from ml_collections import ConfigDict

from shuffle_r1_jax.checkpoint.train_state import ON_DAMAGED
from shuffle_r1_jax.data.pipeline import ON_BAD_RECORD
from shuffle_r1_jax.data.record_order import SamplingConfig
from shuffle_r1_jax.data.sources import Columns, DataSpecError, resolve_data_files
from shuffle_r1_jax.learner.critic import CriticLossConfig
from shuffle_r1_jax.learner.optimizer import OptimizerConfig
from shuffle_r1_jax.learner.update import LossConfig
from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.models.qwen2_5_vl import ConfigError as ModelConfigError
from shuffle_r1_jax.models.qwen2_5_vl import load_config
from shuffle_r1_jax.models.qwen2_5_vl.fused_attention import TOKAMAX_INSTALL, tokamax_available
from shuffle_r1_jax.models.qwen2_5_vl.lora import LoraConfig
from shuffle_r1_jax.models.qwen2_5_vl.model import IMPLEMENTATIONS, REMAT_POLICIES
from shuffle_r1_jax.parallel.distributed import DistributedConfigError, DistributedSpec, initialize_distributed
from shuffle_r1_jax.parallel.mesh_config import MeshConfigError, MeshSpec, mesh_devices, mesh_shape
from shuffle_r1_jax.processing.batch import BucketConfig
from shuffle_r1_jax.processing.image import ImagePreprocessConfig
from shuffle_r1_jax.processing.prompts import OVERLONG_PROMPTS, load_prompt_format
from shuffle_r1_jax.processing.video import VideoPreprocessConfig
from shuffle_r1_jax.rewards.pool import bind_options, reward_keywords
from shuffle_r1_jax.rewards.registry import get_reward_fn, import_function
from shuffle_r1_jax.rl.advantages import available_advantage_estimators, cppo_fill_batches
from shuffle_r1_jax.rl.algorithms import Algorithm, get_algorithm
from shuffle_r1_jax.rl.batch_shuffle import ABS_SAMPLINGS, PAIR_WEIGHT_KINDS
from shuffle_r1_jax.rl.gae import GAEConfig
from shuffle_r1_jax.rl.pts import PTS_VARIANTS
from shuffle_r1_jax.rl.selection import SelectionConfig, available_selectors, rows_per_prompt
from shuffle_r1_jax.train.stages import StageError, plan_phases

logger = logging.getLogger(__name__)

MODEL_DTYPES = ("float32", "bfloat16")
DYNAMIC_SAMPLING_FALLBACKS = ("fill", "error")
OLD_LOGPROBS = ("recompute", "sampler")
SINGLE_ROUND = ("draw", "all_pairs")


class ConfigError(ValueError):
    """A config value is invalid or inconsistent with another; the message names the keys and values."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The policy to train: the `model` config section.

    Attributes:
      checkpoint: `model.checkpoint`, an HF-format Qwen2.5-VL directory or one converted to orbax.
      dtype: the JAX compute dtype of sampling and training (`model.dtype`).
      param_dtype: the JAX storage dtype of the trained parameters and the AdamW moments (`model.param_dtype`).
      attention_impl: `model.attention_impl`, one of the model's attention implementations.
      remat: `model.remat`, the gradient-checkpointing policy of each decoder layer.
      lora: the `lora` section's adapters (`lora.rank` > 0), or None: full fine-tuning.
      base_dtype: the storage dtype of the model's weights as loaded: `lora.base_dtype` (frozen) under LoRA,
        `param_dtype` without.

    Raises:
      ConfigError: `attention_impl` or `remat` is not a known one, or `attention_impl` is "tokamax" and the
        tokamax package is not installed.
    """

    checkpoint: str
    dtype: Any
    param_dtype: Any
    attention_impl: str
    remat: str
    base_dtype: Any
    lora: LoraConfig | None = None

    def __post_init__(self):
        _require(
            self.attention_impl in IMPLEMENTATIONS,
            f"model.attention_impl = {self.attention_impl!r}; expected one of {IMPLEMENTATIONS}",
        )
        _require(
            self.attention_impl != "tokamax" or tokamax_available(),
            f"model.attention_impl = 'tokamax' needs the tokamax package, which is not installed: {TOKAMAX_INSTALL}",
        )
        _require(self.remat in REMAT_POLICIES, f"model.remat = {self.remat!r}; expected one of {tuple(REMAT_POLICIES)}")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The prompt stream: the `data` config section and the batch per process.

    Attributes:
      train: `data.train`, the training dataset spec (path[@split], comma-separated for several).
      val: `data.val`, the validation dataset spec ("" = no validation).
      columns: the record columns, from `data.prompt_column`, `data.answer_column`, `data.images_column`,
        `data.videos_column` and `data.image_dir` ("" becomes None).
      prompt_format: `data.prompt_format`, a named format, a template file or an inline template.
      max_prompt_length: `data.max_prompt_length`, tokens after image expansion.
      overlong_prompts: `data.overlong_prompts`, what happens to a longer prompt: "skip" (counted and skipped) or
        "truncate_right" (cut to max_prompt_length tokens, the official recipe's; skipped if the cut would drop
        image tokens).
      buckets: the left-padded prompt lengths of `data.prompt_buckets`.
      image: the image resize bounds `data.min_pixels` and `data.max_pixels`.
      video: the video frame sampling and sizing (`data.video_fps`, `data.video_min_frames`,
        `data.video_max_frames`, `data.video_min_pixels`, `data.video_max_pixels`, `data.video_total_pixels`).
      rollout_batch_prompts: `data.rollout_batch_prompts`, prompts per rollout batch over all processes.
      prompts_per_process: this process's share of the rollout batch (`rollout_batch_prompts` / processes).
      on_bad_record: `data.on_bad_record`, "skip" or "error".
      max_consecutive_bad_records: `data.max_consecutive_bad_records`, unusable records in a row that stop the
        run (>= 0; 0 = one pass over the data).
      warn_bad_fraction: `data.warn_bad_fraction`, the share of skipped records above which each step with new
        skipped records warns, in [0, 1].
      seed: the top-level `seed`, which seeds the order of the training prompts.
      sampling: the training records' order (`data.sampling`, `data.priority_floor`, `data.pass_rate_update_weight`,
        `data.curriculum_column`, `data.curriculum_order`).
      num_threads: `data.num_threads`, grain threads reading and encoding records ahead of the step (>= 0).
      prefetch: `data.prefetch`, the records they may hold ready (>= 0).

    Raises:
      ConfigError: a count is out of range, the largest bucket is shorter than `max_prompt_length`, the pixel
        bounds are not 0 < min <= max, or `on_bad_record` or `prompt_format` is unknown.
    """

    train: str
    val: str
    columns: Columns
    prompt_format: str
    max_prompt_length: int
    overlong_prompts: str
    buckets: BucketConfig
    image: ImagePreprocessConfig
    video: VideoPreprocessConfig
    rollout_batch_prompts: int
    prompts_per_process: int
    on_bad_record: str
    max_consecutive_bad_records: int
    warn_bad_fraction: float
    seed: int
    sampling: SamplingConfig
    num_threads: int = 2
    prefetch: int = 16

    def __post_init__(self):
        _require(
            self.rollout_batch_prompts >= 1, f"data.rollout_batch_prompts = {self.rollout_batch_prompts} must be >= 1"
        )
        _require(self.max_prompt_length >= 1, f"data.max_prompt_length = {self.max_prompt_length} must be >= 1")
        _require(
            self.overlong_prompts in OVERLONG_PROMPTS,
            f"data.overlong_prompts = {self.overlong_prompts!r}; expected one of {OVERLONG_PROMPTS}",
        )
        _require(
            self.buckets.max_prompt_length >= self.max_prompt_length,
            f"data.prompt_buckets = {self.buckets.prompt_lengths}: the largest must be >= data.max_prompt_length "
            f"= {self.max_prompt_length}",
        )
        _require(
            0 < self.image.min_pixels <= self.image.max_pixels,
            f"data.min_pixels = {self.image.min_pixels} and data.max_pixels = {self.image.max_pixels} must "
            "satisfy 0 < min <= max",
        )
        _require(
            self.on_bad_record in ON_BAD_RECORD,
            f"data.on_bad_record = {self.on_bad_record!r}; expected one of {ON_BAD_RECORD}",
        )
        _require(
            self.max_consecutive_bad_records >= 0,
            f"data.max_consecutive_bad_records = {self.max_consecutive_bad_records} must be >= 0 (0 = one pass)",
        )
        _require(
            0 <= self.warn_bad_fraction <= 1, f"data.warn_bad_fraction = {self.warn_bad_fraction} must be in [0, 1]"
        )
        _require(self.num_threads >= 0, f"data.num_threads = {self.num_threads} must be >= 0")
        _require(self.prefetch >= 0, f"data.prefetch = {self.prefetch} must be >= 0")
        try:
            load_prompt_format(self.prompt_format)
        except ValueError as err:
            raise ConfigError(f"data.prompt_format = {self.prompt_format!r}: {err}") from err


@dataclasses.dataclass(frozen=True)
class RewardSettings:
    """The reward: the `reward` config section.

    Attributes:
      name: `reward.name`, a registered reward name or "package.module:function".
      timeout_s: `reward.timeout_s`, the per-sample limit in seconds (a reward over it scores 0).
      num_workers: `reward.num_workers`, reward worker processes.
      batch_timeout_s: `reward.batch_timeout_s`, the limit on one batch's scoring in seconds (the samples not
        scored by then score 0); 0 = none.
      max_failed_steps: `reward.max_failed_steps`, consecutive steps in which every reward failed that stop the
        run; 0 = never.
      overlong_buffer: `reward.overlong_buffer` with the algorithm's default for -1: the tokens before
        `rollout.max_new_tokens` over which DAPO's overlong punishment falls to -`overlong_factor` (0 = off).
      overlong_factor: `reward.overlong_factor`, the scale of that punishment.
      options: `reward.options` as sorted (name, value) pairs, keyword arguments of every reward call.

    Raises:
      ConfigError: `timeout_s` is not > 0, `num_workers` is not >= 1, `batch_timeout_s`, `max_failed_steps` or
        `overlong_factor` is not >= 0.
    """

    name: str
    timeout_s: float
    num_workers: int
    batch_timeout_s: float
    max_failed_steps: int
    overlong_buffer: int = 0
    overlong_factor: float = 1.0
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        _require(self.timeout_s > 0, f"reward.timeout_s = {self.timeout_s} must be > 0")
        _require(self.num_workers >= 1, f"reward.num_workers = {self.num_workers} must be >= 1")
        _require(
            self.batch_timeout_s >= 0, f"reward.batch_timeout_s = {self.batch_timeout_s} must be >= 0 (0 = no limit)"
        )
        _require(
            self.max_failed_steps >= 0, f"reward.max_failed_steps = {self.max_failed_steps} must be >= 0 (0 = never)"
        )
        _require(self.overlong_factor >= 0, f"reward.overlong_factor = {self.overlong_factor} must be >= 0")


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """Sampling of the training rollouts: the `rollout` config section.

    Attributes:
      n: `rollout.n`, samples per prompt (at least 2).
      max_new_tokens: `rollout.max_new_tokens`, the longest response in tokens.
      temperature: `rollout.temperature`, > 0.
      top_p: `rollout.top_p`, in (0, 1].
      top_k: `rollout.top_k` (0 = off).
      prompts_per_sampler_call: `rollout.prompts_per_sampler_call`, prompts per sampler call over all processes
        (0 = the whole rollout batch in one call).
      decode_block: `rollout.decode_block`, response keys per block of the samplers' decode attention (>= 1).
      decode_stages: `rollout.decode_stages`, the most compaction stages of a sampler decode loop (>= 1).

    Raises:
      ConfigError: a value is out of the range given above.
    """

    n: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    prompts_per_sampler_call: int
    decode_block: int
    decode_stages: int

    def __post_init__(self):
        _require(self.n >= 2, f"rollout.n = {self.n}: group advantages need at least 2 samples per prompt")
        _require(self.max_new_tokens >= 1, f"rollout.max_new_tokens = {self.max_new_tokens} must be >= 1")
        _require(self.temperature > 0, f"rollout.temperature = {self.temperature} must be > 0 for training")
        _require(0 < self.top_p <= 1, f"rollout.top_p = {self.top_p} must be in (0, 1]")
        _require(self.top_k >= 0, f"rollout.top_k = {self.top_k} must be >= 0 (0 = off)")
        _require(self.decode_block >= 1, f"rollout.decode_block = {self.decode_block} must be >= 1")
        _require(self.decode_stages >= 1, f"rollout.decode_stages = {self.decode_stages} must be >= 1")


@dataclasses.dataclass(frozen=True)
class RLSettings:
    """The algorithm: the `rl` config section with what `rl.algorithm` fixes.

    Attributes:
      algorithm: `rl.algorithm`, a registered algorithm name.
      estimator: the algorithm's advantage estimator name (set by the algorithm, not a key; "gae" for the
        value-based algorithms).
      selection: the update-batch selection: the algorithm's selector (or `rl.selector`) with `rl.keep_ratio`,
        `rl.pts_variant`, `rl.pts_rerank`, `rl.abs_rounds`, `rl.abs_weight`, `rl.abs_power`, `rl.cppo_prune` and
        group size `rollout.n`, then the options the algorithm fixes.
      dynamic_sampling: whether the algorithm refills uninformative groups (DAPO; set by the algorithm).
      dynamic_sampling_max_tries: `rl.dynamic_sampling_max_tries`, prompt batches generated at most per step.
      dynamic_sampling_fallback: `rl.dynamic_sampling_fallback`, "fill" or "error" when the tries run out.
      old_logprobs: `rl.old_logprobs`, "recompute" (a forward pass over the update's rows before it) or "sampler" (the
        sampler's log-probs).
      gae: the GAE settings of a value-based algorithm (`rl.gamma`, `rl.gae_lambda`, `rl.critic_lambda`,
        `rl.whiten_advantages` with the algorithm's defaults and fixed values), None for the others.
      mask_truncated: `rl.mask_truncated`, responses cut at `rollout.max_new_tokens` are masked out of the policy
        loss (DAPO's overlong filtering); a critic still trains on them.
      fill_batches: prompt batches generated and merged into one rollout batch per step: CPPO's fill
        (`rl.cppo_fill` with the "cppo" selector) takes m = ceil(n / k) (`rl.advantages.cppo_fill_batches`), so the
        pruned groups of m batches fill the update batch; 1 otherwise.

    Raises:
      ConfigError: the estimator or selector is not registered, `dynamic_sampling_max_tries` is not >= 1, or
        `dynamic_sampling_fallback` or `old_logprobs` is unknown.
    """

    algorithm: str
    estimator: str
    selection: SelectionConfig
    dynamic_sampling: bool
    dynamic_sampling_max_tries: int
    dynamic_sampling_fallback: str
    old_logprobs: str
    gae: GAEConfig | None = None
    mask_truncated: bool = False
    fill_batches: int = 1

    @property
    def update_rows_per_prompt(self) -> int:
        """Update-batch rows per prompt of the step's own prompt batch: the selector's `rows_per_prompt` for each of
        the `fill_batches` merged batches (CPPO's fill keeps all m * k, not trimmed to n: no completion generated and
        ranked is dropped, at most k - 1 rows per prompt more than GRPO's n).

        Raises:
          ValueError: as `rl.selection.rows_per_prompt`.
        """
        return self.fill_batches * rows_per_prompt(self.selection)

    def __post_init__(self):
        _require(
            self.gae is not None or self.estimator in available_advantage_estimators(),
            f"rl.algorithm = {self.algorithm!r} needs advantage estimator {self.estimator!r}, which is not registered",
        )
        _require(
            self.selection.selection in available_selectors(),
            f"rl.algorithm = {self.algorithm!r} needs update-batch selector {self.selection.selection!r}, "
            "which is not registered",
        )
        _require(
            self.dynamic_sampling_max_tries >= 1,
            f"rl.dynamic_sampling_max_tries = {self.dynamic_sampling_max_tries} must be >= 1",
        )
        _require(
            self.dynamic_sampling_fallback in DYNAMIC_SAMPLING_FALLBACKS,
            f"rl.dynamic_sampling_fallback = {self.dynamic_sampling_fallback!r}; expected one of "
            f"{DYNAMIC_SAMPLING_FALLBACKS}",
        )
        selection = self.selection
        _require(selection.rounds >= 1, f"rl.abs_rounds = {selection.rounds} must be >= 1")
        _require(
            selection.weight in PAIR_WEIGHT_KINDS,
            f"rl.abs_weight = {selection.weight!r}; expected one of {PAIR_WEIGHT_KINDS}",
        )
        _require(selection.power > 0, f"rl.abs_power = {selection.power} must be > 0")
        _require(
            selection.sampling in ABS_SAMPLINGS,
            f"rl.abs_sampling = {selection.sampling!r}; expected one of {ABS_SAMPLINGS}",
        )
        _require(
            selection.single_round in SINGLE_ROUND,
            f"rl.abs_single_round = {selection.single_round!r}; expected one of {SINGLE_ROUND}",
        )
        _require(selection.update_chunks >= 0, f"rl.update_chunks = {selection.update_chunks} must be >= 0")
        _require(
            selection.pts_variant in PTS_VARIANTS,
            f"rl.pts_variant = {selection.pts_variant!r}; expected one of {PTS_VARIANTS}",
        )
        _require(
            self.old_logprobs in OLD_LOGPROBS,
            f"rl.old_logprobs = {self.old_logprobs!r}; expected one of {OLD_LOGPROBS}",
        )


@dataclasses.dataclass(frozen=True)
class CriticSettings:
    """The critic of a value-based algorithm: the `critic` config section.

    Attributes:
      checkpoint: `critic.checkpoint`, the directory the critic starts from ("" = the policy's starting
        parameters); its `value_head.safetensors` is read when present, else the value head starts fresh.
      share_image_features: `critic.share_image_features`, the critic reads the policy's image features and holds
        no vision tower.
      pretrain_steps: `critic.pretrain_steps` with the algorithm's default for -1: the first rollout batches whose
        update trains the critic only.
      optimizer: the critic's optimizer: `optim` with `critic.learning_rate` and `critic.warmup_steps`.
      loss: `critic.value_clip` (0 as None) and `critic.value_coef`.

    Raises:
      ConfigError: `pretrain_steps` is negative.
    """

    checkpoint: str
    share_image_features: bool
    pretrain_steps: int
    optimizer: OptimizerConfig
    loss: CriticLossConfig

    def __post_init__(self):
        _require(
            self.pretrain_steps >= 0,
            f"critic.pretrain_steps = {self.pretrain_steps} must be >= 0 (-1 = the algorithm's)",
        )


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The loop: the `train` config section with the batch arithmetic derived from it.

    Attributes:
      total_steps: `train.total_steps`, rollout batches to run.
      num_minibatches: optimizer steps per rollout batch, `data.rollout_batch_prompts` / `train.minibatch_prompts`.
      micro_batches: gradient-accumulation micro-batches per optimizer step, a mini-batch's rows /
        min(`train.micro_batch_rows`, a mini-batch's rows).
      logprob_micro_batch_rows: rows per old-log-prob pass, the largest divisor of the update batch's rows (the
        rows the pass computes) that is <= `train.micro_batch_rows`.
      value_micro_batch_rows: rows per pass of the critic's predictions over the rollout batch, the largest divisor
        of its rows that is <= `train.micro_batch_rows`.
      pack_sequences: `train.pack_sequences`, the log-prob and update passes run on packed rows
        (`learner.packing`) rather than one padded row per sequence.
      max_nonfinite_in_a_row: `train.max_nonfinite_in_a_row`, steps in a row with a skipped (non-finite) update
        after which the run stops.

    Raises:
      ConfigError: `total_steps` or `max_nonfinite_in_a_row` is not >= 1.
    """

    total_steps: int
    num_minibatches: int
    micro_batches: int
    logprob_micro_batch_rows: int
    value_micro_batch_rows: int
    pack_sequences: bool
    max_nonfinite_in_a_row: int

    def __post_init__(self):
        _require(self.total_steps >= 1, f"train.total_steps = {self.total_steps} must be >= 1")
        _require(
            self.max_nonfinite_in_a_row >= 1,
            f"train.max_nonfinite_in_a_row = {self.max_nonfinite_in_a_row} must be >= 1",
        )


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Validation: the `eval` config section.

    Attributes:
      every: `eval.every`, validate every k steps and after the last step (0 = never).
      before_training: `eval.before_training`, also validate before the first step of a fresh run.
      n: `eval.n`, samples per validation prompt at `temperature` (a greedy sample is scored as well).
      temperature: `eval.temperature`, > 0.
      top_p: `eval.top_p`, nucleus of the sampled validation, in (0, 1].
      max_prompts: `eval.max_prompts`, the validation prompts used over all processes, reached in whole batches
        (0 = the whole validation set).
      num_examples: `eval.num_examples`, sample generations written to `eval_samples.jsonl` per validation.
      pass_k: `eval.pass_k`, the k of `python -m shuffle_r1_jax.evaluate`'s pass@k, sorted, without those above
        `n` (`_pass_k` checks them).

    Raises:
      ConfigError: a value is out of range (`n` and `temperature` must be positive, the others >= 0).
    """

    every: int
    before_training: bool
    n: int
    temperature: float
    top_p: float
    max_prompts: int
    num_examples: int
    pass_k: tuple[int, ...] = (1,)

    def __post_init__(self):
        _require(self.every >= 0, f"eval.every = {self.every} must be >= 0 (0 = never)")
        _require(0 < self.top_p <= 1, f"eval.top_p = {self.top_p} must be in (0, 1]")
        _require(self.n >= 1, f"eval.n = {self.n} must be >= 1")
        _require(self.temperature > 0, f"eval.temperature = {self.temperature} must be > 0 (greedy runs as well)")
        _require(self.max_prompts >= 0, f"eval.max_prompts = {self.max_prompts} must be >= 0 (0 = all)")
        _require(self.num_examples >= 0, f"eval.num_examples = {self.num_examples} must be >= 0")


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    """Checkpoints: the `checkpoint` config section.

    Attributes:
      every: `checkpoint.every`, save every k steps and after the last step.
      keep_last: `checkpoint.keep_last`, the most recent checkpoints kept.
      keep_best: `checkpoint.keep_best`, also keep the checkpoint of the best validation accuracy.
      export_hf: `checkpoint.export_hf`, a directory the final policy is exported to in the Hugging Face layout
        ("" = no export).
      on_damaged: `checkpoint.on_damaged`, what resuming does with a damaged latest checkpoint: "fallback" (move
        it aside, resume from the newest intact one) or "refuse" (stop, naming it).
      save_retries: `checkpoint.save_retries`, how many times a failed checkpoint save is retried before the run
        stops (0 = stop at once; above 0 saves block until written).

    Raises:
      ConfigError: `every` or `keep_last` is not >= 1, `on_damaged` is unknown or `save_retries` is not >= 0.
    """

    every: int
    keep_last: int
    keep_best: bool
    export_hf: str
    on_damaged: str
    save_retries: int

    def __post_init__(self):
        _require(self.every >= 1, f"checkpoint.every = {self.every} must be >= 1")
        _require(self.keep_last >= 1, f"checkpoint.keep_last = {self.keep_last} must be >= 1")
        _require(
            self.on_damaged in ON_DAMAGED,
            f"checkpoint.on_damaged = {self.on_damaged!r}; expected one of {ON_DAMAGED}",
        )
        _require(
            isinstance(self.save_retries, int) and self.save_retries >= 0,
            f"checkpoint.save_retries = {self.save_retries!r} must be an integer >= 0",
        )


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a run reads, resolved from its config (static: hashable where jitted functions take it).

    Attributes:
      seed: the top-level `seed`; it seeds sampling, the ABS draws and the data order.
      model: the `model` section.
      data: the `data` section and the batch per process.
      reward: the `reward` section.
      rollout: the `rollout` section.
      rl: the `rl` section with what the algorithm fixes.
      loss: the `loss` section with the algorithm's fixed `clip_high` / `agg_mode`, `dual_clip` 0 as None,
        `rollout.max_new_tokens` as the normalisation constant, the rollout temperature and `loss.logprob_chunk`
        capped at `rollout.max_new_tokens`.
      optimizer: the `optim` section; its schedule spans `train.total_steps` x optimizer steps per batch.
      train: the `train` section with the derived batch arithmetic.
      eval: the `eval` section.
      checkpoint: the `checkpoint` section.
      mesh: the `mesh` section.
      mesh_shape: the resolved (data, fsdp, tensor) axis sizes of the mesh.
      distributed: the `distributed` section.
      critic: the `critic` section for a value-based algorithm, None for the others.
      phases: the run's phases (`stages` and `rollout.length_schedule`, see `train.stages`), each with its settings;
        () when the whole run has these settings.
    """

    seed: int
    model: ModelSettings
    data: DataSettings
    reward: RewardSettings
    rollout: RolloutSettings
    rl: RLSettings
    loss: LossConfig
    optimizer: OptimizerConfig
    train: TrainSettings
    eval: EvalSettings
    checkpoint: CheckpointSettings
    mesh: MeshSpec
    mesh_shape: tuple[int, int, int]
    distributed: DistributedSpec
    critic: CriticSettings | None = None
    phases: tuple[Phase, ...] = ()

    @property
    def batch_shards(self) -> int:
        """Row shards of a batch on the mesh: data x fsdp."""
        return self.mesh_shape[0] * self.mesh_shape[1]


@dataclasses.dataclass(frozen=True)
class Phase:
    """Steps [first_step, last_step) of a run with one stage and one response length.

    Attributes:
      stage: the stage's index (0 without stages).
      name: the stage's name ("" without stages).
      first_step: the steps done when the phase starts.
      last_step: the steps done when it ends.
      settings: the run's settings in the phase (the config with the stage's values and the scheduled length).
    """

    stage: int
    name: str
    first_step: int
    last_step: int
    settings: RunSettings


def _converted(errors: tuple[type[Exception], ...], build):
    """`build()`, with the listed exceptions re-raised as ConfigError (their messages name the keys)."""
    try:
        return build()
    except errors as err:
        raise ConfigError(str(err)) from err


def start_distributed(c: ConfigDict) -> bool:
    """Starts `jax.distributed` as the `distributed` section says (call it before any device is touched).

    Args:
      c: the run's config; its `distributed` section and `mesh.preset` are read.

    Returns:
      True when `jax.distributed` is initialized after the call (a multi-process run's process), False when the
      config does not ask for it.

    Raises:
      ConfigError: the `distributed` section is invalid.
    """
    spec = _converted((DistributedConfigError,), lambda: DistributedSpec.from_config(c.distributed))
    return _converted((DistributedConfigError,), lambda: initialize_distributed(spec, c.mesh.preset))


def resolve(c: ConfigDict, *, check_inputs: bool = True) -> RunSettings:
    """Validates `c` and returns the resolved settings.

    Call `start_distributed` first in a multi-process run: the batch checks use the process and device counts.

    Args:
      c: the run's config (`defaults.base_config` and a config file's changes).
      check_inputs: also check that model.checkpoint, data.train and data.val exist and the reward imports
        (`check_run_inputs`; off for planning a run whose inputs are elsewhere).

    Returns:
      The `RunSettings` of the run.

    Raises:
      ConfigError: a value is invalid or inconsistent with another (the batch does not divide over the
        processes, the mesh's batch shards, the sampler calls, the mini-batches or the micro-batches), the
        setup function does not import, or (with `check_inputs`) an input is missing; the message names the key
        and the value.
    """
    _require_finite_numbers(c)
    algorithm = _converted((ValueError,), lambda: get_algorithm(c.rl.algorithm))
    _require(isinstance(c.seed, int) and 0 <= c.seed < 2**32, f"seed = {c.seed!r} must be an integer in [0, 2**32)")
    distributed = _converted((DistributedConfigError,), lambda: DistributedSpec.from_config(c.distributed))
    _converted((DistributedConfigError,), distributed.validate)
    rollout = _rollout_settings(c)
    rl = _rl_settings(c, algorithm, rollout.n)
    data = _data_settings(c)
    mesh = _converted((MeshConfigError,), lambda: MeshSpec.from_config(c.mesh))
    shape = _converted((MeshConfigError,), lambda: mesh_shape(mesh, len(mesh_devices(mesh))))
    _check_batch_layout(data, rollout, shape)
    train = _train_settings(c, data, rollout, rl, shape)
    optimizer = _optimizer_settings(c, train)
    critic = _critic_settings(c, algorithm, optimizer, train)  # checked for every algorithm
    settings = RunSettings(
        seed=c.seed,
        model=_model_settings(c),
        data=data,
        reward=_reward_settings(c, algorithm, rollout),
        rollout=rollout,
        rl=rl,
        loss=_loss_settings(c, rollout, algorithm.loss),
        optimizer=optimizer,
        train=train,
        eval=EvalSettings(
            every=c.eval.every,
            before_training=c.eval.before_training,
            n=c.eval.n,
            temperature=c.eval.temperature,
            top_p=c.eval.top_p,
            max_prompts=c.eval.max_prompts,
            num_examples=c.eval.num_examples,
            pass_k=_pass_k(c),
        ),
        checkpoint=CheckpointSettings(
            every=c.checkpoint.every,
            keep_last=c.checkpoint.keep_last,
            keep_best=c.checkpoint.keep_best,
            export_hf=c.checkpoint.export_hf,
            on_damaged=c.checkpoint.on_damaged,
            save_retries=c.checkpoint.save_retries,
        ),
        mesh=mesh,
        mesh_shape=shape,
        distributed=distributed,
        critic=critic if algorithm.critic else None,
        phases=_phases(c, check_inputs),
    )
    if c.setup:
        _converted((ValueError,), lambda: import_function(c.setup, what="setup"))
    if check_inputs:
        check_run_inputs(settings)
    return settings


def _pass_k(c: ConfigDict) -> tuple[int, ...]:
    """`eval.pass_k` sorted, without duplicates and without the k above `eval.n`.

    Raises:
      ConfigError: a k is not an integer >= 1.
    """
    ks = tuple(c.eval.pass_k)
    _require(
        all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks),
        f"eval.pass_k = {ks!r} must hold integers >= 1",
    )
    return tuple(sorted({k for k in ks if k <= c.eval.n}))


def _phases(c: ConfigDict, check_inputs: bool) -> tuple[Phase, ...]:
    """Each phase of `stages` and `rollout.length_schedule` with its settings resolved (errors name the stage)."""
    plans = _converted(
        (StageError,),
        lambda: plan_phases(c.stages, c.rollout.length_schedule, c.train.total_steps, c.rollout.max_new_tokens),
    )
    phases = []
    for plan in plans:
        phase_config = c.copy_and_resolve_references()
        phase_config.stages = ()
        phase_config.rollout.length_schedule = ()
        where = f"stage {plan.stage} ({plan.name}), steps {plan.first_step}-{plan.last_step}"
        try:
            for key, value in plan.overrides:
                set_key(phase_config, key, value)
            settings = resolve(phase_config, check_inputs=check_inputs)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from err
        phases.append(Phase(plan.stage, plan.name, plan.first_step, plan.last_step, settings))
    return tuple(phases)


def _lora_settings(c: ConfigDict) -> LoraConfig | None:
    """The `lora` section's adapters, or None with `lora.rank` 0."""
    _require(isinstance(c.lora.rank, int) and c.lora.rank >= 0, f"lora.rank = {c.lora.rank!r} must be an integer >= 0")
    if c.lora.rank == 0:
        return None
    _require(
        c.optim.freeze_vision,
        "lora.rank > 0 trains only the decoder's adapters, so the vision tower is frozen: set "
        f"optim.freeze_vision = True (it is {c.optim.freeze_vision!r})",
    )
    return _converted(
        (ValueError, TypeError),
        lambda: LoraConfig(
            rank=c.lora.rank, alpha=float(c.lora.alpha), targets=tuple(c.lora.targets), dropout=float(c.lora.dropout)
        ),
    )


def _model_settings(c: ConfigDict) -> ModelSettings:
    for key in ("dtype", "param_dtype"):
        _require(c.model[key] in MODEL_DTYPES, f"model.{key} = {c.model[key]!r}; expected one of {MODEL_DTYPES}")
    _require(
        c.lora.base_dtype in MODEL_DTYPES, f"lora.base_dtype = {c.lora.base_dtype!r}; expected one of {MODEL_DTYPES}"
    )
    lora = _lora_settings(c)
    return ModelSettings(
        checkpoint=c.model.checkpoint,
        dtype=DTYPES[c.model.dtype],
        param_dtype=DTYPES[c.model.param_dtype],
        attention_impl=c.model.attention_impl,
        remat=c.model.remat,
        lora=lora,
        base_dtype=DTYPES[c.lora.base_dtype if lora is not None else c.model.param_dtype],
    )


def video_config(c: ConfigDict) -> VideoPreprocessConfig:
    """The video sampling and sizing of the config's `data.video_*` keys.

    Raises:
      ConfigError: naming the key, when a value is out of range.
    """
    try:
        return VideoPreprocessConfig(
            fps=c.data.video_fps,
            min_frames=c.data.video_min_frames,
            max_frames=c.data.video_max_frames,
            min_pixels=c.data.video_min_pixels,
            max_pixels=c.data.video_max_pixels,
            total_pixels=c.data.video_total_pixels,
        )
    except ValueError as err:  # its messages name the fields as the keys after "data."
        raise ConfigError(re.sub(r"\bvideo_", "data.video_", str(err))) from err


def _data_settings(c: ConfigDict) -> DataSettings:
    prompts, processes = c.data.rollout_batch_prompts, jax.process_count()
    _require(
        prompts % processes == 0, f"data.rollout_batch_prompts = {prompts} does not divide over {processes} processes"
    )
    columns = Columns(
        prompt=c.data.prompt_column,
        answer=c.data.answer_column,
        images=c.data.images_column or None,
        videos=c.data.videos_column or None,
        image_dir=c.data.image_dir or None,
        reward=tuple(c.data.reward_columns),
    )
    return _converted(
        (ValueError,),
        lambda: DataSettings(
            train=c.data.train,
            val=c.data.val,
            columns=columns,
            prompt_format=c.data.prompt_format,
            max_prompt_length=c.data.max_prompt_length,
            overlong_prompts=c.data.overlong_prompts,
            buckets=BucketConfig(prompt_lengths=tuple(c.data.prompt_buckets)),
            image=ImagePreprocessConfig(min_pixels=c.data.min_pixels, max_pixels=c.data.max_pixels),
            video=video_config(c),
            rollout_batch_prompts=prompts,
            prompts_per_process=prompts // processes,
            on_bad_record=c.data.on_bad_record,
            max_consecutive_bad_records=c.data.max_consecutive_bad_records,
            warn_bad_fraction=c.data.warn_bad_fraction,
            seed=c.seed,
            num_threads=c.data.num_threads,
            prefetch=c.data.prefetch,
            sampling=SamplingConfig(
                mode=c.data.sampling,
                priority_floor=c.data.priority_floor,
                pass_rate_update_weight=c.data.pass_rate_update_weight,
                curriculum_column=c.data.curriculum_column,
                curriculum_order=c.data.curriculum_order,
            ),
        ),
    )


def _rollout_settings(c: ConfigDict) -> RolloutSettings:
    return RolloutSettings(
        n=c.rollout.n,
        max_new_tokens=c.rollout.max_new_tokens,
        temperature=c.rollout.temperature,
        top_p=c.rollout.top_p,
        top_k=c.rollout.top_k,
        prompts_per_sampler_call=c.rollout.prompts_per_sampler_call,
        decode_block=c.rollout.decode_block,
        decode_stages=c.rollout.decode_stages,
    )


def _reward_settings(c: ConfigDict, algorithm: Algorithm, rollout: RolloutSettings) -> RewardSettings:
    """The `reward` section with the algorithm's overlong buffer for -1 (`rollout.max_new_tokens` // its divisor)."""
    buffer, limit = c.reward.overlong_buffer, rollout.max_new_tokens
    _require(
        buffer == -1 or 0 <= buffer <= limit,
        f"reward.overlong_buffer = {buffer} must be in [0, rollout.max_new_tokens = {limit}] (0 = off; -1 = the "
        "algorithm's)",
    )
    if buffer == -1:
        divisor = algorithm.overlong_buffer_divisor
        buffer = limit // divisor if divisor else 0
    return RewardSettings(
        name=c.reward.name,
        timeout_s=c.reward.timeout_s,
        num_workers=c.reward.num_workers,
        batch_timeout_s=c.reward.batch_timeout_s,
        max_failed_steps=c.reward.max_failed_steps,
        overlong_buffer=buffer,
        overlong_factor=c.reward.overlong_factor,
        options=tuple(sorted(c.reward.options.to_dict().items())),
    )


def _rl_settings(c: ConfigDict, algorithm: Algorithm, n: int) -> RLSettings:
    """The `rl` section with the algorithm's estimator, selector and the selection values it fixes."""
    selector = c.rl.selector or algorithm.selector
    _require(
        selector in available_selectors(),
        f"rl.selector = {c.rl.selector!r} is unknown; known selectors: {', '.join(available_selectors())}",
    )
    selection = SelectionConfig(
        selection=selector,
        group_size=n,
        keep_ratio=c.rl.keep_ratio,
        pts_variant=c.rl.pts_variant,
        rerank=c.rl.pts_rerank,
        rounds=c.rl.abs_rounds,
        weight=c.rl.abs_weight,
        power=c.rl.abs_power,
        cppo_prune=c.rl.cppo_prune,
        sampling=c.rl.abs_sampling,
        single_round=c.rl.abs_single_round,
        update_chunks=c.rl.update_chunks,
    )
    _require(0 <= c.rl.cppo_prune < 1, f"rl.cppo_prune = {c.rl.cppo_prune} must be in [0, 1)")
    selection = dataclasses.replace(selection, **dict(algorithm.selection))
    fill = c.rl.cppo_fill and selection.selection == "cppo"
    _require(
        not (fill and algorithm.dynamic_sampling),
        f"rl.cppo_fill = True with rl.algorithm = {c.rl.algorithm!r} and rl.selector = 'cppo': DAPO's dynamic "
        "sampling already refills the rollout batch; set rl.cppo_fill = False",
    )
    fill_batches = 1
    if fill:
        fill_batches = _converted((ValueError,), lambda: cppo_fill_batches(n, selection.cppo_prune))
    if selector in ("pts", "pts_abs"):
        _require(
            n % 2 == 0,
            f"rollout.n = {n} is odd, but rl.algorithm = {c.rl.algorithm!r} with selector {selector!r} pairs "
            "rollouts (PTS needs an even n)",
        )
    gae = _gae_settings(c, algorithm)  # checked for every algorithm, used by the value-based ones
    return RLSettings(
        algorithm=c.rl.algorithm,
        estimator=algorithm.estimator,
        selection=selection,
        dynamic_sampling=algorithm.dynamic_sampling,
        dynamic_sampling_max_tries=c.rl.dynamic_sampling_max_tries,
        dynamic_sampling_fallback=c.rl.dynamic_sampling_fallback,
        old_logprobs=c.rl.old_logprobs,
        gae=gae if algorithm.critic else None,
        mask_truncated=c.rl.mask_truncated,
        fill_batches=fill_batches,
    )


def _gae_settings(c: ConfigDict, algorithm: Algorithm) -> GAEConfig:
    """`rl.gamma`, `rl.gae_lambda`, `rl.critic_lambda` and `rl.whiten_advantages` with the algorithm's defaults (for
    -1) and the values it fixes."""
    defaults = dict(algorithm.gae_defaults)
    for key in ("gae_lambda", "critic_lambda"):
        value = c.rl[key]
        _require(value == -1 or 0 <= value <= 1, f"rl.{key} = {value} must be in [0, 1] (-1 = the algorithm's)")
    actor_lam = c.rl.gae_lambda if c.rl.gae_lambda >= 0 else defaults.get("actor_lam", 1.0)
    critic_lam = c.rl.critic_lambda if c.rl.critic_lambda >= 0 else defaults.get("critic_lam", actor_lam)
    _require(0 <= c.rl.gamma <= 1, f"rl.gamma = {c.rl.gamma} must be in [0, 1]")
    gae = GAEConfig(gamma=c.rl.gamma, actor_lam=actor_lam, critic_lam=critic_lam, whiten=c.rl.whiten_advantages)
    return dataclasses.replace(gae, **dict(algorithm.gae))


def _batch_shards_text(shape: tuple[int, int, int]) -> str:
    return f"the {shape[0] * shape[1]} batch shards of the mesh (mesh data x fsdp = {shape[0]} x {shape[1]})"


def _check_batch_layout(data: DataSettings, rollout: RolloutSettings, shape: tuple[int, int, int]) -> None:
    """The rollout batch and each sampler call divide over the mesh's batch shards (and whole prompts stay on one
    process)."""
    prompts, n, shards, processes = data.rollout_batch_prompts, rollout.n, shape[0] * shape[1], jax.process_count()
    where = _batch_shards_text(shape)
    _require(
        (prompts * n) % shards == 0,
        f"the rollout batch (data.rollout_batch_prompts x rollout.n = {prompts} x {n} = {prompts * n} rows) "
        f"does not divide over {where}",
    )
    _require(
        processes == 1 or prompts % shards == 0,
        f"data.rollout_batch_prompts = {prompts} does not divide over {where}: with {processes} processes "
        "every batch shard holds whole prompts of one process",
    )
    per_call = rollout.prompts_per_sampler_call
    _require(
        per_call == 0 or (per_call >= 1 and prompts % per_call == 0),
        f"rollout.prompts_per_sampler_call = {per_call} must be 0 (the whole batch) or divide "
        f"data.rollout_batch_prompts = {prompts}",
    )
    _require(
        per_call == 0 or per_call % shards == 0,
        f"rollout.prompts_per_sampler_call = {per_call} must be a multiple of {where}, so that every device "
        "samples the same number of prompts in each call",
    )


def _train_settings(
    c: ConfigDict, data: DataSettings, rollout: RolloutSettings, rl: RLSettings, shape: tuple[int, int, int]
) -> TrainSettings:
    """The loop's batch arithmetic: mini-batches per rollout batch, micro-batches per mini-batch, rows per
    log-prob pass; warns when micro-batches cannot split over the devices."""
    prompts, mini, shards = data.rollout_batch_prompts, c.train.minibatch_prompts, shape[0] * shape[1]
    _require(
        mini >= 1 and prompts % mini == 0,
        f"train.minibatch_prompts = {mini} must divide data.rollout_batch_prompts = {prompts}",
    )
    # with CPPO's fill the rollout batch holds fill_batches x data.rollout_batch_prompts prompts; every count below is
    # per prompt of the step's own batch, so the mini-batches still cut it into train.num_minibatches steps
    per_prompt = _converted((ValueError,), lambda: rl.update_rows_per_prompt)
    if rl.selection.selection == "pts_abs":
        pairs = prompts * per_prompt // 2
        _require(
            pairs % rl.selection.rounds == 0,
            f"rl.abs_rounds = {rl.selection.rounds} must divide the {pairs} pairs PTS keeps per rollout batch",
        )
    rows_per_mini = mini * per_prompt
    chunks = rl.selection.update_chunks
    if chunks:
        total, pieces = prompts * per_prompt, chunks * (prompts // mini)
        _require(
            total % pieces == 0 and (total // pieces) % 2 == 0,
            f"rl.update_chunks = {chunks}: the {total} update rows do not cut into {chunks} chunks x "
            f"{prompts // mini} mini-batches of whole pairs",
        )
    _require(c.train.micro_batch_rows >= 1, f"train.micro_batch_rows = {c.train.micro_batch_rows} must be >= 1")
    micro = min(c.train.micro_batch_rows, rows_per_mini)
    _require(
        rows_per_mini % micro == 0,
        f"train.micro_batch_rows = {c.train.micro_batch_rows} must divide the {rows_per_mini} rows of a mini-batch "
        f"(train.minibatch_prompts = {mini} x {per_prompt} rows per prompt)",
    )
    if c.loss.agg_mode == "micro-token-mean":
        group = c.loss.agg_group_rows
        _require(
            group >= 1 and micro % group == 0,
            f"loss.agg_group_rows = {group} must divide the {micro} rows of a micro-batch (train.micro_batch_rows) "
            "for loss.agg_mode = 'micro-token-mean'",
        )
    if micro % shards and rows_per_mini % shards == 0:
        logger.warning(
            "train.micro_batch_rows = %d (%d rows per micro-batch) is not a multiple of %s: micro-batches are not "
            "split over the devices, every device computes all their rows (fine for tiny models; at 7B this is "
            "5x the memory, BUILD_NOTES 'Memory plan')",
            c.train.micro_batch_rows,
            micro,
            _batch_shards_text(shape),
        )
    return TrainSettings(
        total_steps=c.train.total_steps,
        num_minibatches=prompts // mini,
        micro_batches=rows_per_mini // micro,
        logprob_micro_batch_rows=largest_divisor(prompts * per_prompt, c.train.micro_batch_rows),
        value_micro_batch_rows=largest_divisor(prompts * rl.fill_batches * rollout.n, c.train.micro_batch_rows),
        pack_sequences=c.train.pack_sequences,
        max_nonfinite_in_a_row=c.train.max_nonfinite_in_a_row,
    )


def _loss_settings(c: ConfigDict, rollout: RolloutSettings, fixed: tuple[tuple[str, object], ...]) -> LossConfig:
    """The `loss` section, with the values the algorithm fixes (`fixed`) over the config's."""
    values = dict(
        opmd_tau=c.loss.opmd_tau,
        clip_low=c.loss.clip_low,
        clip_high=c.loss.clip_high,
        dual_clip=c.loss.dual_clip or None,
        ratio_level=c.loss.ratio_level,
        agg_mode=c.loss.agg_mode,
        agg_group_rows=c.loss.agg_group_rows,
        norm_constant=float(rollout.max_new_tokens),
        kl_coef=c.loss.kl_coef,
        kl_kind=c.loss.kl_kind,
        temperature=rollout.temperature,
        logprob_chunk=min(c.loss.logprob_chunk, rollout.max_new_tokens),
    )
    return _converted((ValueError, TypeError), lambda: LossConfig(**{**values, **dict(fixed)}))


def _optimizer_settings(c: ConfigDict, train: TrainSettings) -> OptimizerConfig:
    return _converted(
        (ValueError,),
        lambda: OptimizerConfig(
            learning_rate=c.optim.learning_rate,
            warmup_steps=c.optim.warmup_steps,
            schedule=c.optim.schedule,
            total_steps=max(train.total_steps * train.num_minibatches, 1),
            b1=c.optim.b1,
            b2=c.optim.b2,
            weight_decay=c.optim.weight_decay,
            max_grad_norm=c.optim.max_grad_norm,
            freeze_vision=c.optim.freeze_vision,
            adapters_only=c.lora.rank > 0,
        ),
    )


def _critic_settings(
    c: ConfigDict, algorithm: Algorithm, optimizer: OptimizerConfig, train: TrainSettings
) -> CriticSettings:
    """The `critic` section with the algorithm's pretraining default for -1."""
    pretrain = c.critic.pretrain_steps if c.critic.pretrain_steps != -1 else algorithm.critic_pretrain_steps
    _require(
        pretrain < train.total_steps,
        f"critic.pretrain_steps = {pretrain} must be below train.total_steps = {train.total_steps} (the pretraining "
        "steps are part of the run)",
    )
    _require(c.critic.learning_rate > 0, f"critic.learning_rate = {c.critic.learning_rate} must be > 0")
    _require(c.critic.warmup_steps >= 0, f"critic.warmup_steps = {c.critic.warmup_steps} must be >= 0")
    critic_optimizer = _converted(
        (ValueError,),
        lambda: dataclasses.replace(
            optimizer, learning_rate=c.critic.learning_rate, warmup_steps=c.critic.warmup_steps
        ),
    )
    return CriticSettings(
        checkpoint=c.critic.checkpoint,
        share_image_features=c.critic.share_image_features,
        pretrain_steps=pretrain,
        optimizer=critic_optimizer,
        loss=_converted(
            (ValueError,),
            lambda: CriticLossConfig(value_clip=c.critic.value_clip or None, value_coef=c.critic.value_coef),
        ),
    )


def _require_finite_numbers(c: ConfigDict, prefix: str = "") -> None:
    """Raises `ConfigError` naming the first float value of `c` (nested sections and tuples included) that is NaN
    or infinite."""
    for key, value in c.items():
        name = f"{prefix}{key}"
        if isinstance(value, ConfigDict):
            _require_finite_numbers(value, f"{name}.")
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            _require(not isinstance(item, float) or math.isfinite(item), f"{name} = {value!r} must be a finite number")


def check_run_inputs(settings: RunSettings) -> None:
    """Checks that the checkpoint has a readable config.json, every dataset spec names files and the reward imports.

    Args:
      settings: the resolved settings whose inputs are checked.

    Raises:
      ConfigError: an input is missing or unreadable; the message names the key.
    """
    checkpoint = settings.model.checkpoint
    _require(
        bool(checkpoint), "model.checkpoint is empty: give an HF-format Qwen2.5-VL directory (or use configs/demo.py)"
    )
    _require(
        (Path(checkpoint) / "config.json").is_file(),
        f"model.checkpoint = {checkpoint!r} has no config.json: give a local HF-format Qwen2.5-VL directory "
        "(download one with `huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct --local-dir DIR`) or one "
        "converted by scripts/convert_hf_to_orbax.py",
    )
    _converted((ModelConfigError,), lambda: load_config(checkpoint))
    critic = settings.critic.checkpoint if settings.critic is not None else ""
    if critic:
        _require(
            (Path(critic) / "config.json").is_file(),
            f'critic.checkpoint = {critic!r} has no config.json: give an HF-format Qwen2.5-VL directory ("" = the '
            "policy's starting parameters)",
        )
        critic_config = _converted((ModelConfigError,), lambda: load_config(critic))
        hidden, policy_hidden = critic_config.text.hidden_size, load_config(checkpoint).text.hidden_size
        _require(
            not settings.critic.share_image_features or hidden == policy_hidden,
            f"critic.checkpoint = {critic!r} has hidden size {hidden}, the policy {policy_hidden}: it cannot read the "
            "policy's image features (set critic.share_image_features = False to give it its own vision tower)",
        )
    _require(bool(settings.data.train), "data.train is empty: give a dataset path[@split]")
    for key in ("train", "val"):
        for spec in filter(None, getattr(settings.data, key).split(",")):
            try:
                resolve_data_files(spec)
            except DataSpecError as err:
                raise ConfigError(f"data.{key}: {err}") from err
    try:
        reward_fn = get_reward_fn(settings.reward.name)
    except ValueError as err:
        raise ConfigError(f"reward.name = {settings.reward.name!r}: {err}") from err
    reward_fn = _converted((ValueError,), lambda: bind_options(reward_fn, dict(settings.reward.options)))
    keywords = reward_keywords(reward_fn)
    untaken = [c for c in settings.data.columns.reward if keywords is not None and c not in keywords]
    _require(
        not untaken,
        f"data.reward_columns {untaken} are not arguments of the reward {settings.reward.name!r}; it takes "
        f"{sorted(keywords or ())}",
    )


def run_setup(c: ConfigDict) -> ConfigDict:
    """Runs the config's `setup` function and returns the config pointing at what it built.

    Args:
      c: the run's config; `setup(c)` builds what the run needs and returns {dotted key: value}.

    Returns:
      A copy of `c` with the returned values set, or `c` itself when `setup` is empty.

    Raises:
      ConfigError: the setup function does not import, or returns a key the config does not have.
    """
    if not c.setup:
        return c
    overrides = _converted((ValueError,), lambda: import_function(c.setup, what="setup"))(c)
    c = c.copy_and_resolve_references()
    for key, value in overrides.items():
        _converted((ValueError,), lambda: set_key(c, key, value))
    return c


def set_key(config: ConfigDict, key: str, value) -> None:
    """Sets the dotted key `key` (e.g. "rl.keep_ratio") of `config` to `value`.

    Raises:
      ValueError: the section or the key does not exist; the message names it.
    """
    node = config
    *parents, last = key.split(".")
    for part in parents:
        if part not in node:
            raise ValueError(f"{key}: no config section {part!r}")
        node = node[part]
    if last not in node:
        raise ValueError(f"{key}: no config key {last!r} in {'.'.join(parents) or 'the config'}")
    node[last] = value


def prepare(c: ConfigDict) -> tuple[ConfigDict, RunSettings]:
    """The start-up order of a run.

    `jax.distributed` is started when configured (before any device is touched), every value checked (fast,
    nothing built), the setup run, then the settings resolved with the inputs checked.

    Args:
      c: the run's config.

    Returns:
      (the config after setup, its `RunSettings`).

    Raises:
      ConfigError: see `start_distributed` and `resolve`.
    """
    start_distributed(c)
    resolve(c, check_inputs=False)
    c = run_setup(c)
    return c, resolve(c)


def largest_divisor(total: int, limit: int) -> int:
    """The largest divisor of `total` that is <= `limit` (micro-batch size for the old log-prob pass)."""
    return max(d for d in range(1, min(total, limit) + 1) if total % d == 0)
