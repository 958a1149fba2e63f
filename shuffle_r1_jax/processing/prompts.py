"""Prompts: the format around a problem, the chat template, and image-token expansion.

A problem string (EasyR1 layout) holds one `<image>` placeholder per image. Encoding a problem:
  1. the prompt format wraps it (`math`: the problem, then the spec's instruction to think in <think> tags and
     answer in \\boxed{}; `r1v`: think in <think>, answer in <answer> tags; `step`: R1-VL's sections (image
     description, rationales, numbered steps, the boxed final answer); `none`: the problem unchanged; or a
     template given inline or as a file);
  2. the text is split at the placeholders into a user message of text and image parts (images before the text
     when the problem has no placeholder), and the checkpoint's tokenizer applies its chat template with the
     generation prompt; the template renders each image as `<|vision_start|><|image_pad|><|vision_end|>`;
  3. the images are resized and patchified (`preprocess_images`) and each `<|image_pad|>` token is expanded to
     the image's number of merged patches (t * h * w / merge**2 for its grid).

Templates use EasyR1's placeholder syntax: `{{ content }}` or `{{ content | trim }}`, exactly once, and no
other template syntax; a file holding such a template (for example EasyR1's math.jinja) works unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoTokenizer

from shuffle_r1_jax.models.qwen2_5_vl.config import load_config
from shuffle_r1_jax.processing.image import ImagePreprocessConfig, load_image_config, preprocess_images

IMAGE_PLACEHOLDER = "<image>"
IMAGE_PAD_TOKEN = "<|image_pad|>"
OVERLONG_PROMPTS = ("skip", "truncate_right")  # what `PromptEncoder.encode` does with a prompt over the limit

MATH_INSTRUCTION = (
    " You FIRST think about the reasoning process as an internal monologue and then provide the final "
    "answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE "
    "put in \\boxed{}."
)
R1V_INSTRUCTION = (
    " Reason about the question step by step before answering. Write the reasoning inside <think> </think> "
    "tags, then give only the final answer inside <answer> </answer> tags, as in "
    "<think> reasoning </think> <answer> answer </answer>."
)

STEP_INSTRUCTION = (
    " Answer in this structure: first describe the image after '### Image Description:', then give the rationale "
    "after '### Rationales:', then reason in numbered steps, each after its own '### Step 1:', '### Step 2:', ..., "
    "and finally write '### The final answer is:' followed by the answer in \\boxed{}."
)
_PLACEHOLDER = re.compile(r"\{\{\s*content\s*(\|\s*trim\s*)?\}\}")
_OTHER_SYNTAX = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")

BUILTIN_FORMATS = {
    "math": "{{ content | trim }}" + MATH_INSTRUCTION,
    "r1v": "{{ content | trim }}" + R1V_INSTRUCTION,
    "none": "{{ content }}",
    "step": "{{ content | trim }}" + STEP_INSTRUCTION,  # R1-VL's StepGRPO layout, what the step_grpo reward reads
    # the official Shuffle-R1 runs: the instruction (its examples' SYSTEM_PROMPT as their command line parses it)
    # before the problem in the user turn, the image placeholder added in front of a problem that has none
    "math_official": MATH_INSTRUCTION.strip() + " {{ content }}",
}
PLACEHOLDERS_FIRST = ("math_official",)


class PromptError(ValueError):
    """A problem cannot become a prompt; the message says why.

    Attributes:
      reason: a short key for counting ("image_count_mismatch", "bad_image", "prompt_too_long").
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    """A named template with one `{{ content }}` / `{{ content | trim }}` placeholder.

    Attributes:
      name: a label for messages (`load_prompt_format` gives the built-in name, the file's path or "inline").
      template: the template text.
      placeholders_first: a problem without `<image>` placeholders gets one per image in front ("<image> " each)
        before the template applies, as the official code does; otherwise the images go before the whole text.

    Raises:
      ValueError: the template does not hold the placeholder exactly once, or holds other template syntax.
    """

    name: str
    template: str
    placeholders_first: bool = False

    def __post_init__(self):
        found = _PLACEHOLDER.findall(self.template)
        if len(found) != 1:
            raise ValueError(
                f"prompt format {self.name!r}: the template must contain the placeholder '{{{{ content }}}}' "
                f"(or '{{{{ content | trim }}}}') exactly once; found {len(found)} in {self.template!r}"
            )
        rest = _PLACEHOLDER.sub("", self.template)
        if _OTHER_SYNTAX.search(rest):
            raise ValueError(
                f"prompt format {self.name!r}: only the content placeholder is supported, but the template has "
                f"other template syntax: {self.template!r}"
            )

    def apply(self, problem: str, num_images: int = 0) -> str:
        """The problem wrapped by the template (`| trim` strips surrounding whitespace first); with
        `placeholders_first`, a problem without placeholders first gets `num_images` of them in front."""
        if self.placeholders_first and IMAGE_PLACEHOLDER not in problem:
            problem = (IMAGE_PLACEHOLDER + " ") * num_images + problem
        return _PLACEHOLDER.sub(lambda m: problem.strip() if m.group(1) else problem, self.template)


