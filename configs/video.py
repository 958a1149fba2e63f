"""Video question answering: a `videos` column in the EasyR1 layout (a list of video file paths, relative to the
data file or `data.image_dir`, or {"bytes", "path"} records; a "<video>" placeholder in `problem` per video),
frames sampled and sized by the `data.video_*` keys (qwen-vl-utils' rules, BUILD_NOTES "Videos"), M-RoPE time
steps following each video's sampled frame rate.

On the demo, the synthetic "color_over_time" family (`shuffle_r1_jax/demo/synthetic_video.py`): 2 s clips of one
shape whose color may change half-way, asked its color, whether it changes, and its color at the end or the start;
frames stay 56 px, so a clip is 2 temporal patches of 2 x 2 merged tokens. With base=paper, a Video-R1-style run:
at most 16 frames a video at 2 fps, 128 x 28 x 28 pixels a frame (Video-R1's training limits), prompts up to 4096
tokens, the `r1v` prompt and reward (<think>, then the answer in <answer> tags).

    python -m shuffle_r1_jax.train --config configs/video.py --workdir runs/video_demo   # the demo (CPU)
    python -m shuffle_r1_jax.train --config configs/video.py:base=paper,model=7b,train=data/video_r1@train \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --workdir runs/video_7b
    python scripts/memory_plan.py --config configs/video.py:base=paper,model=7b --images_per_prompt=0 \\
        --videos_per_prompt=1 --video_seconds=30 --video_size=480,640

Arguments: base (demo | paper; default demo), with base=paper the paper config's model and algorithm, train and
val (the dataset specs, default data/video_r1@train and "" for none), steps (default 1000).
"""

from pathlib import Path

from shuffle_r1_jax.train.defaults import recipe_base


def get_config(arg: str | None = None):
    c, args = recipe_base(arg, Path(__file__).parent, train="data/video_r1@train", val="", steps=1000)
    c.data.videos_column = "videos"
    c.data.video_fps = 2.0
    if args.base == "demo":
        c.demo.task_family = "color_over_time"
        c.demo.image_size = 56  # the frames' side
        c.demo.difficulty_weights = (0.25, 0.25, 0.25, 0.25)
        c.data.video_min_frames = 4
        c.data.video_min_pixels = c.data.video_max_pixels = 56 * 56  # frames stay 56 px: 2 x 2 merged tokens
        c.data.max_prompt_length = 80  # its prompts are under 80 tokens (8 of them the video's)
        c.data.prompt_buckets = (80,)
    else:
        c.data.train, c.data.val = args.train, args.val
        c.data.prompt_format = "r1v"
        c.reward.name = "r1v"
        c.data.video_max_frames = 16
        c.data.video_min_pixels = 4 * 28 * 28
        c.data.video_max_pixels = 128 * 28 * 28
        c.data.max_prompt_length = 4096
        c.data.prompt_buckets = (1024, 2048, 4096)
        c.train.total_steps = args.steps
    return c
