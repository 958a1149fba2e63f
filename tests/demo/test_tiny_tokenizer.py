"""The tiny demo tokenizer: size, special ids, exact round trips, chat template, loadable directory."""

import json

import numpy as np
import pytest
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from shuffle_r1_jax.demo import tiny_tokenizer as tt
from shuffle_r1_jax.demo.synthetic import generate_samples
from shuffle_r1_jax.processing.image import ImagePreprocessConfig, num_image_tokens, preprocess_images

IMAGE_CONFIG = ImagePreprocessConfig(min_pixels=3136, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_tokenizer")
    ids = tt.save_tiny_tokenizer(out, vocab_size=256, image_config=IMAGE_CONFIG)
    return out, ids, AutoTokenizer.from_pretrained(out)


def test_ids_and_size(saved):
    _, ids, tokenizer = saved
    assert ids["vocab_size"] == len(tokenizer) <= 256
    expected = {
        "bos_token_id": tt.ENDOFTEXT,
        "pad_token_id": tt.ENDOFTEXT,
        "eos_token_id": tt.IM_END,
        "im_start_token_id": tt.IM_START,
        "vision_start_token_id": tt.VISION_START,
        "vision_end_token_id": tt.VISION_END,
        "image_token_id": tt.IMAGE_PAD,
        "video_token_id": tt.VIDEO_PAD,
        "unk_token_id": tt.UNK,
    }
    for name, token in expected.items():
        assert tokenizer.convert_tokens_to_ids(token) == ids[name]
        assert tokenizer.decode([ids[name]]) == token
    assert len({ids[name] for name in expected if name != "bos_token_id"}) == len(expected) - 1
    assert tokenizer.eos_token == tt.IM_END and tokenizer.pad_token == tt.ENDOFTEXT
    assert set(tt.SPECIAL_TOKENS) <= set(tokenizer.all_special_tokens)


def test_smaller_budget_and_determinism():
    small = tt.build_tiny_tokenizer(vocab_size=160)
    assert len(small) <= 160
    assert small.get_vocab() == tt.build_tiny_tokenizer(vocab_size=160).get_vocab()
    with pytest.raises(ValueError, match="below the 109 reserved"):
        tt.build_tiny_tokenizer(vocab_size=100)


def test_round_trips(saved):
    _, _, tokenizer = saved
    texts = [
        "<think> there are 3 red shapes </think> \\boxed{3}",
        "<think>\nthe circle is left of the square\n</think>\n<answer>left</answer>",
        "What is $\\frac{1}{2} + 0.25$? answer: 0.75 {}[]()|~`^_@#%&*+=-;:'\",./\\?!\t",
    ]
    for sample in generate_samples(20, seed=1):
        texts += [sample.problem + tt.MATH_INSTRUCTION, sample.reference_response, sample.answer]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tt.UNK not in tokenizer.convert_ids_to_tokens(ids)


def test_grounding_boxes_are_encoded_digit_by_digit(saved):
    """A grounding response round-trips, its numbers in single-digit tokens and its brackets and commas single
    tokens (the grounding family is left out of the merges' corpus)."""
    _, _, tokenizer = saved
    (sample,) = generate_samples(1, seed=0, image_size=70, difficulty_weights=(0, 0, 1), family="grounding")
    text = sample.reference_response.replace(sample.answer, "[7, 19, 105, 56]")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    pieces = [tokenizer.decode([i]) for i in ids]
    answer = pieces[pieces.index("<answer>") + 1 : pieces.index("</answer>")]
    assert answer == ["[", "7", ",", " ", "1", "9", ",", " ", "1", "0", "5", ",", " ", "5", "6", "]"]


def test_tags_are_single_tokens_and_unknown_chars_are_visible(saved):
    _, ids, tokenizer = saved
    for tag in tt.TAG_TOKENS:
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1
    encoded = tokenizer("caf\u00e9", add_special_tokens=False)["input_ids"]
    assert encoded[-1] == ids["unk_token_id"]


def test_chat_template(saved):
    _, ids, tokenizer = saved
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "\\boxed{4}"},
    ]
    assert tokenizer.apply_chat_template(with_system, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n\\boxed{4}<|im_end|>\n"
    )
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert token_ids.count(ids["image_token_id"]) == 1 and token_ids[0] == ids["im_start_token_id"]


def test_saved_files_and_image_processor(saved):
    out, _, _ = saved
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tt.IMAGE_PAD in config["additional_special_tokens"]
    processor = AutoImageProcessor.from_pretrained(out)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 90, 3), dtype=np.uint8))
    expected = processor(images=[image], return_tensors="np")
    pixel_values, grid_thw = preprocess_images([image], IMAGE_CONFIG)
    np.testing.assert_array_equal(grid_thw, expected["image_grid_thw"])
    np.testing.assert_allclose(pixel_values, expected["pixel_values"], rtol=0, atol=1e-6)
    assert grid_thw[0].prod() // 4 == num_image_tokens(150, 90, IMAGE_CONFIG)
