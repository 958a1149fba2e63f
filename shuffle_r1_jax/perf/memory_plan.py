"""Per-device memory of one training step, from the run's own config, before renting hardware: the trainer's
programs (`train.programs.build_step_programs`) are lowered on abstract inputs, compiled, and XLA's accounting
is read; nothing is run and no weight is allocated.

The model is built abstractly (`nnx.eval_shape`), its parameters get the shardings of the config's `mesh.rules`,
and each program `Trainer.train_step` runs is lowered on `jax.ShapeDtypeStruct` inputs that carry the trainer's
shardings (prompt and rollout rows over data x fsdp), under the mesh as the trainer traces them:

  image_features   the vision tower once over the rollout batch's images (with the frozen vision tower its
                   output also feeds the log-prob and train programs);
  sampler_prefill  the decoder over one sampler call's prompts (rollout.prompts_per_sampler_call) with the image
                   features placed; writes each prompt's KV cache once (prompt bucket positions);
  sampler_decode   the while-loop of one-token steps: allocates each of the prompts x n rows a response KV cache
                   and attends over the prompt's cache and the row's own (`cascade_attention`);
  old_logprobs     the policy's log-probs of the rows the update uses, micro-batch by micro-batch;
  train_step       one optimizer step over a mini-batch with gradient accumulation over micro-batches;
                   parameters and optimizer state donated, the whole rollout batch resident;
and with a critic (the value-based algorithms; its parameters and optimizer state are resident in every phase):
  critic_values    the critic's predictions over the whole rollout batch, micro-batch by micro-batch;
  critic_step      the critic's optimizer step over the policy's mini-batch (its parameters and state donated).

A program's peak is the larger of XLA's peak figure and arguments + outputs - aliased + temporaries. A phase's
peak puts in place of the program's arguments everything on the device while it runs: jit drops inputs a
program does not read, but they stay allocated, and the optimizer state and rollout batch stay all step.
The data's shapes are assumptions the config does not hold: the prompt length is the largest prompt bucket
and each prompt has `images_per_prompt` square images of about `image_tokens` merged tokens and
`videos_per_prompt` videos of `video_seconds` at `video_size`, sampled and sized by the run's `data.video_*`
settings (`DataShapes.video_grid`).

On CPU the programs are compiled with XLA:CPU's memory-optimized scheduler: its default schedules each layer's
recomputation next to its forward pass, so remat would show no saving (BUILD_NOTES, "Memory plan").
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shuffle_r1_jax.learner.critic import CriticTargets
from shuffle_r1_jax.learner.optimizer import make_optimizer
from shuffle_r1_jax.learner.update import UpdateTargets
from shuffle_r1_jax.models.qwen2_5_vl import ModelInputs, Qwen25VLConfig, VisionInputs, abstract_model
from shuffle_r1_jax.models.qwen2_5_vl.cascade_attention import suffix_layout
from shuffle_r1_jax.models.qwen2_5_vl.kv_cache import LayerKVCache
from shuffle_r1_jax.models.qwen2_5_vl.layout import windows_of_grid
from shuffle_r1_jax.parallel.mesh_config import build_mesh
from shuffle_r1_jax.parallel.sharding import BATCH_AXES, mirror_shardings, param_shardings
from shuffle_r1_jax.processing.image import ImagePreprocessConfig
from shuffle_r1_jax.processing.video import VideoPreprocessConfig, sampled_frame_count, video_frame_size
from shuffle_r1_jax.rollout.types import Rollouts
from shuffle_r1_jax.train.programs import CriticModel, SpecialTokens, build_step_programs
from shuffle_r1_jax.train.settings import RunSettings

GiB = 2**30
PROGRAMS = (
    "image_features",
    "sampler_prefill",
    "sampler_decode",
    "old_logprobs",
    "train_step",
    "critic_values",
    "critic_step",
)
CRITIC_PROGRAMS = ("critic_values", "critic_step")


@dataclasses.dataclass(frozen=True)
class DataShapes:
    """What the plan assumes of the data (the config does not say).

    Attributes:
      images_per_prompt: square images per prompt (0 = none).
      image_tokens: about how many merged tokens each image has.
      videos_per_prompt: videos per prompt (0 = none).
      video_seconds: the length of each video.
      video_size: (height, width) of each video's frames before resizing.
      video_source_fps: the videos' own frame rate.
    """

    images_per_prompt: int = 1
    image_tokens: int = 1024
    videos_per_prompt: int = 0
    video_seconds: float = 10.0
    video_size: tuple[int, int] = (480, 640)
    video_source_fps: float = 30.0

    def video_grid(self, config: Qwen25VLConfig, video: VideoPreprocessConfig) -> tuple[int, int, int]:
        """The (t, h, w) patch grid of each video when the data pipeline samples and resizes it.

        Raises:
          ValueError: the video is too short (under 2 frames) or its frames cannot be resized.
        """
        v = config.vision
        patches = ImagePreprocessConfig(
            patch_size=v.patch_size, merge_size=v.spatial_merge_size, temporal_patch_size=v.temporal_patch_size
        )
        total = round(self.video_seconds * self.video_source_fps)
        frames = sampled_frame_count(total, self.video_source_fps, video, v.temporal_patch_size)
        height, width = video_frame_size(*self.video_size, frames, video, patches)
        return math.ceil(frames / v.temporal_patch_size), height // v.patch_size, width // v.patch_size


@dataclasses.dataclass(frozen=True)
class PromptVision:
    """The vision inputs of one prompt under `DataShapes`.

    Attributes:
      rows: vision-batch rows (an image or a video's temporal patch each).
      tokens: merged (image and video) tokens in the prompt.
      patch_slots: patch slots of a row (the widest of the images' and the videos' frames).
    """

    rows: int
    tokens: int
    patch_slots: int

    @classmethod
    def of(cls, config: Qwen25VLConfig, data: DataShapes, video: VideoPreprocessConfig) -> "PromptVision":
        """The vision inputs of a prompt of `data`'s images and videos."""
        image_tokens, image_slots = vision_slots(config, data.image_tokens) if data.images_per_prompt else (0, 0)
        rows, tokens, slots = data.images_per_prompt, data.images_per_prompt * image_tokens, image_slots
        if data.videos_per_prompt:
            t, h, w = data.video_grid(config, video)
            windows = math.prod(windows_of_grid(h, w, config.vision)) * config.vision.window_patches
            rows += data.videos_per_prompt * t
            tokens += data.videos_per_prompt * t * h * w // config.vision.merge_unit
            slots = max(slots, windows)
        return cls(rows, tokens, slots)


@dataclasses.dataclass
class ProgramMemory:
    """One compiled program and its per-device memory.

    Attributes:
      name: the program, one of `PROGRAMS`.
      shape: what it was compiled for, in words (rows, prompts, cache positions).
      resident: the bytes on the device while it runs: its inputs (those it reads are its arguments; jit drops
        the others) and what the step keeps there meanwhile (the optimizer state, the rollout batch).
      stats: XLA's memory analysis of the compiled program (None when it did not compile).
      error: why it did not compile (None when it did).
      compile_s: seconds spent lowering and compiling it.
    """

    name: str
    shape: str
    resident: int
    stats: Any = None
    error: str | None = None
    compile_s: float = 0.0

    @property
    def peak(self) -> int | None:
        """Per-device peak of the program alone: the larger of XLA's peak figure and arguments + outputs -
        aliased + temp (None when it did not compile)."""
        if self.stats is None:
            return None
        s = self.stats
        estimate = s.argument_size_in_bytes + s.output_size_in_bytes - s.alias_size_in_bytes + s.temp_size_in_bytes
        return max(getattr(s, "peak_memory_in_bytes", 0) or 0, estimate)

    @property
    def phase_peak(self) -> int | None:
        """Per-device peak of the phase: the program's peak with its arguments replaced by all resident bytes
        (None when it did not compile)."""
        return None if self.peak is None else self.peak - self.stats.argument_size_in_bytes + self.resident


@dataclasses.dataclass
class MemoryPlan:
    """The per-device figures of one plan (bytes) and what they are of.

    Attributes:
      settings: the planned run's settings.
      data: the data shapes assumed.
      model_name: the model's name, for the report.
      num_params: the model's parameter count.
      devices: the devices planned on, in words ("8 x cpu").
      params: bytes of the parameters per device.
      opt_state: bytes of the optimizer state per device.
      kv_cache: bytes of one sampler call's KV caches per device (the prompts' and the rows' responses').
      rollouts: bytes of the rollout batch and its update targets per device.
      programs: each compiled program, in `PROGRAMS` order.
      critic_params: bytes of the critic's parameters per device (0 without a critic).
      critic_opt_state: bytes of the critic's optimizer state per device (0 without a critic).
      video_grid: the (t, h, w) patch grid of each video (None without videos).
      video_tokens: the merged tokens of each video (0 without videos).
    """

    settings: RunSettings
    data: DataShapes
    model_name: str
    num_params: int
    devices: str
    params: int
    opt_state: int
    kv_cache: int
    rollouts: int
    programs: list[ProgramMemory]
    critic_params: int = 0
    critic_opt_state: int = 0
    video_grid: tuple[int, int, int] | None = None
    video_tokens: int = 0

    def program(self, name: str) -> ProgramMemory:
        """The planned program called `name`."""
        return next(p for p in self.programs if p.name == name)


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a tree of sharded `ShapeDtypeStruct`s (the largest shard of each leaf)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * leaf.dtype.itemsize
    return total


def _fitting_spec(mesh: Mesh, shape: tuple[int, ...], spec: PartitionSpec) -> PartitionSpec:
    """`spec` with every dimension that does not divide by its mesh axes replicated instead."""
    out = []
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        ways = math.prod(mesh.shape[a] for a in names)
        out.append(axes if names and size % ways == 0 else None)
    return PartitionSpec(*out)


def _array(mesh: Mesh, shape: tuple[int, ...], dtype, rows_axis: int | None = None) -> jax.ShapeDtypeStruct:
    """An abstract array with dimension `rows_axis` over the batch axes (None: replicated); a dimension that does
    not divide is replicated, as the trainer's placement does."""
    spec = PartitionSpec() if rows_axis is None else PartitionSpec(*([None] * rows_axis), BATCH_AXES)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, _fitting_spec(mesh, shape, spec)))


