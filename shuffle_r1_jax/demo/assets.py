"""The demo's `setup`: its assets, built once per settings under `demo.cache_dir`: a tiny HF-format checkpoint
(`shuffle_r1_jax.demo.tiny_checkpoint`), the synthetic dataset (`shuffle_r1_jax.demo.synthetic`, or
`shuffle_r1_jax.demo.synthetic_video` for a video family), and the warmed-up starting policy
(`shuffle_r1_jax.demo.warmup`). Each directory appears atomically, so a run killed
while building starts that part again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from shuffle_r1_jax.checkpoint.hf_files import copy_non_weight_files
from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
from shuffle_r1_jax.data.sources import Columns
from shuffle_r1_jax.demo.synthetic import VIDEO_FAMILIES, check_family, write_synthetic_dataset
from shuffle_r1_jax.demo.synthetic_video import write_video_dataset
from shuffle_r1_jax.demo.tiny_checkpoint import PRESETS, make_tiny_checkpoint
from shuffle_r1_jax.demo.warmup import supervised_finetune, warmup_responses
from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.saving import save_hf_checkpoint
from shuffle_r1_jax.processing.batch import BucketConfig
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.train.settings import video_config

logger = logging.getLogger(__name__)


def _settings_key(config: ConfigDict) -> str:
    """The cache subdirectory name: a short hash of everything the assets depend on (the `demo` settings, and the
    prompt format, prompt buckets, response length and, for a video family, video settings the warm-up trains
    with) and a version."""
    d = config.demo
    settings = dict(
        seed=d.seed,
        num_train=d.num_train,
        num_val=d.num_val,
        image_size=d.image_size,
        task_family=d.task_family,
        difficulty_weights=list(d.difficulty_weights),
        warmup_steps=d.warmup_steps,
        warmup_batch=d.warmup_batch,
        warmup_lr=d.warmup_lr,
        warmup_correct_fraction=d.warmup_correct_fraction,
        prompt_format=config.data.prompt_format,
        max_prompt_length=config.data.max_prompt_length,
        prompt_buckets=list(config.data.prompt_buckets),
        max_new_tokens=config.rollout.max_new_tokens,
        preset=d.preset,
        rope_theta=d.rope_theta,
        version=4,
    )
    if d.task_family in VIDEO_FAMILIES:
        settings["video"] = dataclasses.asdict(video_config(config))
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _build_once(path: Path, build) -> Path:
    """Builds the directory `path` with `build(tmp_dir)` unless it exists, and returns `path`.

    The directory appears atomically: `build` writes a sibling `<name>.tmp` (emptied first), which is renamed to
    `path` when `build` returns.
    """
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    os.replace(tmp, path)
    return path


def check_demo_section(d: ConfigDict) -> None:
    """Checks the values of the config's `demo` section before any asset is built.

    Args:
      d: the `demo` section (`config.demo`).

    Raises:
      ValueError: naming the `demo` key whose value cannot build assets.
    """
    checks = [
        (d.preset in PRESETS, f"demo.preset = {d.preset!r}; expected one of {sorted(PRESETS)}"),
        (
            d.num_train >= 1 and d.num_val >= 1,
            f"demo.num_train = {d.num_train}, demo.num_val = {d.num_val} must be >= 1",
        ),
        (d.image_size >= 28, f"demo.image_size = {d.image_size} must be >= 28 (one merged image token)"),
        (
            d.task_family not in VIDEO_FAMILIES or d.image_size % 2 == 0,
            f"demo.image_size = {d.image_size} must be even for a video family (H.264 frames)",
        ),
        (0 <= d.seed < 2**32, f"demo.seed = {d.seed} must be in [0, 2**32)"),
        (
            d.warmup_steps >= 0 and d.warmup_batch >= 1,
            f"demo.warmup_steps = {d.warmup_steps} must be >= 0 and demo.warmup_batch = {d.warmup_batch} >= 1",
        ),
        (d.warmup_lr > 0, f"demo.warmup_lr = {d.warmup_lr} must be > 0"),
        (d.rope_theta > 1, f"demo.rope_theta = {d.rope_theta} must be > 1"),
        (
            0 <= d.warmup_correct_fraction <= 1,
            f"demo.warmup_correct_fraction = {d.warmup_correct_fraction} must be in [0, 1]",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    try:
        check_family(d.task_family, tuple(d.difficulty_weights))
    except ValueError as err:
        raise ValueError(f"demo.task_family / demo.difficulty_weights: {err}") from None


def build_assets(config: ConfigDict) -> dict[str, str]:
    """The demo config's `setup`: builds (or finds) the demo assets for `config.demo`.

    Args:
      config: the run config; reads its `demo` section, `data.prompt_format`, `data.max_prompt_length`,
        `data.prompt_buckets` and `rollout.max_new_tokens`.

    Returns:
      The config keys that point at the assets, as {dotted key: value}: "model.checkpoint" (the warmed-up
      checkpoint), "data.train" and "data.val" (the parquet files), and for a video family "data.videos_column".

    Raises:
      ValueError: from `check_demo_section`, naming a `demo` key whose value cannot build assets.
    """
    d = config.demo
    check_demo_section(d)
    root = Path(os.path.expanduser(d.cache_dir)) / _settings_key(config)
    base = _build_once(
        root / "base", lambda out: make_tiny_checkpoint(out, d.preset, seed=d.seed, rope_theta=d.rope_theta)
    )
    videos = d.task_family in VIDEO_FAMILIES
    weights = tuple(d.difficulty_weights)
    if videos:
        data = _build_once(
            root / "data",
            lambda out: write_video_dataset(out, d.num_train, d.num_val, d.seed, d.image_size, weights),
        )
    else:
        data = _build_once(
            root / "data",
            lambda out: write_synthetic_dataset(
                out, d.num_train, d.num_val, d.seed, d.image_size, weights, family=d.task_family
            ),
        )

    def warm_up(out: Path) -> None:
        logger.info("demo: supervised warm-up of the starting policy (%d steps), once", d.warmup_steps)
        model, model_config = load_pretrained(base, jnp.float32)
        encoder = PromptEncoder.from_checkpoint(
            base,
            prompt_format=config.data.prompt_format,
            max_prompt_length=config.data.max_prompt_length,
            video_config=video_config(config),
        )
        batches = prompt_batches(
            str(data / "train.parquet"),
            encoder,
            model_config,
            PipelineConfig(batch_size=d.warmup_batch, seed=d.seed + 1),
            buckets=BucketConfig(prompt_lengths=tuple(config.data.prompt_buckets)),
            columns=Columns(videos="videos" if videos else None),
        )
        params = supervised_finetune(
            nnx.graphdef(model),
            nnx.to_pure_dict(nnx.state(model, nnx.Param)),
            batches,
            warmup_responses(np.random.default_rng(d.seed), d.warmup_correct_fraction),
            tokenizer=encoder.tokenizer,
            eos_id=model_config.eos_token_id,
            steps=d.warmup_steps,
            learning_rate=d.warmup_lr,
            max_response_tokens=config.rollout.max_new_tokens,
            log=lambda step, loss: (
                (step % 25 == 0 or step == d.warmup_steps - 1)
                and logger.info("demo warm-up step %d/%d: loss %.3f", step + 1, d.warmup_steps, loss)
            ),
        )
        nnx.update(model, params)
        copy_non_weight_files(base, out)
        save_hf_checkpoint(model, out)

    warm = _build_once(root / "warm", warm_up)
    keys = {
        "model.checkpoint": str(warm),
        "data.train": str(data / "train.parquet"),
        "data.val": str(data / "val.parquet"),
    }
    return keys | ({"data.videos_column": "videos"} if videos else {})
