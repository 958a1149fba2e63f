"""Per-device memory of one training step of a config, before renting hardware: the trainer's own programs are
compiled on abstract inputs and XLA's memory accounting is printed (shuffle_r1_jax/perf/memory_plan.py).

    python scripts/memory_plan.py --config configs/shuffle_r1_paper.py:model=3b,dataset=geo3k
    python scripts/memory_plan.py --config configs/shuffle_r1_paper.py:model=7b --config.mesh.tensor=2 \\
        --config.train.micro_batch_rows=4

The model's dimensions come from `model.checkpoint` (a local directory's config.json, or a known hub id); its
inputs need not exist. With `--devices N` (default 8) the figures are the CPU compiler's for N simulated devices:
the same programs and shardings, but a GPU or TPU compiler fuses and schedules differently (and the CPU backend
keeps fp32 copies of bf16 matmul operands), so treat them as estimates; `--devices 0` uses this machine's own
devices (e.g. 8 GPUs).

A model too large to compile whole here (72B: its train step alone takes many minutes on a 2-core CPU) is planned
at a few decoder-layer counts and extrapolated along a straight line per program
(shuffle_r1_jax/perf/layer_extrapolation.py); give three counts to see whether the figures are linear:

    python scripts/memory_plan.py --devices 64 --config configs/shuffle_r1_paper.py:model=72b \
        --config.model.attention_impl=splash --text_layers 2,4,8

(32b and 72b choose "cudnn" attention, which the CPU compiler cannot compile; "splash" stands in for it: it runs
interpreted on CPU and, like cuDNN's flash attention, stores no score blocks for the backward pass.)
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def _simulate_devices(argv: list[str]) -> None:
    """Before jax is imported: `--devices N` with N > 0 selects the CPU backend with N simulated devices."""
    devices = 8
    for i, arg in enumerate(argv):
        match = re.fullmatch(r"--devices(?:=(\d+))?", arg)
        if match:
            devices = int(match.group(1) if match.group(1) is not None else argv[i + 1])
    if devices > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
        os.environ["JAX_PLATFORMS"] = "cpu"


if __name__ == "__main__":
    _simulate_devices(sys.argv[1:])

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shuffle_r1_paper.py"

_CONFIG = config_flags.DEFINE_config_file("config", f"{PAPER_CONFIG}:model=3b", "the run's config file[:args]")
flags.DEFINE_integer("devices", 8, "simulate this many CPU devices (CPU compiler figures); 0 = this machine's devices")
flags.DEFINE_integer("images_per_prompt", 1, "images per prompt (0 = text only): the data's shape, not in the config")
flags.DEFINE_integer("image_tokens", 1024, "merged tokens per image (a square grid; 4 patches each)")
flags.DEFINE_integer("videos_per_prompt", 0, "videos per prompt, sampled and sized by the config's data.video_* keys")
flags.DEFINE_float("video_seconds", 10.0, "the length of each video in seconds")
flags.DEFINE_list("video_size", ["480", "640"], "height,width of each video's frames before resizing")
flags.DEFINE_float("video_source_fps", 30.0, "the videos' own frame rate")
flags.DEFINE_float("device_memory_gib", 80.0, "memory of one device, for the fits column")
flags.DEFINE_list("programs", None, "programs to compile (default: all of shuffle_r1_jax.perf.memory_plan.PROGRAMS)")
flags.DEFINE_list(
    "text_layers",
    None,
    "plan with these decoder-layer counts instead of the model's and extrapolate each program's phase peak to the "
    "model's layer count along a fitted line (default: plan the whole model)",
)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    del argv
    from shuffle_r1_jax.models.qwen2_5_vl.config import ConfigError as ModelConfigError
    from shuffle_r1_jax.models.qwen2_5_vl.config import config_of_checkpoint
    from shuffle_r1_jax.perf.layer_extrapolation import fit_programs, format_fits, with_text_layers
    from shuffle_r1_jax.perf.memory_plan import PROGRAMS, DataShapes, format_plan, plan_memory
    from shuffle_r1_jax.train.settings import ConfigError, resolve

    try:
        settings = resolve(_CONFIG.value, check_inputs=False)
        model_config = config_of_checkpoint(settings.model.checkpoint)
        height, width = (int(v) for v in FLAGS.video_size)
        data = DataShapes(
            images_per_prompt=FLAGS.images_per_prompt,
            image_tokens=FLAGS.image_tokens,
            videos_per_prompt=FLAGS.videos_per_prompt,
            video_seconds=FLAGS.video_seconds,
            video_size=(height, width),
            video_source_fps=FLAGS.video_source_fps,
        )
        counts = [int(n) for n in FLAGS.text_layers or [model_config.text.num_hidden_layers]]
        plans = {}
        for layers in counts:
            plans[layers] = plan_memory(
                settings,
                with_text_layers(model_config, layers),
                model_name=f"{settings.model.checkpoint} with {layers} decoder layers"
                if FLAGS.text_layers
                else settings.model.checkpoint,
                data=data,
                programs=tuple(FLAGS.programs or PROGRAMS),
                log=lambda line: print(line, flush=True),
            )
    except (ConfigError, ModelConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for plan in plans.values():
        print()
        print(format_plan(plan, FLAGS.device_memory_gib))
    if len(plans) > 1:
        print()
        print(format_fits(fit_programs(plans), model_config.text.num_hidden_layers, FLAGS.device_memory_gib))
    return 0


if __name__ == "__main__":
    app.run(main)
