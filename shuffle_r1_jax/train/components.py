"""The parts of a run built from its settings: the prompt encoder, the starting policy, a prompt stream and a
rollout generator. The trainer and the scripts that run the policy outside it (the offline pass-rate filter) build
them here, the same way."""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh

from shuffle_r1_jax.data.pipeline import PipelineConfig, PromptBatchIterator, prompt_batches
from shuffle_r1_jax.data.record_order import SamplingConfig
from shuffle_r1_jax.data.sources import RecordSource
from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.rewards.pool import RewardPool
from shuffle_r1_jax.rollout.generate import RolloutGenerator
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.sampling import Sampler
from shuffle_r1_jax.train.settings import DataSettings, RunSettings


def prompt_encoder(checkpoint: str, data: DataSettings) -> PromptEncoder:
    """The prompt encoder of `checkpoint`'s tokenizer with `data`'s prompt format, image and video settings and
    length limit."""
    return PromptEncoder.from_checkpoint(
        checkpoint,
        data.image,
        prompt_format=data.prompt_format,
        max_prompt_length=data.max_prompt_length,
        overlong=data.overlong_prompts,
        video_config=data.video,
    )


def load_policy(settings: RunSettings, mesh: Mesh) -> tuple[nnx.GraphDef, dict]:
    """(graph definition, parameters as a pure dict of arrays sharded over `mesh`) of `model.checkpoint`; with
    `lora`, its weights in `lora.base_dtype` and fresh adapters seeded by the run's seed."""
    m = settings.model
    model, _ = load_pretrained(
        m.checkpoint,
        m.dtype,
        param_dtype=m.base_dtype,
        attention_impl=m.attention_impl,
        remat=m.remat,
        mesh=mesh,
        rules=settings.mesh.rules,
        lora=m.lora,
        lora_seed=settings.seed,
    )
    return nnx.graphdef(model), nnx.to_pure_dict(nnx.state(model, nnx.Param))


def prompt_stream(
    data: DataSettings,
    spec: str | RecordSource,
    encoder: PromptEncoder,
    model_config: Qwen25VLConfig,
    *,
    shuffle: bool,
    seed: int,
    epochs: int | None = None,
    sampling: SamplingConfig = SamplingConfig(),
) -> PromptBatchIterator:
    """This process's prompt batches of `spec` (`data.prompts_per_process` prompts each, the last one of a finite
    stream smaller) in the order `sampling` says, read with `data`'s columns, buckets and bad-record policy."""
    pipeline = PipelineConfig(
        batch_size=data.prompts_per_process,
        seed=seed,
        shuffle=shuffle,
        num_epochs=epochs,
        drop_remainder=epochs is None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        on_bad_record=data.on_bad_record,
        max_consecutive_bad=data.max_consecutive_bad_records,
        sampling=sampling,
        num_threads=data.num_threads,
        prefetch=data.prefetch,
    )
    return prompt_batches(spec, encoder, model_config, pipeline, buckets=data.buckets, columns=data.columns)


def reward_pool(settings: RunSettings) -> RewardPool:
    """The scoring pool of `reward.name` with `reward.num_workers` workers and `reward.options` bound."""
    reward = settings.reward
    return RewardPool(reward.name, num_workers=reward.num_workers, options=dict(reward.options))


def rollout_generator(
    settings: RunSettings,
    sampler: Sampler,
    image_features,
    placer: BatchPlacer,
    tokenizer,
    pool: RewardPool,
    n: int,
) -> RolloutGenerator:
    """A rollout generator: `sampler` with n samples per prompt and `settings`' response length, sampler call size
    and reward time limits, scored by `pool`.

    Args:
      settings: the run (or phase) settings.
      sampler: the sampler.
      image_features: the jitted vision program `(params, VisionInputs) -> features`.
      placer: puts prompts on the mesh.
      tokenizer: decodes the responses.
      pool: the reward pool.
      n: samples per prompt.
    """
    rollout = settings.rollout
    return RolloutGenerator(
        sampler=sampler,
        image_features=image_features,
        placer=placer,
        tokenizer=tokenizer,
        reward_pool=pool,
        n=n,
        max_new_tokens=rollout.max_new_tokens,
        reward_timeout_s=settings.reward.timeout_s,
        prompts_per_call=rollout.prompts_per_sampler_call,
        reward_batch_timeout_s=settings.reward.batch_timeout_s,
    )
