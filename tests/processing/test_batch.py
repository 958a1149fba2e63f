"""Prompt batches from the synthetic dataset: image and video tokens, left padding, buckets, and the jitted
forward."""

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from shuffle_r1_jax.data.examples import make_example
from shuffle_r1_jax.data.sources import RecordSource
from shuffle_r1_jax.models.qwen2_5_vl import forward_jit, forward_logits, load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.layout import windows_of_grid
from shuffle_r1_jax.processing.batch import BucketConfig, PromptExample, collate_prompts, left_pad, pick_bucket
from shuffle_r1_jax.processing.image import num_image_tokens
from shuffle_r1_jax.processing.image_io import decode_image
from shuffle_r1_jax.processing.prompts import PromptEncoder
from shuffle_r1_jax.processing.video import DecodedVideo, VideoPreprocessConfig
from tests.tiny_assets import IMAGE_CONFIG

BUCKETS = BucketConfig(prompt_lengths=(64, 128, 256), vision_rows=(2, 4, 8), windows=(1, 2, 4))


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, synthetic_data):
    model, config = load_pretrained(tiny_checkpoint)
    encoder = PromptEncoder.from_checkpoint(tiny_checkpoint, image_config=IMAGE_CONFIG, max_prompt_length=256)
    source = RecordSource(f"{synthetic_data}@train")
    return model, config, encoder, source


def test_pick_bucket_and_config():
    assert [pick_bucket(v, (64, 128)) for v in (1, 64, 65, 128, 129, 300)] == [64, 64, 128, 128, 256, 512]
    assert [pick_bucket(v, None) for v in (1, 2, 3, 5)] == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="buckets.prompt_lengths"):
        BucketConfig(prompt_lengths=(256, 128))
    with pytest.raises(ValueError, match="buckets.windows"):
        BucketConfig(windows=(0, 2))
    ids, mask = left_pad([np.array([5, 6, 7]), np.array([8])], 4, pad_id=0)
    np.testing.assert_array_equal(ids, [[0, 5, 6, 7], [0, 0, 0, 8]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])


def test_batch_from_the_synthetic_dataset_runs_through_the_model(setup):
    model, config, encoder, source = setup
    records = [source[i] for i in (0, 25, 3)]  # 56 px, 112 px, 56 px images
    examples = [make_example(r, encoder, source.columns) for r in records]
    assert all(isinstance(e, PromptExample) for e in examples)
    batch = collate_prompts(examples, config, BUCKETS, encoder.pad_token_id)
    inputs = batch.inputs

    assert batch.batch_size == 3 and batch.length == 128  # longest prompt is between 64 and 128 tokens
    assert 64 < batch.prompt_lengths.max() <= 128
    for row, record in enumerate(records):
        image = decode_image(record.images[0])
        expected = num_image_tokens(image.height, image.width, IMAGE_CONFIG)
        assert int((inputs.input_ids[row] == config.image_token_id).sum()) == expected
        n = batch.prompt_lengths[row]
        np.testing.assert_array_equal(inputs.attention_mask[row], [0] * (batch.length - n) + [1] * n)
        assert (inputs.input_ids[row, : batch.length - n] == encoder.pad_token_id).all()
        np.testing.assert_array_equal(inputs.input_ids[row, batch.length - n :], examples[row].prompt.input_ids)
    assert [int((inputs.input_ids[r] == config.image_token_id).sum()) for r in range(3)] == [4, 16, 4]
    assert batch.answers == tuple(r.answer for r in records)
    assert batch.problems == tuple(r.problem for r in records)
    assert batch.data_sources == tuple(r.data_source for r in records)
    # 3 images -> image bucket 4; a 112 px image (8x8 patches, 4x4 merged) has 2x2 windows of 2x2 merged tokens
    assert windows_of_grid(8, 8, config.vision) == (2, 2)
    assert inputs.vision.patches.shape == (4, 4 * config.vision.window_patches, config.vision.patch_dim)
    assert inputs.position_ids.shape == (3, 3, 128) and inputs.vision_token_slot.shape == (3, 128)

    logits = forward_jit(*nnx.split(model), inputs)
    assert logits.shape == (3, 128, config.text.vocab_size)
    assert np.isfinite(np.asarray(logits)[inputs.attention_mask.astype(bool)]).all()


def test_text_only_batch_has_no_vision_inputs(setup):
    _, config, encoder, _ = setup
    prompt = encoder.encode("What is 2+2?", [])
    example = PromptExample(prompt, "What is 2+2?", "4", "text", "id")
    batch = collate_prompts([example, example], config, BUCKETS, encoder.pad_token_id)
    assert batch.inputs.vision is None and batch.inputs.vision_token_slot is None
    assert batch.length == 128 and batch.inputs.input_ids.shape == (2, 128)


def test_videos_images_and_text_in_one_batch_match_each_prompt_alone(setup, tiny_checkpoint):
    """Each row of a collated batch (left padding, shared vision rows) gives the logits of its prompt run alone."""
    model, config, _, _ = setup
    encoder = PromptEncoder.from_checkpoint(
        tiny_checkpoint,
        image_config=IMAGE_CONFIG,
        max_prompt_length=256,
        video_config=VideoPreprocessConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 6),
    )
    rng = np.random.default_rng(0)
    clip = DecodedVideo(rng.integers(0, 256, (6, 56, 84, 3), dtype=np.uint8), 1.5, 12, 3.0)
    short = DecodedVideo(rng.integers(0, 256, (2, 28, 56, 3), dtype=np.uint8), 4.0, 2, 4.0)
    prompts = [
        encoder.encode("<video> What moves?", [], [clip]),
        encoder.encode("<image> and <video>?", [Image.new("RGB", (56, 84), "green")], [short]),
        encoder.encode("Text only.", []),
    ]
    examples = [PromptExample(p, "q", "a", "mixed", str(i)) for i, p in enumerate(prompts)]
    batch = collate_prompts(examples, config, BUCKETS, encoder.pad_token_id)
    inputs = batch.inputs
    assert inputs.vision.patches.shape[0] == 8  # 1 image + 3 + 1 temporal patches -> row bucket 8
    logits = np.asarray(forward_jit(*nnx.split(model), inputs))
    for row, prompt in enumerate(prompts):
        alone = forward_logits(
            model,
            prompt.input_ids[None],
            pixel_values=prompt.pixel_values if len(prompt.image_grid_thw) else None,
            image_grid_thw=prompt.image_grid_thw if len(prompt.image_grid_thw) else None,
            pixel_values_videos=prompt.pixel_values_videos if len(prompt.video_grid_thw) else None,
            video_grid_thw=prompt.video_grid_thw if len(prompt.video_grid_thw) else None,
            second_per_grid_ts=prompt.second_per_grid_ts if len(prompt.video_grid_thw) else None,
        )
        n = len(prompt.input_ids)
        np.testing.assert_allclose(logits[row, -n:], np.asarray(alone)[0], rtol=0, atol=1e-4)
