"""Prompt formats, chat messages, image- and video-token expansion and the encoder with the tiny checkpoint's
tokenizer."""

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer

from shuffle_r1_jax.processing import prompts
from shuffle_r1_jax.processing.image import num_image_tokens
from shuffle_r1_jax.processing.prompts import (
    PromptEncoder,
    PromptError,
    chat_messages,
    expand_vision_tokens,
    load_prompt_format,
)
from shuffle_r1_jax.processing.video import DecodedVideo, VideoPreprocessConfig, preprocess_video
from tests.tiny_assets import IMAGE_CONFIG

SPEC_MATH_INSTRUCTION = (
    " You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
)


def test_builtin_formats():
    assert prompts.MATH_INSTRUCTION == SPEC_MATH_INSTRUCTION
    assert load_prompt_format("math").apply("  <image>What is 2+2? \n") == "<image>What is 2+2?" + SPEC_MATH_INSTRUCTION
    r1v = load_prompt_format("r1v").apply("Which one?")
    assert r1v.startswith("Which one? ") and "<think> </think>" in r1v and "<answer> </answer>" in r1v
    assert load_prompt_format("none").apply(" as is ") == " as is "


def test_formats_from_strings_and_files(tmp_path):
    assert load_prompt_format("Q: {{content}} A:").apply("x") == "Q: x A:"
    file = tmp_path / "math.jinja"
    file.write_text("{{ content | trim }} Put the answer in \\boxed{}.\n")
    fmt = load_prompt_format(str(file))
    assert fmt.name == str(file) and fmt.apply(" 1+1 ") == "1+1 Put the answer in \\boxed{}."
    with pytest.raises(ValueError, match="'mathh' is not a built-in format"):
        load_prompt_format("mathh")
    (tmp_path / "two.jinja").write_text("{{ content }} and {{ content }}")
    with pytest.raises(ValueError, match="exactly once; found 2"):
        load_prompt_format(str(tmp_path / "two.jinja"))
    with pytest.raises(ValueError, match="other template syntax"):
        load_prompt_format("{% if x %}{{ content }}{% endif %}")


def test_chat_messages():
    (user,) = chat_messages("<image>Compare with <image> please", 2)
    assert user["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Compare with "},
        {"type": "image"},
        {"type": "text", "text": " please"},
    ]
    system, user = chat_messages("No placeholder", 1, system_prompt="Be brief.")
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == [{"type": "image"}, {"type": "text", "text": "No placeholder"}]
    with pytest.raises(PromptError, match="2 '<image>' placeholders but the record has 1 images") as err:
        chat_messages("<image><image>", 1)
    assert err.value.reason == "image_count_mismatch"


def test_chat_messages_with_videos():
    (user,) = chat_messages("<video> is text here <image>", 1)  # no videos value: <video> stays text
    assert [part["type"] for part in user["content"]] == ["text", "image"]
    (user,) = chat_messages("<video> then <image>: same colour?", 1, num_videos=1)
    assert [part["type"] for part in user["content"]] == ["video", "text", "image", "text"]
    (user,) = chat_messages("<image> first", 1, num_videos=2)  # videos without placeholders go first
    assert [part["type"] for part in user["content"]] == ["video", "video", "image", "text"]
    (user,) = chat_messages("none", 1, num_videos=1)
    assert [part["type"] for part in user["content"]] == ["image", "video", "text"]
    with pytest.raises(PromptError, match="1 '<video>' placeholders but the record has 2 videos") as err:
        chat_messages("<video>", 0, num_videos=2)
    assert err.value.reason == "video_count_mismatch"
    official = load_prompt_format("math_official")
    assert official.apply("Q", 1, 2).endswith(" <image> <video> <video> Q")
    assert official.apply("<video> Q", 1, 1).endswith(" <image> <video> Q")


def test_expand_vision_tokens():
    ids = expand_vision_tokens(np.array([1, 9, 2, 9, 3]), 9, [2, 3])
    np.testing.assert_array_equal(ids, [1, 9, 9, 2, 9, 9, 9, 3])
    assert ids.dtype == np.int32
    with pytest.raises(PromptError, match="2 image tokens"):
        expand_vision_tokens(np.array([9, 9]), 9, [4])


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    encoder = PromptEncoder.from_checkpoint(tiny_checkpoint, max_prompt_length=300)
    assert encoder.image_config == IMAGE_CONFIG  # read from the checkpoint's preprocessor_config.json
    return encoder


def test_encoder_expands_each_image(encoder):
    tokenizer = encoder.tokenizer
    images = [Image.new("RGB", (112, 84), "red"), Image.new("RGB", (60, 60), "blue")]
    encoded = encoder.encode("<image> left, <image> right: which is red?", images)
    expected = [num_image_tokens(img.height, img.width, IMAGE_CONFIG) for img in images]
    assert expected == [12, 4]
    ids = encoded.input_ids
    assert int((ids == encoder.image_token_id).sum()) == sum(expected)
    assert encoded.image_grid_thw.tolist() == [[1, 6, 8], [1, 4, 4]]
    assert encoded.pixel_values.shape == (6 * 8 + 4 * 4, 1176)
    text = tokenizer.decode(ids.tolist())
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert ("<|vision_start|>" + "<|image_pad|>" * 12 + "<|vision_end|> left, ") in text
    assert text.count(prompts.MATH_INSTRUCTION) == 1


def _clip(frames: int, height: int, width: int, fps: float = 2.0) -> DecodedVideo:
    rng = np.random.default_rng(frames)
    pixels = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    return DecodedVideo(frames=pixels, sample_fps=fps, total_frames=frames, video_fps=fps)


