"""R1-VL's StepGRPO on the paper's data (Geometry3K by default): the `step_grpo` reward (accuracy plus StepRAR,
the share of a problem's annotated key steps found in the response's steps, and StepRVR, whether the response
has R1-VL's sections in order: image description, rationales, numbered steps, the boxed final answer), the `step`
prompt format asking for those sections, group-relative advantages (GRPO) as R1-VL does.

    python -m shuffle_r1_jax.train --config configs/step_grpo.py:model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/geo3k_7b_step_grpo

Geometry3K has no key steps: StepRAR is 0 there and the reward is accuracy plus StepRVR. A dataset with a column of
key steps per problem (a list of strings, or a JSON string of one; R1-VL extracted them with GPT-4o) passes them
with `key_steps=<column>`; `--config.reward.options.rar_weight=...` and the other weights change the mix
(BUILD_NOTES.md "step_grpo").

Arguments: model, dataset (the paper config's), key_steps (the key-steps column, default none).
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, args = recipe_base(arg, Path(__file__).parent, base="paper", algorithm="grpo", key_steps="")
    c.rl.algorithm = "grpo"
    c.reward.name = "step_grpo"
    c.reward.options = {"accuracy_weight": 1.0, "format_weight": 0.0, "rar_weight": 0.1, "rvr_weight": 1.0}
    c.data.prompt_format = "step"
    c.data.reward_columns = (args.key_steps,) if args.key_steps else ()
    return c