def load_prompt_format(spec: str) -> PromptFormat:
    """A prompt format from a config string.

    Args:
      spec: a built-in name ("math", "r1v", "none", "math_official"), an inline template containing the
        placeholder, or a path to a template file (`~` expanded; trailing newlines are dropped), tried in that
        order.

    Returns:
      The `PromptFormat`.

    Raises:
      ValueError: naming the spec, when it is none of these (or the template is invalid).
    """
    if spec in BUILTIN_FORMATS:
        return PromptFormat(spec, BUILTIN_FORMATS[spec], placeholders_first=spec in PLACEHOLDERS_FIRST)
    if _PLACEHOLDER.search(spec):
        return PromptFormat("inline", spec)
    path = Path(os.path.expanduser(spec))
    if path.is_file():
        return PromptFormat(str(path), path.read_text().rstrip("\n"))
    raise ValueError(
        f"prompt format {spec!r} is not a built-in format {sorted(BUILTIN_FORMATS)}, an existing template file, "
        "or an inline template with '{{ content }}'"
    )


def chat_messages(text: str, num_images: int, system_prompt: str | None = None) -> list[dict]:
    """The chat messages of one prompt: an optional system message and a user message of text/image parts.

    The text is split at `<image>`; with no placeholder the images come first.

    Args:
      text: the formatted problem.
      num_images: the record's number of images.
      system_prompt: the system message's content (None = no system message).

    Returns:
      The messages, in the layout `apply_chat_template` takes.

    Raises:
      PromptError: "image_count_mismatch", the placeholders and images differ in number.
    """
    pieces = text.split(IMAGE_PLACEHOLDER)
    placeholders = len(pieces) - 1
    if placeholders == 0:
        pieces = [""] * num_images + [text]
    elif placeholders != num_images:
        raise PromptError(
            "image_count_mismatch",
            f"the problem has {placeholders} '{IMAGE_PLACEHOLDER}' placeholders but the record has {num_images} images",
        )
    content: list[dict] = []
    for i, piece in enumerate(pieces):
        if i > 0:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return messages + [{"role": "user", "content": content}]


def expand_image_tokens(input_ids: np.ndarray, image_token_id: int, tokens_per_image: Sequence[int]) -> np.ndarray:
    """Repeats the i-th image token of `input_ids` tokens_per_image[i] times.

    Args:
      input_ids: `int[L]` templated prompt tokens, one image token per image.
      image_token_id: the model's image token id (`<|image_pad|>`).
      tokens_per_image: merged patches per image, in order.

    Returns:
      `int32[L - len(tokens_per_image) + sum(tokens_per_image)]`.

    Raises:
      PromptError: "image_count_mismatch", the number of image tokens is not len(tokens_per_image).
    """
    input_ids = np.asarray(input_ids, np.int32)
    is_image = input_ids == image_token_id
    if int(is_image.sum()) != len(tokens_per_image):
        raise PromptError(
            "image_count_mismatch",
            f"the templated prompt has {int(is_image.sum())} image tokens (id {image_token_id}) for "
            f"{len(tokens_per_image)} images (does the problem text contain '{IMAGE_PAD_TOKEN}', or does the chat "
            "template not render image parts?)",
        )
    repeats = np.ones(input_ids.shape, np.int64)
    repeats[is_image] = tokens_per_image
    return np.repeat(input_ids, repeats)


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
    """One prompt ready for batching.

    Attributes:
      input_ids: `int32[L]`, image tokens expanded.
      pixel_values: `float32[patches, patch_dim]`, the images' patches concatenated.
      image_grid_thw: `int64[images, 3]`.
    """

    input_ids: np.ndarray
    pixel_values: np.ndarray
    image_grid_thw: np.ndarray