def test_encoder_expands_each_video_after_the_images(tiny_checkpoint):
    videos = VideoPreprocessConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 4)
    encoder = PromptEncoder.from_checkpoint(tiny_checkpoint, max_prompt_length=300, video_config=videos)
    clips = [_clip(4, 56, 56), _clip(6, 30, 90, fps=0.5)]
    image = Image.new("RGB", (60, 60), "blue")
    encoded = encoder.encode("<video> or <video>: like <image>?", [image], clips)
    expected = [preprocess_video(c.frames, c.sample_fps, videos, IMAGE_CONFIG) for c in clips]
    assert encoded.video_grid_thw.tolist() == [list(v.grid_thw) for v in expected] == [[2, 4, 4], [3, 2, 6]]
    np.testing.assert_array_equal(encoded.pixel_values_videos, np.concatenate([v.pixel_values for v in expected]))
    np.testing.assert_allclose(encoded.second_per_grid_ts, [1.0, 4.0])
    text = encoder.tokenizer.decode(encoded.input_ids.tolist())
    first = "<|vision_start|>" + "<|video_pad|>" * 8 + "<|vision_end|> or "
    second = "<|vision_start|>" + "<|video_pad|>" * 9 + "<|vision_end|>: like "
    assert first + second + "<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>?" in text
    assert int((encoded.input_ids == encoder.video_token_id).sum()) == 17
    with pytest.raises(PromptError, match="aspect ratio") as err:
        encoder.encode("<video>", [], [_clip(2, 2, 500)])
    assert err.value.reason == "bad_video"
    # without a videos value a literal <video> is text; a literal <|video_pad|> is still counted against no video
    text_only = encoder.encode("Is <video> a tag?", [])
    assert "Is <video> a tag?" in encoder.tokenizer.decode(text_only.input_ids.tolist())
    with pytest.raises(PromptError, match="0 videos") as err:
        encoder.encode("stray <|video_pad|> here", [])
    assert err.value.reason == "video_count_mismatch"
    with pytest.raises(PromptError, match="1 '<video>' placeholders but the record has 0 videos"):
        encoder.encode("<video> missing", [], [])
    plain = PromptEncoder(encoder.tokenizer, encoder.image_token_id)
    with pytest.raises(PromptError, match="takes no videos") as err:
        plain.encode("<video>", [], clips[:1])
    assert err.value.reason == "bad_video"


def test_encoder_errors(encoder, tiny_checkpoint):
    red = Image.new("RGB", (56, 56), "red")
    with pytest.raises(PromptError, match="over max_prompt_length = 300") as err:
        encoder.encode("<image>" + "many words " * 200, [red])
    assert err.value.reason == "prompt_too_long"
    with pytest.raises(PromptError) as err:
        encoder.encode("<image> and <|image_pad|> in the text", [red])
    assert err.value.reason == "image_count_mismatch"
    with pytest.raises(PromptError, match="aspect ratio") as err:
        encoder.encode("<image>thin", [Image.new("RGB", (5000, 20))])
    assert err.value.reason == "bad_image"
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match="maps <\\|image_pad\\|> to id 5, but the model's image_token_id is 6"):
        PromptEncoder(tokenizer, 6)
    with pytest.raises(ValueError, match="maps <\\|video_pad\\|> to id 6, but the model's video_token_id is 9"):
        PromptEncoder(tokenizer, 5, video_token_id=9)


def test_the_official_layout_equals_the_official_template(tiny_checkpoint):
    """The official code's user turn: "<instruction> <image> <problem>" (its `dataset.py`: a problem without the
    placeholder gets "<image> " in front, then the instruction and a space before it), under the checkpoint's chat
    template with its default system message; written out here by hand."""
    encoder = PromptEncoder.from_checkpoint(tiny_checkpoint, prompt_format="math_official", max_prompt_length=300)
    problem = "Find x. Round to the nearest tenth."
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        + SPEC_MATH_INSTRUCTION.strip()
        + " <|vision_start|><|image_pad|><|vision_end|> "
        + problem
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert encoder.prompt_text(problem, 1) == expected
    # a problem with its own placeholder keeps it where it is; a text-only problem gets none
    assert encoder.prompt_text("<image>Find x.", 1) == expected.replace(" " + problem, "Find x.")
    assert "<|image_pad|>" not in encoder.prompt_text(problem, 0)


def test_truncate_right_keeps_the_first_tokens_like_the_official_dataset(tiny_checkpoint):
    """The official dataset cuts an over-long prompt to its first max_prompt_length ids (`truncation="right"`)."""
    red = Image.new("RGB", (56, 56), "red")
    problem = "<image>" + "many words " * 100
    encoder = PromptEncoder.from_checkpoint(tiny_checkpoint, IMAGE_CONFIG, max_prompt_length=4096)
    full = encoder.encode(problem, [red])
    assert len(full.input_ids) > 120
    cut = PromptEncoder.from_checkpoint(
        tiny_checkpoint, IMAGE_CONFIG, max_prompt_length=120, overlong="truncate_right"
    ).encode(problem, [red])
    np.testing.assert_array_equal(cut.input_ids, full.input_ids[:120])
    np.testing.assert_array_equal(cut.pixel_values, full.pixel_values)
    # a cut through the image tokens would not match the image features: still skipped
    first_image = int(np.argmax(full.input_ids == encoder.image_token_id))
    with pytest.raises(PromptError, match="a cut would drop image or video tokens") as err:
        PromptEncoder.from_checkpoint(
            tiny_checkpoint, IMAGE_CONFIG, max_prompt_length=first_image + 1, overlong="truncate_right"
        ).encode(problem, [red])
    assert err.value.reason == "prompt_too_long"
    with pytest.raises(ValueError, match="overlong prompts = 'left'; expected one of"):
        PromptEncoder.from_checkpoint(tiny_checkpoint, IMAGE_CONFIG, overlong="left")
