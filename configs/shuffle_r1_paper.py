"""Shuffle-R1's paper runs (spec: shuffle_r1.md): Qwen2.5-VL-3B or -7B-Instruct on Geometry3K or MMRL30k (and
the 32B and 72B sizes, planned, not in the paper), with the paper's hyperparameters (`base_config`), bf16
compute, the official code's prompt layout, reward grader (mathruler: `pip install -e ".[paper]"`), loss (no dual
clip, the mean of micro-batch token means), order of the ABS draws over optimizer steps and validation top-p,
20 epochs.

    huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct --local-dir models/Qwen2.5-VL-7B-Instruct
    huggingface-cli download hiyouga/geometry3k --repo-type dataset --local-dir data/geometry3k
    python -m shuffle_r1_jax.train --config configs/shuffle_r1_paper.py:model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/geo3k_7b

Arguments (after the file name, comma-separated key=value):
  model      3b | 7b | 32b | 72b (default 3b). model.checkpoint defaults to the hub id, which the trainer cannot
             load: give a local directory. The memory planner reads the dimensions from the hub id.
  dataset    geo3k | mmrl30k (default geo3k): data.train / data.val default to data/<name>@train / @test (the
             layout of the download above) and train.total_steps to 20 epochs of 512 prompts.
  algorithm  any rl.algorithm (default shuffle_r1). grpo, dapo and cppo sample n = 8 (the paper compares at the
             same update rollout size: Shuffle-R1 samples 16 and keeps half; cppo's fill generates two prompt
             batches of 8 and keeps 4 of each group, `rl.cppo_fill`).

Memory: each model size gets the mesh and memory settings the compile-time memory plan found for its machine
(`MEMORY` below; `python scripts/memory_plan.py --config configs/shuffle_r1_paper.py:model=3b`; the figures, the
commands and what is tight are in BUILD_NOTES.md "Memory plan"). All use remat "full":
  3b, 7b  8 x 80 GiB GPUs, FSDP over all devices, chunked attention, 32 prompts per sampler call, 8-row
          micro-batches (one row per device; 7B's train step is tight on the CPU compiler's figures).
  32b     32 x 80 GiB GPUs (mesh preset gpu_32: 4 hosts, FSDP 4 x tensor 8), 4-row micro-batches (one row per
          FSDP shard), 32 prompts per sampler call, fused attention ("cudnn"): with "chunked" the train step's
          stored score blocks put it over 80 GiB.
  72b     64 x 80 GiB GPUs (mesh preset gpu_64: 8 hosts, FSDP 8 x tensor 8), 8-row micro-batches, 32 prompts per
          sampler call, "cudnn"; its train step is 33 GiB over 80 GiB on the CPU compiler's figures even so, and
          fits 141 GiB H200s (BUILD_NOTES).
On other machines override the mesh (`--config.mesh.preset=...`) and keep `train.micro_batch_rows` a multiple of
data x fsdp. The CPU memory planner cannot compile "cudnn": plan 32b and 72b with
`--config.model.attention_impl=splash`, which stores no score blocks either.
"""

from typing import NamedTuple

from shuffle_r1_jax.train.defaults import base_config, parse_config_arg

MODELS = {
    "3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "32b": "Qwen/Qwen2.5-VL-32B-Instruct",
    "72b": "Qwen/Qwen2.5-VL-72B-Instruct",
}
# training examples: Geometry3K's train split; MMRL30k (2.1k Geometry3K + 27k MM-Eureka problems, rounded)
DATASETS = {"geo3k": ("data/geometry3k", 2101), "mmrl30k": ("data/MMRL30k", 30000)}
EPOCHS = 20


class MemorySettings(NamedTuple):
    """What the memory plan chose for one model size on its machine (module docstring).

    Attributes:
      mesh: `mesh.preset`, or "" for `mesh.data`, `mesh.fsdp`, `mesh.tensor` = 1, -1 (all devices), 1.
      prompts_per_sampler_call: `rollout.prompts_per_sampler_call`.
      micro_batch_rows: `train.micro_batch_rows`, one row per batch shard (data x fsdp) of the mesh.
      attention_impl: `model.attention_impl`.
      remat: `model.remat`.
    """

    mesh: str
    prompts_per_sampler_call: int
    micro_batch_rows: int
    attention_impl: str = "chunked"
    remat: str = "full"


MEMORY = {
    "3b": MemorySettings(mesh="", prompts_per_sampler_call=32, micro_batch_rows=8),
    "7b": MemorySettings(mesh="", prompts_per_sampler_call=32, micro_batch_rows=8),
    "32b": MemorySettings(mesh="gpu_32", prompts_per_sampler_call=32, micro_batch_rows=4, attention_impl="cudnn"),
    "72b": MemorySettings(mesh="gpu_64", prompts_per_sampler_call=32, micro_batch_rows=8, attention_impl="cudnn"),
}


def get_config(arg: str | None = None):
    args = parse_config_arg(arg, model="3b", dataset="geo3k", algorithm="shuffle_r1")
    if args.model not in MODELS:
        raise ValueError(f"config argument model={args.model!r}; expected one of {sorted(MODELS)}")
    if args.dataset not in DATASETS:
        raise ValueError(f"config argument dataset={args.dataset!r}; expected one of {sorted(DATASETS)}")
    c = base_config()
    c.model.checkpoint = MODELS[args.model]
    c.model.dtype = "bfloat16"
    path, examples = DATASETS[args.dataset]
    c.data.train, c.data.val = f"{path}@train", f"{path}@test"
    # the official code's choices where ours differ (BUILD_NOTES "Paper fidelity")
    c.data.prompt_format = "math_official"  # "<instruction> <image> <problem>" in the user turn
    c.reward.name = "math_official"  # mathruler, the last box; needs pip install -e ".[paper]"
    c.data.overlong_prompts = "truncate_right"
    c.loss.dual_clip = 0.0
    c.loss.agg_mode = "micro-token-mean"  # token means of 4-row device micro-batches, averaged
    c.loss.agg_group_rows = 4
    c.rl.update_chunks = 8  # its 8 GPUs: optimizer step j trains on piece j of every device's chunk
    c.rl.abs_single_round = "all_pairs"
    c.eval.top_p = 0.99
    c.rl.algorithm = args.algorithm
    c.rollout.n = 8 if args.algorithm in ("grpo", "dapo", "cppo") else 16
    c.train.total_steps = EPOCHS * (examples // c.data.rollout_batch_prompts)
    memory = MEMORY[args.model]
    c.mesh.preset = memory.mesh
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.model.attention_impl = memory.attention_impl
    c.model.remat = memory.remat
    c.rollout.prompts_per_sampler_call = memory.prompts_per_sampler_call
    c.train.micro_batch_rows = memory.micro_batch_rows
    return c
