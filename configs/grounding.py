"""Visual grounding with the IoU reward (`grounding_iou`: the continuous IoU of the answered box with the true one,
scored in the resized image's pixels as Qwen2.5-VL answers; 0.9 IoU + 0.1 format, the format asking for
<think> </think> <answer> </answer> around a JSON box).

On the demo, the synthetic "grounding" family ("Where is the red circle? Answer with its box.", one to three shapes;
`shuffle_r1_jax/demo/synthetic.py`) on 70 px images, which the demo's resize turns into 56 px ones, so every answer
goes through the coordinate change. With base=paper, a RefCOCO-style run: referring expressions in the EasyR1 layout
(`problem` "<image>" and the expression, `answer` the box `[x1, y1, x2, y2]` in original pixels, `images`), the
prompt asking for Qwen2.5-VL's `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]` JSON, one epoch of RefCOCO's train
expressions by default. On the demo the IoU rises (0.114 -> 0.198) only because the policy settles on the one box
that scores best on average, not by localizing the shape yet (BUILD_NOTES.md has the figures and what to try).

    python -m shuffle_r1_jax.train --config configs/grounding.py --workdir runs/grounding_demo   # the demo (CPU)
    python -m shuffle_r1_jax.train --config configs/grounding.py:base=paper,model=7b \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/refcoco_7b

Arguments: base (demo | paper; default demo), with base=paper the paper config's model and algorithm, train and
val (the dataset specs, default data/refcoco@train and data/refcoco@val), steps (default 0: one epoch of
RefCOCO's 120,624 train expressions). BUILD_NOTES.md "Synthetic grounding task (issue #20)" has the demo measurement.
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base

REFCOCO_TRAIN_EXPRESSIONS = 120624  # RefCOCO (UNC split) train referring expressions
PROMPT = (
    "{{ content | trim }} Find the region the expression describes. Think inside <think> </think> tags, then give "
    'its box in the image\'s pixels inside <answer> </answer> tags as JSON: [{"bbox_2d": [x1, y1, x2, y2], '
    '"label": "<the expression>"}].'
)


def get_config(arg: str | None = None):
    c, args = recipe_base(arg, Path(__file__).parent, train="data/refcoco@train", val="data/refcoco@val", steps=0)
    c.reward.name = "grounding_iou"
    c.reward.options.require_tags = True
    if args.base == "demo":
        c.demo.task_family = "grounding"
        c.demo.image_size = 70
        c.demo.difficulty_weights = (0.4, 0.3, 0.3)
        c.data.max_prompt_length = 80  # its prompts take 71-78 tokens (the question has few merges)
        c.data.prompt_buckets = (80,)
    else:
        c.data.train, c.data.val = args.train, args.val
        c.data.prompt_format = PROMPT
        c.train.total_steps = args.steps or REFCOCO_TRAIN_EXPRESSIONS // c.data.rollout_batch_prompts
    return c
