"""Every config key with its default and meaning (`base_config`), and the demo config (`demo_config`).

Defaults are the Shuffle-R1 paper's settings where it has one (spec: shuffle_r1.md). Experiment configs in
`configs/` start from `base_config()`; the entrypoint's default is `demo_config()`.
"""

from ml_collections import ConfigDict


def base_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0  # seeds sampling, ABS draws and data order; folded with the step, so a resumed run continues

    c.model = ConfigDict()
    c.model.checkpoint = ""  # an HF-format Qwen2.5-VL directory (config.json, safetensors, tokenizer)
    c.model.dtype = "float32"  # compute dtype of sampling and training ("float32" | "bfloat16")
    c.model.param_dtype = "float32"  # storage dtype of the trained parameters and AdamW moments (fp32 master weights)
    c.model.attention_impl = "xla"  # "xla" | "chunked" (linear memory) | "cudnn" (fused, NVIDIA GPUs)
    c.model.remat = "none"  # gradient checkpointing per decoder layer: "none" | "full" | "dots"

    c.demo = ConfigDict()
    c.demo.enabled = False  # build the tiny model and synthetic data (configs/demo.py)
    c.demo.cache_dir = ""  # where the demo's checkpoint, data and warm-up are written once
    c.demo.preset = "demo"  # tiny model size: "demo" (1.1M parameters) or "test" (smaller, for tests)
    c.demo.seed = 0  # seeds the demo's assets (model init, dataset, warm-up), apart from `seed`: runs share them
    c.demo.num_train = 4000  # synthetic training samples
    c.demo.num_val = 96  # synthetic validation samples
    c.demo.image_size = 56  # synthetic image side in pixels
    c.demo.difficulty_weights = (0.4, 0.3, 0.3)  # shares of easy (color), medium (larger, position), hard (count)
    c.demo.warmup_steps = 150  # supervised warm-up steps on reference answers (the starting policy)
    c.demo.warmup_batch = 32  # prompts per warm-up step
    c.demo.warmup_lr = 3e-3  # warm-up learning rate
    c.demo.warmup_correct_fraction = 0.5  # warm-up targets give the right answer this often (else a random one)

    c.data = ConfigDict()
    c.data.train = ""  # dataset spec: path[@split] of parquet/jsonl in the EasyR1 layout (comma-separated list ok)
    c.data.val = ""  # validation dataset spec ("" = no validation)
    c.data.prompt_column = "problem"
    c.data.answer_column = "answer"
    c.data.images_column = "images"
    c.data.image_dir = ""  # base directory for image paths stored as relative paths
    c.data.prompt_format = "math"  # "math" | "r1v" | "none" | a template file | an inline "{{ content }}" template
    c.data.rollout_batch_prompts = 512  # prompts per rollout batch (over all processes)
    c.data.max_prompt_length = 2048  # tokens after image expansion; longer prompts are counted and skipped
    c.data.prompt_buckets = (512, 1024, 2048)  # left-padded prompt lengths (bounded compilations)
    c.data.min_pixels = 262144  # image resize bounds (Shuffle-R1's)
    c.data.max_pixels = 4194304
    c.data.on_bad_record = "skip"  # "skip" (count) | "error" (stop)

    c.reward = ConfigDict()
    c.reward.name = "math"  # "math" | "r1v" | "synthetic" | "module:function"
    c.reward.timeout_s = 10.0  # per-sample limit; a reward over it scores 0 and is counted
    c.reward.num_workers = 4  # reward worker processes

    c.rollout = ConfigDict()
    c.rollout.n = 16  # samples per prompt (even for PTS)
    c.rollout.max_new_tokens = 2048
    c.rollout.temperature = 1.0
    c.rollout.top_p = 0.99
    c.rollout.top_k = 0  # 0 = off
    # prompts per sampler call (over all processes; 0 = the whole rollout batch in one call). The KV cache holds
    # one call's prompts x n rows: at the paper's batch a 3B model needs 32 on 8 x 80 GiB (scripts/memory_plan.py)
    c.rollout.prompts_per_sampler_call = 0

    c.rl = ConfigDict()
    c.rl.algorithm = "shuffle_r1"  # grpo | dr_grpo | dapo | rloo | reinforce_pp | reinforce_pp_baseline | cppo | pts_only | abs_only | shuffle_r1
    c.rl.keep_ratio = 0.5  # PTS alpha (pairs kept per prompt = n/2 * alpha)
    c.rl.pts_variant = "pairs"  # "pairs" | "max_side" | "min_side" | "random" (the paper's ablations)
    c.rl.pts_rerank = False  # re-rank pairs by |A1| + |A2| before keeping
    c.rl.abs_rounds = 8  # ABS replay rounds S
    c.rl.abs_weight = "sum"  # pair weight: "sum" | "max" | "mean" | "positive"
    c.rl.abs_power = 1.0  # P = W^p / sum W^p
    c.rl.cppo_prune = 0.5  # CPPO pruning ratio
    c.rl.dynamic_sampling_max_tries = 3  # DAPO: prompt batches generated at most to fill the batch with informative groups
    c.rl.dynamic_sampling_fallback = "fill"  # then: "fill" (with zero-advantage groups, counted) | "error"
    c.rl.old_logprobs = "recompute"  # "recompute" (a forward before the update) | "sampler" (the sampler's)

    c.loss = ConfigDict()
    c.loss.clip_low = 0.2
    c.loss.clip_high = 0.2  # DAPO's algorithm sets 0.28 unless given
    c.loss.dual_clip = 3.0  # 0 = off
    c.loss.ratio_level = "token"  # "token" (PPO) | "sequence" (GSPO)
    c.loss.agg_mode = "token-mean"  # "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum-norm"
    c.loss.kl_coef = 0.0  # KL to the reference policy (off in Shuffle-R1)
    c.loss.kl_kind = "k3"
    c.loss.logprob_chunk = 256  # response positions per vocabulary chunk

    c.optim = ConfigDict()
    c.optim.learning_rate = 1e-6
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"  # "constant" | "cosine"
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 1e-2
    c.optim.max_grad_norm = 1.0
    c.optim.freeze_vision = True

    c.train = ConfigDict()
    c.train.total_steps = 100  # rollout batches
    c.train.minibatch_prompts = 128  # prompts' worth of rows per optimizer step (4 steps per rollout batch at 512)
    c.train.micro_batch_rows = 64  # rows per gradient-accumulation micro-batch
    c.train.max_nonfinite_in_a_row = 5  # stop after this many skipped (non-finite) updates in a row

    c.eval = ConfigDict()
    c.eval.every = 5  # validation every k steps (0 = never), and at the end
    c.eval.before_training = True
    c.eval.n = 8  # samples per validation prompt
    c.eval.temperature = 0.5
    c.eval.max_prompts = 0  # 0 = the whole validation set
    c.eval.num_examples = 8  # sample generations written to eval_samples.jsonl per validation

    c.checkpoint = ConfigDict()
    c.checkpoint.every = 50  # steps between checkpoints (and at the end)
    c.checkpoint.keep_last = 3
    c.checkpoint.keep_best = True  # also keep the best validation accuracy
    c.checkpoint.export_hf = ""  # a directory: export the final policy there in the Hugging Face layout ("" = no)

    # The device mesh (data, fsdp, tensor): parameters and optimizer state are sharded by the logical-axis rules
    # (shuffle_r1_jax/parallel/sharding.py), rollout and update batches by rows over data x fsdp.
    c.mesh = ConfigDict()
    c.mesh.preset = ""  # "" = the sizes below | "single_gpu" | "gpu_8" | "tpu_v4_32" | "tpu_v5p_64" (see mesh_config.py)
    c.mesh.data = 1  # data-parallel replicas (-1 = the devices the other axes leave; at most one -1)
    c.mesh.fsdp = -1  # parameter/optimizer-state shards (fully sharded data parallel); -1: the rest
    c.mesh.tensor = 1  # tensor-parallel shards of heads, MLP and vocabulary (must divide one process's devices)
    c.mesh.num_devices = 0  # 0 = every device of every process; k = the first k devices (one process only)

    # Multi-host start-up (jax.distributed): shuffle_r1_jax/parallel/distributed.py.
    c.distributed = ConfigDict()
    c.distributed.initialize = "auto"  # "auto" (if the config, environment or a multi-host preset says so) | "always" | "never"
    c.distributed.coordinator_address = ""  # "host:port" of process 0 ("" = JAX_COORDINATOR_ADDRESS or cluster detection)
    c.distributed.num_processes = -1  # -1 = JAX_NUM_PROCESSES or cluster detection
    c.distributed.process_id = -1  # -1 = JAX_PROCESS_ID or cluster detection
    c.distributed.cpu_collectives = "gloo"  # cross-process collectives of the CPU backend ("gloo" | "mpi")
    c.distributed.initialization_timeout_s = 300  # seconds to wait for every process to connect
    return c


