"""A tiny Qwen-style tokenizer (a few hundred tokens) for the CPU demo on the synthetic tasks.

Byte-level BPE over printable ASCII plus tab and newline, trained on the synthetic task texts, the math
prompt and the chat template, with the Qwen special tokens and a Qwen2-VL style chat template. Any
ASCII text round-trips exactly; other characters encode to `<|unk|>`. `<think>`, `</think>`, `<answer>`
and `</answer>` are single (non-special) tokens so a tiny model can learn the format quickly.
`save_tiny_tokenizer` writes a directory `AutoTokenizer.from_pretrained` loads, plus the Qwen2-VL
`preprocessor_config.json`, so `AutoProcessor` loads it once a model `config.json` is added.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, trainers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import PreTrainedTokenizerFast

from shuffle_r1_jax.demo.synthetic import FAMILIES, generate_samples
from shuffle_r1_jax.processing.image import ImagePreprocessConfig
from shuffle_r1_jax.processing.prompts import MATH_INSTRUCTION

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
UNK = "<|unk|>"
# the task families whose texts the merges are learned from. The "grounding" family's are left out: its box
# coordinates would earn merges of some numbers and not others, while without them every number is encoded digit
# by digit (as Qwen2's tokenizer splits numbers) and "[", "," and "]" are single tokens; its question's words are
# spelled with the other families' merges (a few in several pieces), and the other demos' tokenizer stays the same
CORPUS_FAMILIES = ("shapes", "largest_color")
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, UNK)
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)


def _alphabet() -> list[str]:
    """The byte-level symbols of tab, newline and printable ASCII (97 symbols)."""
    to_symbol = ByteLevel(add_prefix_space=False, use_regex=False)
    return [to_symbol.pre_tokenize_str(chr(byte))[0][0] for byte in (9, 10, *range(32, 127))]


def training_corpus(num_samples: int = 400, extra_texts: Iterable[str] = ()) -> list[str]:
    """Texts the BPE merges are learned from.

    Args:
      num_samples: synthetic samples (seed 0, levels in equal shares) of each `CORPUS_FAMILIES` family whose
        prompts (with the math instruction) and reference responses are included.
      extra_texts: more texts, appended.

    Returns:
      The system prompt, chat-role headers, the math instruction, boxed and "answer:" digits, the samples'
      texts, then `extra_texts`.
    """
    texts = [DEFAULT_SYSTEM_PROMPT, "system\n", "user\n", "assistant\n", MATH_INSTRUCTION]
    texts += [f"\\boxed{{{d}}} answer: {d} " for d in range(10)]
    for family in CORPUS_FAMILIES:
        weights = [1] * len(FAMILIES[family])
        for sample in generate_samples(num_samples, seed=0, difficulty_weights=weights, family=family):
            texts += [sample.problem.replace("<image>", "") + MATH_INSTRUCTION, sample.reference_response]
    return texts + list(extra_texts)


def build_tiny_tokenizer(vocab_size: int = 256, extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Trains the tiny tokenizer; `len(tokenizer) <= vocab_size` (special and tag tokens included).

    Deterministic for the same arguments. eos is <|im_end|>, pad is <|endoftext|> (padding on the left,
    for generation), unk is <|unk|>; there is no bos token (as in Qwen).

    Args:
      vocab_size: the most tokens the tokenizer may have.
      extra_texts: texts added to the training corpus (`training_corpus`).

    Returns:
      The tokenizer, with the Qwen2-VL style chat template.

    Raises:
      ValueError: if `vocab_size` is below the reserved special, byte and tag tokens.
    """
    reserved = len(SPECIAL_TOKENS) + len(_alphabet()) + len(TAG_TOKENS)
    if vocab_size < reserved:
        raise ValueError(f"vocab_size {vocab_size} is below the {reserved} reserved special and byte tokens")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, fuse_unk=True))
    tokenizer.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=_alphabet(),
        limit_alphabet=len(_alphabet()),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(extra_texts=extra_texts), trainer)
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=UNK,
        additional_special_tokens=[IM_START, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=32768,
    )


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Ids under the names a Qwen2.5-VL model config uses, plus `vocab_size` (= len(tokenizer))."""
    ids = {
        "bos_token_id": ENDOFTEXT,
        "pad_token_id": ENDOFTEXT,
        "eos_token_id": IM_END,
        "im_start_token_id": IM_START,
        "vision_start_token_id": VISION_START,
        "vision_end_token_id": VISION_END,
        "image_token_id": IMAGE_PAD,
        "video_token_id": VIDEO_PAD,
        "unk_token_id": UNK,
    }
    result = {name: tokenizer.convert_tokens_to_ids(token) for name, token in ids.items()}
    result["vocab_size"] = len(tokenizer)
    return result


def _make_config_portable(path: Path) -> None:
    """Rewrites tokenizer_config.json in the layout both transformers 4.x and 5.x load."""
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(config.get("extra_special_tokens"), list):  # 5.x name; 4.x expects a dict there
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    path.write_text(json.dumps(config, indent=2))


def save_tiny_tokenizer(
    out_dir: str | os.PathLike,
    vocab_size: int = 256,
    image_config: ImagePreprocessConfig = ImagePreprocessConfig(),
    extra_texts: Iterable[str] = (),
) -> dict[str, int]:
    """Builds the tiny tokenizer, saves it (save_pretrained) and preprocessor_config.json to out_dir.

    tokenizer_config.json is rewritten in the layout both transformers 4.x and 5.x load.

    Args:
      out_dir: the output directory (created if missing).
      vocab_size: the tokenizer's budget (`build_tiny_tokenizer`).
      image_config: written as preprocessor_config.json.
      extra_texts: texts added to the tokenizer's training corpus.

    Returns:
      `special_token_ids` of the saved tokenizer: bos/pad/eos/im_start/vision_start/vision_end/
      image/video/unk token ids and vocab_size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(vocab_size, extra_texts)
    tokenizer.save_pretrained(out)
    _make_config_portable(out / "tokenizer_config.json")
    with open(out / "preprocessor_config.json", "w") as f:
        json.dump(image_config.hf_preprocessor_config(), f, indent=2)
    return special_token_ids(tokenizer)
