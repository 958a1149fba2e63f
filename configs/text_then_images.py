"""LMM-R1's two stages: rule-based RL on text-only reasoning problems first (its foundational reasoning
enhancement), then on image-text problems, each stage with its own data stream. The second stage's data is the
paper config's dataset; the first's a text-only set in the EasyR1 layout (problem, answer; no images column).

    python -m shuffle_r1_jax.train --config configs/text_then_images.py:model=3b,text=data/text_math@train \\
        --config.model.checkpoint=models/Qwen2.5-VL-3B-Instruct --workdir runs/geo3k_3b_text_first

Arguments: model, dataset, algorithm (the paper config's), text (the text-only dataset spec, default
data/text_math@train), text_share (the first stage's share of train.total_steps, default 0.5).
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, args = recipe_base(arg, Path(__file__).parent, base="paper", text="data/text_math@train", text_share=0.5)
    if not 0 < args.text_share < 1:
        raise ValueError(f"config argument text_share={args.text_share}: expected a fraction in (0, 1)")
    text_steps = max(1, int(c.train.total_steps * args.text_share))
    c.stages = (
        f"name=text; steps={text_steps}; data.train={args.text}; data.images_column=",
        f"name=image_text; steps={c.train.total_steps - text_steps}",
    )
    return c
