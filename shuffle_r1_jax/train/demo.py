"""The demo's assets, built once per settings under `demo.cache_dir`: a tiny HF-format checkpoint, the synthetic
dataset, and the warmed-up starting policy.

The warm-up is supervised on well-formatted responses whose answer is the right one with probability
`demo.warmup_correct_fraction` and otherwise drawn at random from the task's answer set: the starting policy
knows the format and is partly right (as an Instruct model would be), and RL has to sharpen it.
"""

from __future__ import annotations

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

from shuffle_r1_jax.checkpoint.export import copy_non_weight_files
from shuffle_r1_jax.checkpoint.hf_export import save_hf_checkpoint
from shuffle_r1_jax.checkpoint.tiny import make_tiny_checkpoint
from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
from shuffle_r1_jax.data.synthetic import TASK_ANSWERS, response_text, task_of_problem, write_synthetic_dataset
from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained
from shuffle_r1_jax.processing.batch import BucketConfig
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.train.sft import supervised_finetune

logger = logging.getLogger(__name__)



def _settings_key(config: ConfigDict) -> str:
    d = config.demo
    settings = dict(seed=d.seed, num_train=d.num_train, num_val=d.num_val, image_size=d.image_size,
                    difficulty_weights=list(d.difficulty_weights),
                    warmup_steps=d.warmup_steps, warmup_batch=d.warmup_batch, warmup_lr=d.warmup_lr,
                    warmup_correct_fraction=d.warmup_correct_fraction,
                    prompt_format=config.data.prompt_format, preset=d.preset, version=2)  # fmt: skip
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _build_once(path: Path, build) -> Path:
    """Runs build(tmp_dir) unless `path` exists; the directory appears atomically (rename when complete)."""
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    os.replace(tmp, path)
    return path


def _warmup_responses(rng: np.random.Generator, correct_fraction: float):
    def responses(batch) -> list[str]:
        texts = []
        for problem, answer in zip(batch.problems, batch.answers):
            task = task_of_problem(problem)
            if rng.random() >= correct_fraction:
                answer = str(rng.choice(TASK_ANSWERS[task]))
            texts.append(response_text(task, answer))
        return texts

    return responses


def prepare_demo(config: ConfigDict) -> dict[str, str]:
    """Builds (or finds) the demo assets; returns {"checkpoint", "train", "val"} paths."""
    d = config.demo
    root = Path(os.path.expanduser(d.cache_dir)) / _settings_key(config)
    base = _build_once(root / "base", lambda out: make_tiny_checkpoint(out, d.preset, seed=d.seed))
    data = _build_once(
        root / "data",
        lambda out: write_synthetic_dataset(
            out, d.num_train, d.num_val, d.seed, image_size=d.image_size, difficulty_weights=tuple(d.difficulty_weights)
        ),
    )

    def warm_up(out: Path) -> None:
        logger.info("demo: supervised warm-up of the starting policy (%d steps), once", d.warmup_steps)
        model, model_config = load_pretrained(base, jnp.float32)
        encoder = PromptEncoder.from_checkpoint(base, prompt_format=config.data.prompt_format, max_prompt_length=config.data.max_prompt_length)
        batches = prompt_batches(
            str(data / "train.parquet"), encoder, model_config,
            PipelineConfig(batch_size=d.warmup_batch, seed=d.seed + 1),
            buckets=BucketConfig(prompt_lengths=tuple(config.data.prompt_buckets)),
        )  # fmt: skip
        params = supervised_finetune(
            nnx.graphdef(model),
            nnx.to_pure_dict(nnx.state(model, nnx.Param)),
            batches,
            _warmup_responses(np.random.default_rng(d.seed), d.warmup_correct_fraction),
            tokenizer=encoder.tokenizer,
            eos_id=model_config.eos_token_id,
            steps=d.warmup_steps,
            learning_rate=d.warmup_lr,
            max_response_tokens=config.rollout.max_new_tokens,
            log=lambda step, loss: (step % 25 == 0 or step == d.warmup_steps - 1)
            and logger.info("demo warm-up step %d/%d: loss %.3f", step + 1, d.warmup_steps, loss),
        )
        nnx.update(model, params)
        copy_non_weight_files(base, out)
        save_hf_checkpoint(model, out)

    warm = _build_once(root / "warm", warm_up)
    return {"checkpoint": str(warm), "train": str(data / "train.parquet"), "val": str(data / "val.parquet")}
