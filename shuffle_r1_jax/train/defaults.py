"""Every config key with its default and meaning (`base_config`), the parser of config-file arguments and the
base of the recipe configs.

Defaults are the Shuffle-R1 paper's settings where it has one (spec: shuffle_r1.md). Config files in `configs/`
start from `base_config()`: `configs/shuffle_r1_paper.py` (the paper's runs, by arguments), `configs/demo.py`
(the entrypoint's default, `shuffle_r1_jax/demo/config.py`); the recipe configs start from one of those two
(`recipe_base`). `train.settings.resolve` checks every key and turns
the config into typed settings; nothing downstream reads these keys.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ml_collections import ConfigDict

from shuffle_r1_jax.parallel.sharding import DEFAULT_RULES


def base_config() -> ConfigDict:
    """Every key of a training run with its default (the paper's hyperparameters); no model or data set."""
    c = ConfigDict()
    c.seed = 0  # seeds sampling, ABS draws and data order; folded with the step, so a resumed run continues
    # "module:function" called before the run resolves, with the config; it builds inputs the run needs and
    # returns {dotted key: value} pointing the config at them (the demo builds its checkpoint and data). "" = none
    c.setup = ""
    # the run cut into stages, in order, each a mapping or a "key=value; key=value" string with its "steps" (they add
    # up to train.total_steps), an optional "name" and the data.*, reward.* and rollout.max_new_tokens values it
    # changes, e.g. ("name=text; steps=100; data.train=text.parquet; data.images_column=",
    # "name=images; steps=200; data.train=geo3k@train"); each stage reads its data with its own iterator.
    # () = one stage (shuffle_r1_jax/train/stages.py has the keys a stage may set)
    c.stages = ()

    c.model = ConfigDict()
    c.model.checkpoint = (
        ""  # an HF-format Qwen2.5-VL directory (config.json, safetensors, tokenizer) or a converted one
    )
    c.model.dtype = "float32"  # compute dtype of sampling and training ("float32" | "bfloat16")
    c.model.param_dtype = "float32"  # storage dtype of the trained parameters and AdamW moments (fp32 master weights)
    # attention kernel (models/qwen2_5_vl/attention.py): "xla" (the exact reference; memory grows with q x k) |
    # "chunked" (linear memory, any backend) | "cudnn" (fused, NVIDIA GPUs, bf16/fp16) | "tokamax" (tokamax's best
    # fused kernel for the backend, its XLA implementation elsewhere; pip install -e ".[kernels]") | "splash"
    # (fused, TPU: the vision tower and full-sequence decoder passes; "chunked" for the rest; interpreted off TPU)
    c.model.attention_impl = "xla"
    c.model.remat = "none"  # gradient checkpointing per decoder layer: "none" | "full" | "dots"

    # LoRA (models/qwen2_5_vl/lora.py): low-rank adapters on the decoder's projections are the only trained
    # parameters; the base weights stay frozen in lora.base_dtype and get no gradient or optimizer state; the
    # adapters are float32 (model.param_dtype does not apply to them). Needs optim.freeze_vision = True.
    c.lora = ConfigDict()
    c.lora.rank = 0  # the adapters' rank r; 0 = off (every parameter the optimizer trains is trained in full)
    c.lora.alpha = 16.0  # the adapter's output is scaled by alpha / rank
    c.lora.targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    c.lora.dropout = 0.0  # dropout on the adapters' inputs in the update step (off in sampling and log-probs)
    c.lora.base_dtype = "bfloat16"  # storage dtype of the frozen base weights under LoRA

    c.data = ConfigDict()
    c.data.train = ""  # dataset spec: path[@split] of parquet/jsonl in the EasyR1 layout (comma-separated list ok)
    c.data.val = ""  # validation dataset spec ("" = no validation)
    c.data.prompt_column = "problem"
    c.data.answer_column = "answer"
    c.data.images_column = "images"  # "" = text-only prompts (no images column read)
    c.data.image_dir = ""  # base directory for image paths stored as relative paths
    # dataset columns passed to the reward function as keyword arguments of the same name (e.g. ("key_steps",) for
    # StepGRPO); every reward may also take image_sizes (one (width, height, resized width, resized height) per image)
    # and problem (the problem text)
    c.data.reward_columns = ()
    # "math" | "r1v" | "step" (R1-VL's sections, for step_grpo) | "none" | "math_official" (the official layout) |
    # a template file | an inline template with "{{ content }}"
    c.data.prompt_format = "math"
    c.data.rollout_batch_prompts = 512  # prompts per rollout batch (over all processes)
    c.data.max_prompt_length = 2048  # tokens after image expansion
    # a longer prompt: "skip" (counted and skipped) | "truncate_right" (cut to max_prompt_length tokens, as the
    # official code's dataset does; still skipped when the cut would drop image tokens)
    c.data.overlong_prompts = "skip"
    c.data.prompt_buckets = (512, 1024, 2048)  # left-padded prompt lengths (bounded compilations)
    c.data.min_pixels = 262144  # image resize bounds (Shuffle-R1's)
    c.data.max_pixels = 4194304
    # videos (EasyR1 layout: a list of file paths, relative to data.image_dir or the data file, or of bytes records);
    # "" = no videos column read. Sampling and sizing follow qwen-vl-utils (BUILD_NOTES "Videos"): frames =
    # seconds x video_fps within [video_min_frames, video_max_frames], frame area within [video_min_pixels,
    # video_max_pixels] and at most video_total_pixels / frames x 2
    c.data.videos_column = ""
    c.data.video_fps = 2.0
    c.data.video_min_frames = 4
    c.data.video_max_frames = 768
    c.data.video_min_pixels = 128 * 28 * 28
    c.data.video_max_pixels = 768 * 28 * 28
    c.data.video_total_pixels = int(128000 * 28 * 28 * 0.9)
    # grain threads that read, decode and encode records ahead of the step (per process; video decoding and
    # preprocessing is the costly part, BUILD_NOTES "Videos"), and how many finished records they may hold ahead
    c.data.num_threads = 2
    c.data.prefetch = 16
    c.data.on_bad_record = "skip"  # "skip" (count) | "error" (stop)
    # stop with the counts by reason after this many unusable records in a row (0 = one pass over the data)
    c.data.max_consecutive_bad_records = 0
    # warn (each step with new skipped records) when over this fraction of the records read were skipped
    c.data.warn_bad_fraction = 0.05
    # the order of the training records (every mode tracks each record's pass rate, saved in checkpoints and logged
    # as data/pass_rate/tracked|solved|unsolved): "uniform" (shuffled epochs) | "curriculum" (each epoch easy to
    # hard by data.curriculum_column, as Kimi K1.5 and Curr-ReFT) | "prioritized" (Kimi K1.5: each batch drawn with
    # probability proportional to max(1 - pass rate, data.priority_floor); never-sampled records count as unsolved)
    c.data.sampling = "uniform"
    c.data.priority_floor = 0.1  # prioritized sampling's weight of a solved record, in (0, 1]
    # a record's pass rate is a moving average over its visits: the weight of the newest, in (0, 1] (1 = last only)
    c.data.pass_rate_update_weight = 0.5
    # the curriculum's numeric column (a difficulty level; or the offline pass-rate filter's "pass_rate" with
    # data.curriculum_order "descending"); records without a number come last
    c.data.curriculum_column = "difficulty"
    c.data.curriculum_order = "ascending"  # "ascending" (smallest first) | "descending" (largest first)

    c.reward = ConfigDict()
    # "math" | "math_official" | "r1v" | "step_grpo" | "grounding_iou" | "label_match" | "count_match" | "gui_action"
    # | "prm" (a process reward model, BUILD_NOTES "Rewards") | "package.module:function"
    c.reward.name = "math"
    c.reward.timeout_s = 10.0  # per-sample limit; a reward over it scores 0 and is counted
    c.reward.num_workers = 4  # reward worker processes
    # limit on one batch's scoring (0 = none): past it, the samples not yet scored score 0 as timeouts
    c.reward.batch_timeout_s = 300.0
    # stop the run (exit 2) after this many consecutive steps in which every sample's reward failed (0 = never)
    c.reward.max_failed_steps = 3
    # DAPO's soft overlong punishment, added to every response's score before the advantages (every algorithm):
    # 0 up to max_new_tokens - buffer tokens, then falling linearly to -factor at max_new_tokens (BUILD_NOTES
    # "DAPO overlong shaping"). The buffer in tokens, in [0, rollout.max_new_tokens] (0 = off; -1 = the
    # algorithm's: dapo a fifth of rollout.max_new_tokens, as the paper's 4096 of 20480, else 0)
    c.reward.overlong_buffer = -1
    c.reward.overlong_factor = 1.0  # the punishment's scale (>= 0)
    # keyword arguments of the reward function on every call (e.g. a grounding reward's iou_threshold), the same in
    # every stage; set them in a config file (flags override only keys it set). A key the function does not take
    # stops the run before the model loads
    c.reward.options = ConfigDict()

    c.rollout = ConfigDict()
    c.rollout.n = 16  # samples per prompt (even for PTS)
    c.rollout.max_new_tokens = 2048  # the longest response (the length memory is planned and validation runs at)
    # a response-length schedule (Vision-R1's progressive thinking suppression): ((first step, length), ...) from
    # that step on, responses stop at that length (<= rollout.max_new_tokens; before the first entry
    # rollout.max_new_tokens); each distinct length compiles the step once. () = no schedule
    c.rollout.length_schedule = ()
    c.rollout.temperature = 1.0
    c.rollout.top_p = 0.99
    c.rollout.top_k = 0  # 0 = off
    # prompts per sampler call (over all processes; 0 = the whole rollout batch in one call). The KV cache holds
    # one call's prompts x n rows, so the paper's batch needs a bounded call: configs/shuffle_r1_paper.py sets the
    # value the memory plan chose (scripts/memory_plan.py, BUILD_NOTES.md "Memory plan")
    c.rollout.prompts_per_sampler_call = 0
    # response keys per block of the sampler's decode attention (also the validation samplers'): a decode step
    # reads its response cache in ceil((t + 1) / block) blocks at step t, and the cache holds max_new_tokens
    # rounded up to whole blocks
    c.rollout.decode_block = 64
    # the most compaction stages of a decode loop (1 = none): stopped rows leave the loop in stages that halve a
    # prompt's sample slots and the prompt slots in turn; each stage is one more traced decode step to compile
    c.rollout.decode_stages = 6

    c.rl = ConfigDict()
    # grpo | dr_grpo | dapo | rloo | reinforce_pp | reinforce_pp_baseline | cppo | pts_only | abs_only | shuffle_r1
    # | opmd (Kimi K1.5's squared-error loss, loss.opmd_tau)
    # | ppo | vc_ppo | orz_ppo (value-based: a critic is trained beside the policy, the `critic` section)
    c.rl.algorithm = "shuffle_r1"
    # the update-batch selector instead of the algorithm's ("" = the algorithm's): "all" | "pts" | "pts_abs" |
    # "cppo"; e.g. ppo with "pts_abs" ranks rollouts by their mean GAE advantage (BUILD_NOTES "PPO")
    c.rl.selector = ""
    c.rl.keep_ratio = 0.5  # PTS alpha (pairs kept per prompt = n/2 * alpha)
    c.rl.pts_variant = "pairs"  # "pairs" | "max_side" | "min_side" | "random" (the paper's ablations)
    c.rl.pts_rerank = False  # re-rank pairs by |A1| + |A2| before keeping
    c.rl.abs_rounds = 8  # ABS replay rounds S
    c.rl.abs_weight = "sum"  # pair weight: "sum" | "max" | "mean" | "positive"
    c.rl.abs_power = 1.0  # P = W^p / sum W^p
    # how ABS draws pairs: "weighted" (the paper's) | "uniform" (ablation: unbiased shuffle of the pairs with a
    # non-zero advantage) | "static" (ablation: those pairs in descending weight order, repeated; no draw)
    c.rl.abs_sampling = "weighted"
    c.rl.abs_single_round = "draw"  # ABS at abs_rounds = 1: "draw" (weighted) | "all_pairs" (PTS order, official)
    # optimizer steps over the update batch: 0 = consecutive rows (whole ABS rounds per step); k = the official
    # layout, k device chunks each cut into the mini-batches (its 8 GPUs: step j sees piece j of every round)
    c.rl.update_chunks = 0
    c.rl.cppo_prune = 0.5  # CPPO pruning ratio
    # CPPO's dynamic completion allocation, wherever the "cppo" selector prunes (rl.algorithm = "cppo" or rl.selector):
    # m = ceil(n / k) prompt batches (the step's and the next m - 1 of the stream; k = int(n (1 - cppo_prune))) are
    # generated and merged into one rollout batch, so the kept m * k rows per prompt fill the update batch (all kept,
    # m * k >= n); False = one prompt batch, k rows per prompt
    c.rl.cppo_fill = True
    c.rl.dynamic_sampling_max_tries = (
        3  # DAPO: prompt batches generated at most to fill the batch with informative groups
    )
    c.rl.dynamic_sampling_fallback = "fill"  # then: "fill" (with zero-advantage groups, counted) | "error"
    # DAPO's overlong filtering: responses cut at rollout.max_new_tokens (finish reason "length") are masked out of
    # the policy loss (and its KL term); a critic still learns their values
    c.rl.mask_truncated = False
    # "recompute": a forward pass over the rows the update uses, before it (as the official code, after resampling)
    # | "sampler": the sampler's own log-probs
    c.rl.old_logprobs = "recompute"
    # GAE of the value-based algorithms (ppo, vc_ppo, orz_ppo); orz_ppo fixes all three at 1
    c.rl.gamma = 1.0  # discount
    c.rl.gae_lambda = -1.0  # lambda of the policy's advantages (-1 = the algorithm's: vc_ppo 0.95, else 1.0)
    c.rl.critic_lambda = -1.0  # lambda of the critic's targets (-1 = the algorithm's: vc_ppo 1.0, else gae_lambda)
    c.rl.whiten_advantages = True  # GAE advantages whitened over the rollout batch's valid tokens

    c.loss = ConfigDict()
    c.loss.clip_low = 0.2
    c.loss.clip_high = 0.2  # the dapo algorithm sets 0.28
    c.loss.dual_clip = 3.0  # 0 = off (the official loss has none; the paper config turns it off)
    c.loss.ratio_level = "token"  # "token" (PPO) | "sequence" (GSPO)
    # "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum-norm" (dr_grpo's) | "micro-token-mean" (the
    # official code's: each group of agg_group_rows consecutive update rows' token mean, averaged over the groups)
    c.loss.agg_mode = "token-mean"
    c.loss.agg_group_rows = 4  # the official runs' rows per device micro-batch
    c.loss.kl_coef = 0.0  # KL to the reference policy (off in Shuffle-R1)
    c.loss.kl_kind = "k3"  # "k1" | "k2" | "k3" | "abs"
    # OPMD's tau (the opmd algorithm: Kimi K1.5's squared error, (r - rbar - tau log(pi / pi_old))^2 per response);
    # the paper gives no value, 1.0 is ours; must be > 0
    c.loss.opmd_tau = 1.0
    c.loss.logprob_chunk = 256  # response positions per vocabulary chunk (capped at rollout.max_new_tokens)

    c.optim = ConfigDict()
    c.optim.learning_rate = 1e-6
    c.optim.warmup_steps = 0  # optimizer steps of linear warm-up from 0
    c.optim.schedule = "constant"  # "constant" | "cosine"
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 1e-2
    c.optim.max_grad_norm = 1.0  # global-norm clip (0 = off)
    c.optim.freeze_vision = True  # the vision tower is not trained (its features are computed once per step)

    # The critic of the value-based algorithms (ignored by the others): the policy's decoder with a value head.
    c.critic = ConfigDict()
    # "" = the policy's starting parameters | an HF-format directory (its value_head.safetensors when present,
    # e.g. a critic exported by scripts/export_to_hf.py --critic)
    c.critic.checkpoint = ""
    c.critic.learning_rate = 1e-5  # AdamW peak rate (the other AdamW settings and the schedule are optim's)
    c.critic.warmup_steps = 0  # critic optimizer steps of linear warm-up from 0
    c.critic.value_clip = 0.5  # clip of the new value predictions around the scored ones (0 = off)
    c.critic.value_coef = 1.0  # the value loss's coefficient
    # rollout batches at the start whose update trains the critic only (within train.total_steps; -1 = the
    # algorithm's: vc_ppo 10, else 0)
    c.critic.pretrain_steps = -1
    # the critic reads the policy's image features (frozen tower) and holds no vision tower of its own
    c.critic.share_image_features = True

    c.train = ConfigDict()
    c.train.total_steps = 100  # rollout batches
    c.train.minibatch_prompts = 128  # prompts' worth of rows per optimizer step (4 steps per rollout batch at 512)
    c.train.micro_batch_rows = 64  # rows per gradient-accumulation micro-batch (and per old-log-prob pass)
    # the log-prob and update passes lay several prompt + response sequences into each row of prompt bucket +
    # max_new_tokens positions (attention kept within each; exact), so they cost real tokens, not padding;
    # False = one padded row per sequence
    c.train.pack_sequences = True
    c.train.max_nonfinite_in_a_row = 5  # stop after this many steps in a row with a skipped (non-finite) update

    c.eval = ConfigDict()
    c.eval.every = 5  # validation every k steps and at the end (0 = never)
    c.eval.before_training = True
    c.eval.n = 8  # samples per validation prompt
    c.eval.temperature = 0.5
    c.eval.top_p = 1.0  # nucleus of the sampled validation (the official runs inherit the rollout's 0.99)
    c.eval.max_prompts = 0  # 0 = the whole validation set
    c.eval.num_examples = 8  # sample generations written to eval_samples.jsonl per validation
    # `python -m shuffle_r1_jax.evaluate` only: the k of its pass@k figures (unbiased, from the eval.n samples per
    # prompt), each >= 1; those above eval.n are left out
    c.eval.pass_k = (1, 2, 4, 8)

    c.checkpoint = ConfigDict()
    c.checkpoint.every = 50  # steps between checkpoints (and at the end)
    c.checkpoint.keep_last = 3
    c.checkpoint.keep_best = True  # also keep the best validation accuracy
    c.checkpoint.export_hf = ""  # a directory: export the final policy there in the Hugging Face layout ("" = no)
    # a damaged latest checkpoint on resume (an item missing, a file truncated): "fallback" (move it into
    # checkpoints/_damaged/, warn, resume from the newest intact one; stop when none is intact) | "refuse" (stop)
    c.checkpoint.on_damaged = "fallback"
    c.checkpoint.save_retries = 0  # retries of a failed save before the run stops (0 = stop; > 0: saves block)

    # The device mesh (data, fsdp, tensor): parameters and optimizer state are sharded by `rules`, rollout and
    # update batches by rows over data x fsdp.
    c.mesh = ConfigDict()
    c.mesh.preset = (
        ""  # "" = the sizes below | "single_gpu" | "gpu_8" | "gpu_32" | "gpu_64" | "tpu_v4_32" | "tpu_v5p_64" |
        # "tpu_v5p_128" (sizes and reasons: parallel/mesh_config.py)
    )
    c.mesh.data = 1  # data-parallel replicas (-1 = the devices the other axes leave; at most one -1)
    c.mesh.fsdp = -1  # parameter/optimizer-state shards (fully sharded data parallel); -1: the rest
    c.mesh.tensor = 1  # tensor-parallel shards of heads, MLP and vocabulary (must divide one process's devices)
    c.mesh.num_devices = 0  # 0 = every device of every process; k = the first k devices (one process only)
    # (logical parameter axis, mesh axis | (mesh axes) | None): where each named parameter dimension is sharded;
    # a dimension that does not divide over its axes is replicated
    c.mesh.rules = DEFAULT_RULES

    # Multi-host start-up (jax.distributed): shuffle_r1_jax/parallel/distributed.py.
    c.distributed = ConfigDict()
    c.distributed.initialize = (
        "auto"  # "auto" (if the config, environment or a multi-host preset says so) | "always" | "never"
    )
    c.distributed.coordinator_address = (
        ""  # "host:port" of process 0 ("" = JAX_COORDINATOR_ADDRESS or cluster detection)
    )
    c.distributed.num_processes = -1  # -1 = JAX_NUM_PROCESSES or cluster detection
    c.distributed.process_id = -1  # -1 = JAX_PROCESS_ID or cluster detection
    c.distributed.cpu_collectives = "gloo"  # cross-process collectives of the CPU backend ("gloo" | "mpi")
    c.distributed.initialization_timeout_s = 300  # seconds to wait for every process to connect
    return c


def parse_config_arg(arg: str | None, **defaults) -> ConfigDict:
    """The argument of a config file (`--config file.py:model=7b,dataset=geo3k`) as a ConfigDict over `defaults`.

    Args:
      arg: the text after the file name's colon, comma-separated `key=value` items (None or "" = none).
      **defaults: every accepted key with its default; a value takes the default's type (an int, float, bool
        (true / false / 1 / 0) or str).

    Returns:
      A ConfigDict of `defaults` with the given keys replaced.

    Raises:
      ValueError: an item is not `key=value`, names a key not in `defaults` (the message lists the known keys),
        or its value does not convert to the default's type.
    """
    args = ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise ValueError(f"config argument {item!r}: expected key=value with key one of {sorted(defaults)}")
        kind = type(defaults[key])
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config argument {key}={value!r}: expected true or false")
            args[key] = value.lower() in ("true", "1")
        else:
            try:
                args[key] = kind(value)
            except ValueError as err:
                raise ValueError(f"config argument {key}={value!r}: expected a {kind.__name__}") from err
    return args


def load_config_file(path: str | Path, arg: str | None = None) -> ConfigDict:
    """`get_config(arg)` of the config file at `path` (loaded by path, as `--config` loads it)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


PAPER_ARGS = {"model": "3b", "dataset": "geo3k", "algorithm": "shuffle_r1"}


def recipe_base(
    arg: str | None, configs_dir: str | Path, base: str = "demo", **recipe_args
) -> tuple[ConfigDict, ConfigDict]:
    """The config a recipe in `configs_dir` starts from, and the recipe's arguments.

    The argument (`--config configs/<recipe>.py:base=paper,model=7b,...`) takes `base` ("demo": `demo.py`, the tiny
    model on CPU; "paper": `shuffle_r1_paper.py`), the paper config's own arguments (`model`, `dataset`,
    `algorithm`, only with base=paper) and the recipe's (`recipe_args`, with their defaults; they may give the
    paper arguments other defaults).

    Raises:
      ValueError: an unknown argument or base, or paper arguments with base=demo; the message names it.
    """
    args = parse_config_arg(arg, base=base, **(PAPER_ARGS | recipe_args))
    if args.base not in ("demo", "paper"):
        raise ValueError(f"config argument base={args.base!r}; expected demo or paper")
    given = {item.partition("=")[0].strip() for item in filter(None, (arg or "").split(","))}
    paper_given = sorted(given & set(PAPER_ARGS))
    if args.base == "demo":
        if paper_given:
            raise ValueError(f"config arguments {paper_given} apply to base=paper only")
        return load_config_file(Path(configs_dir) / "demo.py"), args
    paper_arg = ",".join(f"{key}={args[key]}" for key in PAPER_ARGS)
    return load_config_file(Path(configs_dir) / "shuffle_r1_paper.py", paper_arg), args
