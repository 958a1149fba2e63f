"""Curr-ReFT's staged curriculum of question types: yes/no questions, then multiple choice, then open answers, each
stage with its own data, prompt format and reward (R1-V's <answer> tag for the closed questions, the boxed
math-equivalence reward for the open ones), in equal thirds of the run.

    python -m shuffle_r1_jax.train --config configs/question_type_stages.py:model=3b,yes_no=data/yes_no@train,\\
choice=data/choice@train,open=data/open@train \\
        --config.model.checkpoint=models/Qwen2.5-VL-3B-Instruct --workdir runs/curr_reft_3b

Arguments: model, dataset, algorithm (the paper config's; dataset gives the validation set), yes_no, choice, open
(the stages' dataset specs in the EasyR1 layout; open defaults to the paper config's dataset).
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, args = recipe_base(
        arg, Path(__file__).parent, base="paper", yes_no="data/yes_no@train", choice="data/choice@train", open=""
    )
    third = c.train.total_steps // 3
    open_data = f"; data.train={args.open}" if args.open else ""
    c.stages = (
        f"name=yes_no; steps={third}; data.train={args.yes_no}; data.prompt_format=r1v; reward.name=r1v",
        f"name=choice; steps={third}; data.train={args.choice}; data.prompt_format=r1v; reward.name=r1v",
        f"name=open; steps={c.train.total_steps - 2 * third}{open_data}",
    )
    return c
