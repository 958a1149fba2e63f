"""The warm-up's targets: grounding boxes in the resized image's pixels, the frame `grounding_iou` reads."""

import json
import types

import numpy as np
import pytest

from shuffle_r1_jax.demo import synthetic
from shuffle_r1_jax.demo.warmup import warmup_responses
from shuffle_r1_jax.processing.image import smart_resize
from shuffle_r1_jax.rewards.grounding import grounding_iou


def _batch(samples):
    height, width = smart_resize(70, 70, factor=28, min_pixels=56 * 56, max_pixels=112 * 112)
    sizes = [(70, 70, width, height)]
    return types.SimpleNamespace(
        problems=tuple(s.problem for s in samples),
        answers=tuple(s.answer for s in samples),
        reward_contexts=tuple({"image_sizes": sizes} for _ in samples),
    )


@pytest.mark.parametrize("correct_fraction", [1.0, 0.0])
def test_grounding_targets_are_in_resized_pixels(correct_fraction):
    samples = synthetic.generate_samples(24, seed=1, image_size=70, difficulty_weights=(1, 1, 1), family="grounding")
    batch = _batch(samples)
    assert batch.reward_contexts[0]["image_sizes"] == [(70, 70, 56, 56)]  # the demo's resize: 70 px -> 56 px
    texts = warmup_responses(np.random.default_rng(0), correct_fraction)(batch)
    for text, sample, context in zip(texts, samples, batch.reward_contexts):
        target = synthetic.grounding_target(sample.problem)
        box = json.loads(text.split("<answer>")[1].split("</answer>")[0])
        assert text == synthetic.grounding_response_text(target, box)
        true = [round(v * 0.8) for v in json.loads(sample.answer)]
        assert [box[2] - box[0], box[3] - box[1]] == [true[2] - true[0], true[3] - true[1]]
        assert 0 <= min(box) and max(box) <= 56
        score = grounding_iou(text, sample.answer, require_tags=True, **context)
        assert score["format"] == 1.0
        if correct_fraction:
            assert box == true and score["accuracy"] > 0.9
    if not correct_fraction:
        assert (
            np.mean(
                [grounding_iou(t, s.answer, **c)["accuracy"] for t, s, c in zip(texts, samples, batch.reward_contexts)]
            )
            < 0.3
        )