class PromptEncoder:
    """Turns (problem, images) into an `EncodedPrompt` with a checkpoint's tokenizer and chat template.

    Thread-safe: tokenization is serialised by a lock (image work runs in parallel), so a data pipeline can
    call `encode` from several threads.
    """

    def __init__(
        self,
        tokenizer,
        image_token_id: int,
        *,
        prompt_format: PromptFormat | str = "math",
        image_config: ImagePreprocessConfig = ImagePreprocessConfig(),
        max_prompt_length: int = 2048,
        system_prompt: str | None = None,
        overlong: str = "skip",
    ):
        """Checks that tokenizer and model belong together.

        Args:
          tokenizer: a transformers tokenizer with a chat template and a pad token.
          image_token_id: the model's image token id; the tokenizer must map `<|image_pad|>` to it.
          prompt_format: a `PromptFormat` or a spec for `load_prompt_format`.
          image_config: the image preprocessing settings.
          max_prompt_length: the most tokens a prompt may have after image expansion.
          system_prompt: the content of a system message (None = no system message).
          overlong: a prompt over max_prompt_length tokens is "skip"ped (`encode` raises) or "truncate_right":
            cut to its first max_prompt_length tokens, as the official Shuffle-R1 dataset does (a cut that would
            drop an image token is still an error: the image features would not match).

        Raises:
          ValueError: the tokenizer has no chat template or no pad token, maps `<|image_pad|>` to another id,
            max_prompt_length is not positive, or `overlong` is not one of `OVERLONG_PROMPTS`.
        """
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token_id)
        self.prompt_format = load_prompt_format(prompt_format) if isinstance(prompt_format, str) else prompt_format
        self.image_config = image_config
        self.max_prompt_length = int(max_prompt_length)
        self.system_prompt = system_prompt
        self._lock = threading.Lock()
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "the tokenizer has no chat_template; prompts need one (tokenizer_config / chat_template.jinja)"
            )
        pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
        if pad_id != self.image_token_id:
            raise ValueError(
                f"the tokenizer maps {IMAGE_PAD_TOKEN} to id {pad_id}, but the model's image_token_id is "
                f"{self.image_token_id}: tokenizer and checkpoint do not belong together"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; left padding needs one")
        self.pad_token_id = int(tokenizer.pad_token_id)
        if self.max_prompt_length <= 0:
            raise ValueError(f"max_prompt_length = {self.max_prompt_length} must be positive")
        if overlong not in OVERLONG_PROMPTS:
            raise ValueError(f"overlong prompts = {overlong!r}; expected one of {OVERLONG_PROMPTS}")
        self.overlong = overlong

    @classmethod
    def from_checkpoint(
        cls, checkpoint_dir: str | os.PathLike, image_config: ImagePreprocessConfig | None = None, **kwargs
    ) -> "PromptEncoder":
        """An encoder with a checkpoint's tokenizer, image token id and image settings.

        Args:
          checkpoint_dir: the checkpoint directory; the tokenizer comes from `AutoTokenizer.from_pretrained`,
            the image token id from config.json.
          image_config: the image settings (default: the checkpoint's preprocessor_config.json).
          **kwargs: the other arguments of the constructor.
        """
        if image_config is None:
            image_config = load_image_config(checkpoint_dir)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        return cls(tokenizer, load_config(checkpoint_dir).image_token_id, image_config=image_config, **kwargs)

    def prompt_text(self, problem: str, num_images: int) -> str:
        """The chat-templated prompt text (one `<|image_pad|>` per image, generation prompt appended)."""
        messages = chat_messages(self.prompt_format.apply(problem, num_images), num_images, self.system_prompt)
        with self._lock:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, problem: str, images: Sequence[Image.Image]) -> EncodedPrompt:
        """Encodes one prompt: format, chat template, image preprocessing and image-token expansion.

        Args:
          problem: the problem text, with one `<image>` placeholder per image (or none).
          images: the decoded images, in order.

        Returns:
          The `EncodedPrompt`.

        Raises:
          PromptError: reason "image_count_mismatch", "bad_image" (an image cannot be resized, e.g. aspect ratio
            over 200) or "prompt_too_long" (over max_prompt_length tokens, unless `overlong` cuts it without
            losing an image token).
        """
        text = self.prompt_text(problem, len(images))
        try:
            pixel_values, grid = preprocess_images(images, self.image_config)
        except ValueError as err:
            raise PromptError("bad_image", f"image preprocessing failed: {err}") from err
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        merge = self.image_config.merge_size**2
        input_ids = expand_image_tokens(np.asarray(ids), self.image_token_id, [int(g.prod()) // merge for g in grid])
        if len(input_ids) > self.max_prompt_length:
            cut = input_ids[: self.max_prompt_length]
            image_tokens = int(np.sum(input_ids == self.image_token_id))
            if self.overlong == "skip" or int(np.sum(cut == self.image_token_id)) != image_tokens:
                raise PromptError(
                    "prompt_too_long",
                    f"the prompt has {len(input_ids)} tokens after image expansion, over max_prompt_length = "
                    f"{self.max_prompt_length}"
                    + ("" if self.overlong == "skip" else " (a cut would drop image tokens)"),
                )
            input_ids = cut
        return EncodedPrompt(input_ids, pixel_values, grid)