def _with_shardings(tree, shardings):
    """The abstract arrays of `tree` with the shardings of the matching tree `shardings`."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def vision_slots(config: Qwen25VLConfig, image_tokens: int) -> tuple[int, int]:
    """The slots of one square image with about `image_tokens` merged tokens, laid out in attention windows as
    `layout.layout_vision` does.

    Returns:
      (merged tokens, patch slots) of the image.
    """
    v = config.vision
    side = math.isqrt(image_tokens - 1) + 1 if image_tokens > 0 else 0
    windows = math.ceil(side / v.window_merged) ** 2
    return side * side, windows * v.window_patches


def abstract_prompts(
    config: Qwen25VLConfig, mesh: Mesh, prompts: int, length: int, per_prompt: PromptVision
) -> ModelInputs:
    """A left-padded prompt batch as the data pipeline feeds it, prompt rows over the batch axes.

    Args:
      config: the model config.
      mesh: the device mesh.
      prompts: prompts in the batch.
      length: the padded prompt length (a prompt bucket).
      per_prompt: the vision inputs of one prompt.

    Returns:
      Abstract `ModelInputs` (`ShapeDtypeStruct`s with shardings); no vision inputs when the prompts have no
      image or video.
    """
    vision, slots = None, None
    if per_prompt.rows > 0:
        rows, patch_slots = prompts * per_prompt.rows, per_prompt.patch_slots
        vision = VisionInputs(
            patches=_array(mesh, (rows, patch_slots, config.vision.patch_dim), jnp.float32, 0),
            patch_pos=_array(mesh, (rows, patch_slots, 2), jnp.int32, 0),
            patch_valid=_array(mesh, (rows, patch_slots), jnp.bool_, 0),
        )
        slots = _array(mesh, (prompts, length), jnp.int32, 0)
    return ModelInputs(
        input_ids=_array(mesh, (prompts, length), jnp.int32, 0),
        attention_mask=_array(mesh, (prompts, length), jnp.int32, 0),
        position_ids=_array(mesh, (3, prompts, length), jnp.int32, 1),
        rope_deltas=_array(mesh, (prompts,), jnp.int32, 0),
        vision=vision,
        vision_token_slot=slots,
    )


def _compiler_options() -> dict[str, str]:
    """On CPU, XLA's memory-optimized scheduler (see the module docstring)."""
    if jax.default_backend() != "cpu":
        return {}
    return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _compile(name: str, shape: str, lower: Callable[[], Any], resident, mesh: Mesh, log) -> ProgramMemory:
    """Lowers (under `mesh`, as the trainer traces its step) and compiles one program.

    Args:
      name: the program's name.
      shape: what it is compiled for, in words.
      lower: lowers the program.
      resident: the abstract arrays on the device while it runs.
      mesh: the device mesh.
      log: prints progress.

    Returns:
      The `ProgramMemory`; a failure is recorded (the first line of its message), not raised.
    """
    log(f"compiling {name} ({shape}) ...")
    resident = bytes_per_device(resident)
    start = time.perf_counter()
    try:
        with jax.set_mesh(mesh):
            lowered = lower()
        stats = lowered.compile(compiler_options=_compiler_options()).memory_analysis()
    except Exception as err:  # noqa: BLE001 - any lowering/compile failure is a finding to report
        message = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        log(f"  {name} did not compile: {type(err).__name__}: {message}")
        elapsed = time.perf_counter() - start
        return ProgramMemory(name, shape, resident, error=f"{type(err).__name__}: {message}", compile_s=elapsed)
    result = ProgramMemory(name, shape, resident, stats=stats, compile_s=time.perf_counter() - start)
    log(f"  {name}: phase peak {format_gib(result.phase_peak)} GiB per device (compile {result.compile_s:.0f} s)")
    return result


