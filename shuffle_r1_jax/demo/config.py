"""The demo's config (`configs/demo.py` and the entrypoint's default): a tiny Qwen2.5-VL-architecture model
learns the synthetic image task on CPU with Shuffle-R1.

    python -m shuffle_r1_jax.train
    python -m shuffle_r1_jax.train --config configs/demo.py --config.rl.algorithm=grpo --config.rollout.n=8

Its `setup` (`shuffle_r1_jax.demo.assets.build_assets`) writes, once per `demo` settings under `demo.cache_dir`,
a tiny random checkpoint in the Hugging Face layout, the synthetic dataset in the EasyR1 parquet layout and a
short supervised warm-up of the checkpoint (the starting policy, as a real run starts from an Instruct model),
and points model.checkpoint, data.train and data.val at them. Then the run is the same pipeline as a real one.

The task is the "largest_color" family ("What color is the largest shape?", four levels from one shape to three
shapes whose two largest differ by a third in area): graded, but all within what a 1.1M-parameter model can
perceive, so RL can raise every level (the older "shapes" family, `demo.task_family=shapes`, is nearly binary
for such a model: color is learnable, the rest stays at chance). Differences from the paper's settings, all for
a random model on 2 CPU cores: the vision tower trains (it starts random, unlike a pretrained one) and the
learning rate is larger. The starting policy (supervised warm-up on half-right answers) knows the format and is
partly right.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from shuffle_r1_jax.train.defaults import base_config

SETUP = "shuffle_r1_jax.demo.assets:build_assets"
REWARD = "shuffle_r1_jax.demo.reward:synthetic_reward"


def demo_config() -> ConfigDict:
    """`base_config()` with the demo's model, data, reward and a short run; adds the `demo` section."""
    c = base_config()
    c.setup = SETUP
    c.demo = ConfigDict()
    c.demo.cache_dir = (
        "~/.cache/shuffle_r1_jax/demo-v1"  # where the demo's checkpoint, data and warm-up are written once
    )
    c.demo.preset = "demo"  # tiny model size: "demo" (1.1M parameters) or "test" (smaller, for tests)
    c.demo.rope_theta = 1000000.0  # the tiny text model's M-RoPE base (Qwen2.5-VL's); `configs/grounding.py` sets 10
    c.demo.seed = 0  # seeds the demo's assets (model init, dataset, warm-up), apart from `seed`: runs share them
    c.demo.num_train = 4000  # synthetic training samples
    c.demo.num_val = 192  # synthetic validation samples
    c.demo.image_size = 56  # synthetic image side in pixels
    c.demo.task_family = "largest_color"  # synthetic task family (`shuffle_r1_jax.demo.synthetic.FAMILIES`)
    c.demo.difficulty_weights = (0.6, 0.2, 0.1, 0.1)  # shares of the family's levels (shapes: 3 levels)
    c.demo.warmup_steps = 300  # supervised warm-up steps on reference answers (the starting policy)
    c.demo.warmup_batch = 32  # prompts per warm-up step
    c.demo.warmup_lr = 1e-3  # warm-up learning rate
    c.demo.warmup_correct_fraction = 0.5  # warm-up targets give the right answer this often (else a random one)

    c.data.prompt_format = "none"
    c.data.rollout_batch_prompts = 16
    c.data.max_prompt_length = 64  # the demo's prompts are under 40 tokens (56 px images: 4 image tokens)
    c.data.prompt_buckets = (64,)
    c.data.min_pixels = 56 * 56  # the synthetic images are 56 px: 4x4 patches, 2x2 merged tokens
    c.data.max_pixels = 112 * 112
    c.reward.name = REWARD
    c.reward.num_workers = 1

    c.rollout.n = 16  # Shuffle-R1 as in the paper: 16 samples, PTS keeps half (rl.keep_ratio 0.5)
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
    c.critic.learning_rate = 5e-4  # the value-based algorithms' critic: 5x the policy's rate, as Open-Reasoner-Zero

    c.eval.every = 25
    c.eval.n = 4
    c.eval.max_prompts = 192
    c.checkpoint.every = 25
    return c


def get_config(arg: str | None = None) -> ConfigDict:
    """The ml_collections config-file entry point: the demo config, `demo_config()`.

    Args:
      arg: the config file's argument (`--config path/to/demo.py:arg`); the demo takes none.

    Returns:
      The demo config.

    Raises:
      ValueError: if `arg` is given.
    """
    if arg:
        raise ValueError(f"the demo config takes no arguments, got {arg!r}")
    return demo_config()
