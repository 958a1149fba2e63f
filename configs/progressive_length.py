"""Vision-R1's progressive thinking suppression training (PTST): the response-length limit starts short and grows in
equal parts of the run, doubling each time up to rollout.max_new_tokens (with the default start of a quarter:
a quarter, a half, then all of it), so the policy learns to reason briefly before it is allowed to reason long.
Each length compiles the step once (`rollout.length_schedule`).

    python -m shuffle_r1_jax.train --config configs/progressive_length.py                   # the demo (CPU)
    python -m shuffle_r1_jax.train --config configs/progressive_length.py:base=paper,model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/geo3k_7b_ptst

Arguments: base (demo | paper; default demo), start (the first limit as a fraction of rollout.max_new_tokens,
default 0.25; the demo's short answers take 0.5), with base=paper the paper config's model, dataset, algorithm.
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, args = recipe_base(arg, Path(__file__).parent, start=-1.0)
    start = args.start if args.start > 0 else (0.5 if args.base == "demo" else 0.25)
    if not 0 < start <= 1:
        raise ValueError(f"config argument start={start}: expected a fraction in (0, 1]")
    longest = c.rollout.max_new_tokens
    lengths = [max(1, int(longest * start))]
    while lengths[-1] < longest:
        lengths.append(min(longest, lengths[-1] * 2))
    steps = c.train.total_steps
    c.rollout.length_schedule = tuple((i * steps // len(lengths), length) for i, length in enumerate(lengths))
    return c