def plan_memory(
    settings: RunSettings,
    config: Qwen25VLConfig,
    *,
    model_name: str,
    data: DataShapes = DataShapes(),
    programs: tuple[str, ...] = PROGRAMS,
    log: Callable[[str], None] = print,
) -> MemoryPlan:
    """Compiles the step's programs for `settings` (a model of `config`) on abstract inputs.

    The mesh is `settings.mesh` over this process's devices (simulated CPU devices give the CPU compiler's
    figures for the same programs and shardings).

    Args:
      settings: the planned run's settings.
      config: the model config (only its dimensions are used; no weight is read).
      model_name: the model's name, for the log and the report.
      data: the data shapes assumed.
      programs: the programs to compile, some of `PROGRAMS` (the critic's only with a critic).
      log: prints progress.

    Returns:
      The `MemoryPlan`.

    Raises:
      ValueError: `programs` names an unknown program, a video is too short, or the images and videos do not
        fit in the largest prompt bucket.
    """
    unknown = set(programs) - set(PROGRAMS)
    if unknown:
        raise ValueError(f"programs: unknown {sorted(unknown)}; expected some of {PROGRAMS}")
    per_prompt = PromptVision.of(config, data, settings.data.video)
    length = settings.data.buckets.max_prompt_length
    if per_prompt.tokens >= length:
        raise ValueError(
            f"{data.images_per_prompt} image(s) of {data.image_tokens} tokens and {data.videos_per_prompt} "
            f"video(s) of {data.video_seconds} s at {data.video_size} ({per_prompt.tokens} tokens in all) do not "
            f"fit in the largest prompt bucket {length} (data.prompt_buckets)"
        )
    m, rollout, train = settings.model, settings.rollout, settings.train
    mesh = build_mesh(settings.mesh)
    model = abstract_model(
        config,
        dtype=m.dtype,
        param_dtype=m.base_dtype,
        attention_impl=m.attention_impl,
        remat=m.remat,
        lora=m.lora,
    )
    state = nnx.state(model, nnx.Param)
    param_sharding_tree = nnx.to_pure_dict(param_shardings(state, mesh, settings.mesh.rules))
    params = _with_shardings(nnx.to_pure_dict(state), param_sharding_tree)
    graphdef = nnx.graphdef(model)
    optimizer = make_optimizer(settings.optimizer, params)
    opt_abstract = jax.eval_shape(optimizer.init, params)
    opt_sharding_tree = mirror_shardings(opt_abstract, params, param_sharding_tree, mesh)
    opt_state = _with_shardings(opt_abstract, opt_sharding_tree)
    critic, critic_state = None, ()
    if settings.critic is not None:
        critic = CriticModel.of(settings, config, mesh)
        critic_opt = _with_shardings(
            jax.eval_shape(critic.optimizer.init, critic.abstract_params), critic.opt_shardings
        )
        critic_state = (critic.abstract_params, critic_opt)
    else:
        programs = tuple(p for p in programs if p not in CRITIC_PROGRAMS)
    step = build_step_programs(
        settings,
        graphdef,
        mesh,
        optimizer,
        SpecialTokens.of(config),
        param_shardings=param_sharding_tree,
        opt_shardings=opt_sharding_tree,
        critic=critic,
    )
    t = config.text
    # the rollout batch the passes after sampling read: CPPO's fill merges rl.fill_batches prompt batches into it, each
    # sampled on its own (a sampler call holds at most one batch)
    prompts_total = settings.data.rollout_batch_prompts * settings.rl.fill_batches
    rows_total = prompts_total * rollout.n
    sampler_prompts = rollout.prompts_per_sampler_call or settings.data.rollout_batch_prompts
    _, response_capacity = suffix_layout(rollout.max_new_tokens, step.sampler.decode_block)
    log(
        f"{model_name}: {count(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))} parameters; mesh "
        f"{dict(mesh.shape)} on {mesh.devices.size} {jax.devices()[0].platform} devices"
    )

    prompts = abstract_prompts(config, mesh, prompts_total, length, per_prompt)
    response = (rows_total, rollout.max_new_tokens)
    rollouts = Rollouts(
        prompts=prompts,
        tokens=_array(mesh, response, jnp.int32, 0),
        mask=_array(mesh, response, jnp.int32, 0),
        sampler_logprobs=_array(mesh, response, jnp.float32, 0),
    )

    def cache_array(rows: int, positions: int) -> jax.ShapeDtypeStruct:
        shape = (rows, positions, t.num_key_value_heads, t.head_dim)
        spec = _fitting_spec(mesh, shape, PartitionSpec(BATCH_AXES, None, "tensor"))
        return jax.ShapeDtypeStruct(shape, m.dtype, sharding=NamedSharding(mesh, spec))

    # one sampler call's KV: each prompt's keys/values once (the prefill's output, the decode's input) and each
    # row's response keys/values (allocated inside the decode program)
    caches = [
        LayerKVCache(
            k=cache_array(sampler_prompts, length),
            v=cache_array(sampler_prompts, length),
            end=_array(mesh, (), jnp.int32),
        )
        for _ in range(t.num_hidden_layers)
    ]
    response_caches = [
        cache_array(sampler_prompts * rollout.n, response_capacity) for _ in range(2 * t.num_hidden_layers)
    ]
    results: list[ProgramMemory] = []
    features = None
    if prompts.vision is not None:
        rows, slots = prompts.vision.patch_valid.shape
        features = _array(mesh, (rows * slots // config.vision.merge_unit, t.hidden_size), m.dtype, 0)
        if "image_features" in programs:
            results.append(
                _compile(
                    "image_features",
                    f"{rows} vision rows of {slots} patch slots",
                    lambda: step.image_features.lower(params, prompts.vision),
                    (params, opt_state, critic_state, prompts),
                    mesh,
                    log,
                )
            )
    # one sampler call's prompts: the text fields of its rows; the image features are the whole batch's
    sampler_inputs = dataclasses.replace(
        abstract_prompts(config, mesh, sampler_prompts, length, per_prompt), vision=None
    )
    sampler_shape = (
        f"{sampler_prompts} prompts x n={rollout.n}, cache {length} prompt + {response_capacity} response positions"
    )
    sampler_resident = (params, opt_state, critic_state, prompts, features)
    if "sampler_prefill" in programs:
        results.append(
            _compile(
                "sampler_prefill",
                sampler_shape,
                lambda: step.sampler.prefill_program.lower(params, sampler_inputs, features),
                (sampler_resident, sampler_inputs),
                mesh,
                log,
            )
        )
    if "sampler_decode" in programs:
        logits = _array(mesh, (sampler_prompts, t.vocab_size), jnp.float32, 0)
        prompt_ids = _array(mesh, (sampler_prompts,), jnp.int32, 0)
        key = jax.eval_shape(lambda: jax.random.key(0))
        key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=NamedSharding(mesh, PartitionSpec()))
        results.append(
            _compile(
                "sampler_decode",
                f"{sampler_shape}, {rollout.max_new_tokens} new tokens",
                lambda: step.sampler.decode_program.lower(
                    params,
                    caches,
                    logits,
                    sampler_inputs.attention_mask,
                    sampler_inputs.rope_deltas,
                    prompt_ids,
                    key,
                    n=rollout.n,
                    max_new=rollout.max_new_tokens,
                ),
                (sampler_resident, caches, logits, prompt_ids, key),
                mesh,
                log,
            )
        )
    critic_features = features if settings.critic is not None and settings.critic.share_image_features else None
    if not settings.optimizer.freeze_vision:
        features = None  # a trained vision tower runs inside the log-prob and train programs
    mini_rows = settings.data.rollout_batch_prompts * settings.rl.update_rows_per_prompt // train.num_minibatches
    update_rows = [_array(mesh, (mini_rows,), jnp.int32) for _ in range(train.num_minibatches)]
    # the passes' largest form is the padded one: a packing plan has fewer rows than its micro-batch has sequences
    # (the trainer runs a pass padded when packing would not save a row)
    logprob_plan = update_plan = None
    if "old_logprobs" in programs:
        results.append(
            _compile(
                "old_logprobs",
                f"{mini_rows * train.num_minibatches} update rows of {rows_total}, "
                f"{train.logprob_micro_batch_rows} per pass",
                lambda: step.logprobs.lower(params, rollouts, features, update_rows, logprob_plan),
                (params, opt_state, critic_state, rollouts, features, update_rows, logprob_plan),
                mesh,
                log,
            )
        )
    targets = UpdateTargets(
        advantages=_array(mesh, response, jnp.float32, 0),
        old_logprobs=_array(mesh, response, jnp.float32, 0),
        ref_logprobs=_array(mesh, response, jnp.float32, 0) if settings.loss.kl_coef > 0 else None,
        image_features=features,
    )
    critic_targets = None
    if critic is not None:
        critic_targets = CriticTargets(
            old_values=_array(mesh, response, jnp.float32, 0),
            returns=_array(mesh, response, jnp.float32, 0),
            image_features=critic_features,
        )
    rows, valid = _array(mesh, (mini_rows,), jnp.int32), _array(mesh, (mini_rows,), jnp.bool_)
    mini_shape = f"{mini_rows} rows in {train.micro_batches} micro-batches of {mini_rows // train.micro_batches}"
    if "train_step" in programs:
        results.append(
            _compile(
                "train_step",
                mini_shape,
                lambda: step.update.lower(params, opt_state, rollouts, targets, rows, valid, update_plan),
                (params, opt_state, critic_state, rollouts, targets, critic_targets, rows, valid, update_plan),
                mesh,
                log,
            )
        )
    if "critic_values" in programs:
        results.append(
            _compile(
                "critic_values",
                f"{rows_total} rows, {train.value_micro_batch_rows} per pass",
                lambda: step.values.lower(critic.abstract_params, rollouts, critic_features),
                (params, opt_state, critic_state, rollouts, critic_features),
                mesh,
                log,
            )
        )
    if "critic_step" in programs:
        results.append(
            _compile(
                "critic_step",
                mini_shape,
                lambda: step.critic_update.lower(*critic_state, rollouts, critic_targets, rows, valid, update_plan),
                (params, opt_state, critic_state, rollouts, targets, critic_targets, rows, valid, update_plan),
                mesh,
                log,
            )
        )
    video_grid = data.video_grid(config, settings.data.video) if data.videos_per_prompt else None
    return MemoryPlan(
        settings=settings,
        data=data,
        model_name=model_name,
        num_params=sum(math.prod(p.shape) for p in jax.tree.leaves(params)),
        devices=f"{mesh.devices.size} x {jax.devices()[0].platform}",
        params=bytes_per_device(params),
        opt_state=bytes_per_device(opt_state),
        kv_cache=bytes_per_device((caches, response_caches)),
        rollouts=bytes_per_device((rollouts, targets, critic_targets)),
        programs=results,
        critic_params=bytes_per_device(critic_state[:1]),
        critic_opt_state=bytes_per_device(critic_state[1:]),
        video_grid=video_grid,
        video_tokens=math.prod(video_grid) // config.vision.merge_unit if video_grid else 0,
    )


def format_gib(x: int | None) -> str:
    """Bytes as GiB: two decimals, or two significant digits below 0.01 GiB (tiny models)."""
    if x is None:
        return "-"
    return f"{x / GiB:.2f}" if x >= 0.01 * GiB or x == 0 else f"{x / GiB:.2g}"


def count(n: int) -> str:
    """A parameter count as "3.75 B" or "1.12 M"."""
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _video_note(plan: "MemoryPlan") -> str:
    data = plan.data
    if plan.video_grid is None:
        return ""
    t, h, w = plan.video_grid
    return (
        f" and {data.videos_per_prompt} video(s) of {data.video_seconds:g} s at {data.video_size[0]}x"
        f"{data.video_size[1]} ({t} temporal patches of {h}x{w} patches, {plan.video_tokens} tokens)"
    )


def format_plan(plan: MemoryPlan, device_memory_gib: float = 80.0) -> str:
    """The plan as markdown: what it is of, the resident figures, one row per program, the fits line.

    Args:
      plan: the plan.
      device_memory_gib: the device memory the figures are checked against.
    """
    s = plan.settings
    m, rollout = s.model, s.rollout
    budget = device_memory_gib * GiB
    mini = s.data.rollout_batch_prompts // s.train.num_minibatches
    micro = s.data.rollout_batch_prompts * s.rl.update_rows_per_prompt // s.train.num_minibatches
    micro //= s.train.micro_batches
    lines = [
        f"{plan.model_name}, {count(plan.num_params)} parameters; mesh (data, fsdp, tensor) = {s.mesh_shape} on "
        f"{plan.devices}; compute {jnp.dtype(m.dtype).name}, parameters {jnp.dtype(m.base_dtype).name}"
        f"{_lora_note(m.lora)}, remat "
        f"{m.remat}, attention {m.attention_impl}, vision {'frozen' if s.optimizer.freeze_vision else 'trained'}, "
        f"algorithm {s.rl.algorithm} (selector {s.rl.selection.selection}"
        f"{', a critic' if s.critic is not None else ''}).",
        f"Batch: {s.data.rollout_batch_prompts} prompts x n={rollout.n}"
        f"{f' x {s.rl.fill_batches} prompt batches (CPPO fill)' if s.rl.fill_batches > 1 else ''}, prompt "
        f"{s.data.buckets.max_prompt_length} + "
        f"response {rollout.max_new_tokens} tokens, {plan.data.images_per_prompt} image(s) of "
        f"{plan.data.image_tokens} tokens{_video_note(plan)} per prompt, mini-batch {mini} prompts, micro-batch "
        f"{micro} rows.",
        "",
        "| per device | GiB |",
        "|---|---|",
        f"| parameters | {format_gib(plan.params)} |",
        f"| optimizer state (AdamW moments of trained parameters) | {format_gib(plan.opt_state)} |",
        f"| KV cache (sampler) | {format_gib(plan.kv_cache)} |",
        f"| rollout batch + targets (log-prob and train programs) | {format_gib(plan.rollouts)} |",
        *(
            [
                f"| critic parameters | {format_gib(plan.critic_params)} |",
                f"| critic optimizer state | {format_gib(plan.critic_opt_state)} |",
            ]
            if plan.critic_params
            else []
        ),
        "",
        "| program | shape | arguments | outputs | aliased | temp | code | program peak | resident | phase peak | "
        f"fits {device_memory_gib:g} GiB | compile |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in plan.programs:
        if p.stats is None:
            lines.append(
                f"| {p.name} | {p.shape} | did not compile: {p.error} | | | | | | | | no | {p.compile_s:.0f} s |"
            )
            continue
        st = p.stats
        fits = "yes" if p.phase_peak <= budget else "NO"
        lines.append(
            f"| {p.name} | {p.shape} | {format_gib(st.argument_size_in_bytes)} "
            f"| {format_gib(st.output_size_in_bytes)} | "
            f"{format_gib(st.alias_size_in_bytes)} | {format_gib(st.temp_size_in_bytes)} | "
            f"{format_gib(st.generated_code_size_in_bytes)} | {format_gib(p.peak)} | {format_gib(p.resident)} | "
            f"{format_gib(p.phase_peak)} | {fits} | {p.compile_s:.0f} s |"
        )
    peaks = [p.phase_peak for p in plan.programs if p.phase_peak is not None]
    failed = [p.name for p in plan.programs if p.stats is None]
    if peaks:
        verdict = "fits" if max(peaks) <= budget and not failed else "does NOT fit"
        note = f" ({', '.join(failed)} did not compile)" if failed else ""
        lines += [
            "",
            f"Step peak per device: {format_gib(max(peaks))} GiB of {device_memory_gib:g} GiB: {verdict}{note}.",
        ]
    return "\n".join(lines)


def _lora_note(lora) -> str:
    """ ", LoRA rank r (alpha a) on q_proj, ... (float32 adapters only trained)" under LoRA, else ""."""
    if lora is None:
        return ""
    return (
        f" with LoRA rank {lora.rank} (alpha {lora.alpha:g}) on {', '.join(lora.targets)} "
        "(float32 adapters, the only trained parameters)"
    )
