"""A run on the synthetic video family: videos through sampling, scoring, the update with the frozen tower's
features reused (one vision pass a step), validation, and checkpoints."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from tests.train.conftest import make_trainer, tiny_trainer_config


@pytest.mark.slow
def test_a_video_run_trains_validates_and_checkpoints(tmp_path):
    calls = []

    def instrument(programs):
        def counted(*args):
            calls.append(args[-1].patches.shape)
            return programs.image_features(*args)

        return dataclasses.replace(programs, image_features=counted)

    c = tiny_trainer_config(str(tmp_path / "cache"))
    c.demo.task_family = "color_over_time"
    c.demo.difficulty_weights = (0.25, 0.25, 0.25, 0.25)
    c.data.video_min_pixels = c.data.video_max_pixels = 56 * 56
    c.data.max_prompt_length, c.data.prompt_buckets = 80, (80,)
    c.eval.every, c.eval.max_prompts = 2, 8
    trainer = make_trainer(c, tmp_path / "run", instrument=instrument)
    try:
        assert trainer.settings.data.columns.videos == "videos"  # set by the demo's setup for a video family
        summary = trainer.fit()
        params = trainer.params
    finally:
        trainer.close()
    assert summary.steps == 2
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
    # the vision tower runs once a training step (for the sampler; the update reuses its features) and once a
    # validation batch (2 batches of 4 prompts at step 2, sampled and greedy), each time over 4 prompts x 2
    # temporal patches (8 rows of 16 patch slots)
    assert calls == [(8, 16, 1176)] * (2 + 2 * 2), calls
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert lines[-1]["step"] == 2 and "val/accuracy" in lines[-1]
    assert any(key.startswith("val/accuracy/synthetic_video/") for key in lines[-1])
    assert all(line.get("data/bad_records/total", 0) == 0 for line in lines)
    assert trainer.checkpointer.latest_step() == 2
