"""Span rewards on response tokens: the token completing a span's last character, with multi-byte characters split
over byte-level and byte-fallback tokens, through the offsets and the prefix search."""

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from shuffle_r1_jax.demo.tiny_tokenizer import build_tiny_tokenizer
from shuffle_r1_jax.rollout.token_rewards import char_token_positions, span_token_rewards

TEXT = "ok 你好 😀 x世 naïve!"
CORPUS = ["hello world 你好世界 😀 naïve café", "数学 答案 是 42 🎉🎉 你好", "the answer is 7, ok"] * 20


@pytest.fixture(scope="module")
def byte_level():
    """A Qwen-like byte-level BPE: its merges join some multi-byte characters, others stay split over byte tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|im_end|>"]
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>")


@pytest.fixture(scope="module")
def byte_fallback():
    """A Llama-like SentencePiece BPE with byte fallback: characters outside its vocabulary are <0xXX> tokens."""
    merged = ["▁h", "▁he", "▁hel", "▁hell", "▁hello", "ok"]
    symbols = ["</s>", *(f"<0x{b:02X}>" for b in range(256)), *"abcdefghijklmnopqrstuvwxyz▁!", *merged]
    merges = [("▁", "h"), ("▁h", "e"), ("▁he", "l"), ("▁hel", "l"), ("▁hell", "o"), ("o", "k")]
    tokenizer = Tokenizer(models.BPE({s: i for i, s in enumerate(symbols)}, merges, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>")


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _byte_reference(tokenizer, ids, text):
    """For byte-level BPE each character of a token's string is one byte: character c's token is the one holding
    byte len(text[:c + 1].encode()) - 1 of the concatenated tokens (special tokens hold none)."""
    special = set(tokenizer.all_special_ids)
    sizes = [0 if i in special else len(tokenizer.convert_ids_to_tokens(i)) for i in ids]
    ends = np.cumsum(sizes)
    return [int(np.searchsorted(ends, len(text[: c + 1].encode("utf-8")) - 1, side="right")) for c in range(len(text))]


def test_byte_level_bpe_maps_every_character_to_the_byte_token_that_completes_it(byte_level):
    """Canonical ids (the offsets) and the same text sampled byte by byte with special tokens in between (re-encoding
    does not reproduce them: the prefix search) both agree with the byte count."""
    canonical = _ids(byte_level, TEXT)
    assert len(canonical) < len(TEXT.encode()) and byte_level.decode(canonical) == TEXT
    bytewise = _split_to_bytes(byte_level, canonical)
    eos = byte_level.eos_token_id
    sampled = [eos, *bytewise[:5], eos, *bytewise[5:], eos]
    assert byte_level.decode(sampled, skip_special_tokens=True) == TEXT
    for ids in (canonical, sampled):
        positions = char_token_positions(byte_level, np.asarray(ids), TEXT, range(len(TEXT)))
        assert positions.tolist() == _byte_reference(byte_level, ids, TEXT)
    # the emoji (4 bytes) ends on its fourth byte token in the byte-by-byte sampling
    emoji = TEXT.index("😀")
    at = char_token_positions(byte_level, np.asarray(sampled), TEXT, [emoji])[0]
    assert byte_level.decode(sampled[: at + 1], skip_special_tokens=True).endswith("😀")
    assert not byte_level.decode(sampled[:at], skip_special_tokens=True).endswith("😀")


def _split_to_bytes(tokenizer, ids):
    """The same text as `ids` with every byte its own token (a tokenization the model may sample)."""
    return [tokenizer.convert_tokens_to_ids(symbol) for i in ids for symbol in tokenizer.convert_ids_to_tokens(i)]


def test_byte_fallback_characters_end_on_their_last_byte_token(byte_fallback):
    text = "ok 你好 😀 hello"
    ids = _ids(byte_fallback, text)
    assert byte_fallback.decode(ids, skip_special_tokens=True) == text
    last_bytes = {"你": "<0xA0>", "好": "<0xBD>", "😀": "<0x80>"}  # E4 BD A0, E5 A5 BD, F0 9F 98 80
    chars = [text.index(ch) for ch in last_bytes]
    tokens = byte_fallback.convert_ids_to_tokens(
        [ids[j] for j in char_token_positions(byte_fallback, ids, text, chars)]
    )
    assert tokens == list(last_bytes.values())
    # every character: the offsets agree with the prefix search on "hello" sampled letter by letter (re-encoding
    # gives "▁hello" back, not these ids)
    hello = ids.index(byte_fallback.convert_tokens_to_ids("▁hello"))
    spelled = [*ids[:hello], *byte_fallback.convert_tokens_to_ids(list("▁hello")), *ids[hello + 1 :]]
    assert byte_fallback.decode(spelled, skip_special_tokens=True) == text and _ids(byte_fallback, text) != spelled
    everything = range(len(text))
    by_offsets = char_token_positions(byte_fallback, np.asarray(ids), text, everything)
    by_prefixes = char_token_positions(byte_fallback, np.asarray(spelled), text, everything)
    np.testing.assert_array_equal(by_prefixes[: text.index("hello")], by_offsets[: text.index("hello")])
    np.testing.assert_array_equal(by_prefixes[text.index("hello") :], hello + np.arange(1, 6))


def test_tiny_tokenizer_spans_land_on_tokens_and_add_up():
    """The demo tokenizer (ASCII, `<think>` a single token): two rows, padding and a special token in the mask, two
    spans ending on the same token add up, a row without spans is all zero."""
    tokenizer = build_tiny_tokenizer()
    text = "<think>hi</think> 42"
    ids = _ids(tokenizer, text)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    length = len(ids) + 3
    tokens = np.zeros((2, length), np.int32)
    mask = np.zeros((2, length), np.int32)
    tokens[0, : len(ids) + 1] = [*ids, im_end]
    mask[0, : len(ids) + 1] = 1
    tokens[1, :2], mask[1, :2] = ids[:2], 1
    responses = tokenizer.batch_decode([t[m > 0].tolist() for t, m in zip(tokens, mask)], skip_special_tokens=True)
    assert responses[0] == text
    think_end = text.index("</think>") + len("</think>")
    spans = [((0, think_end, 0.5), (7, think_end, 0.25), (len(text) - 1, len(text), -1.0)), None]
    rewards = span_token_rewards(tokenizer, tokens, mask, responses, spans)
    assert rewards.dtype == np.float32 and rewards.shape == (2, length)
    think_token = ids.index(tokenizer.convert_tokens_to_ids("</think>"))
    expected = np.zeros((2, length), np.float32)
    expected[0, think_token] = 0.75
    expected[0, len(ids) - 1] = -1.0  # the last text token, not <|im_end|>
    np.testing.assert_array_equal(rewards, expected)