def paper_config(train_examples: int, epochs: int = 20) -> ConfigDict:
    """The paper's runs: `base_config()` (its hyperparameters) with bf16, the math prompt and reward,
    Shuffle-R1, and `epochs` passes over `train_examples` problems at 512 prompts per step; sampled 32 prompts
    per call, 8-row micro-batches, chunked attention and full remat, so that the 3B step fits 80 GiB devices."""
    c = base_config()
    c.model.dtype = "bfloat16"
    # memory: what fits Qwen2.5-VL-3B on 8 x 80 GiB by scripts/memory_plan.py (BUILD_NOTES, "Memory plan")
    c.model.attention_impl = "chunked"
    c.model.remat = "full"
    c.rollout.prompts_per_sampler_call = 32
    c.train.micro_batch_rows = 8
    c.data.prompt_format = "math"
    c.reward.name = "math"
    c.rl.algorithm = "shuffle_r1"
    c.train.total_steps = epochs * train_examples // c.data.rollout_batch_prompts
    return c


def demo_config() -> ConfigDict:
    """The demo: see configs/demo.py.

    Differences from the paper's settings, all for a 1.1M-parameter random model on 2 CPU cores: the task mix
    leans on the one task such a model can perceive (color; the others stay near chance and show advantage
    collapse), the vision tower trains (it starts random, unlike a pretrained one), and the learning rate is
    larger. The starting policy (supervised warm-up on half-right answers) knows the format and is partly right.
    """
    c = base_config()
    c.demo.enabled = True
    c.demo.cache_dir = "~/.cache/shuffle_r1_jax/demo-v1"
    c.demo.num_train = 4000
    c.demo.num_val = 96
    c.demo.image_size = 56
    c.demo.difficulty_weights = (0.6, 0.2, 0.2)
    c.demo.warmup_steps = 300
    c.demo.warmup_batch = 32
    c.demo.warmup_lr = 1e-3
    c.demo.warmup_correct_fraction = 0.5

    c.data.prompt_format = "none"
    c.data.rollout_batch_prompts = 16
    c.data.max_prompt_length = 64  # the demo's prompts are under 40 tokens (56 px images: 4 image tokens)
    c.data.prompt_buckets = (64,)
    c.data.min_pixels = 56 * 56  # the synthetic images are 56 px: 4x4 patches, 2x2 merged tokens
    c.data.max_pixels = 112 * 112
    c.reward.name = "synthetic"
    c.reward.num_workers = 1

    c.rollout.n = 8
    c.rollout.max_new_tokens = 48
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0

    c.rl.algorithm = "shuffle_r1"
    c.train.total_steps = 150
    c.train.minibatch_prompts = 4  # 4 optimizer steps per rollout batch, as in the paper
    c.train.micro_batch_rows = 64
    c.optim.learning_rate = 1e-4
    c.optim.weight_decay = 0.0
    c.optim.freeze_vision = False

    c.eval.every = 25
    c.eval.n = 4
    c.eval.max_prompts = 96
    c.checkpoint.every = 25
    return c


def get_config() -> ConfigDict:
    """The ml_collections entry point of this file: the entrypoint's default config, the demo."""
    return demo_config()
