"""Prompts: the format around a problem, the chat template, and image- and video-token expansion.

A problem string (EasyR1 layout) holds one `<image>` placeholder per image and one `<video>` per video.
Encoding a problem:
  1. the prompt format wraps it (`math`: the problem, then the spec's instruction to think in <think> tags and
     answer in \\boxed{}; `r1v`: think in <think>, answer in <answer> tags; `step`: R1-VL's sections (image
     description, rationales, numbered steps, the boxed final answer); `none`: the problem unchanged; or a
     template given inline or as a file);
  2. the text is split at the placeholders into a user message of text, image and video parts (images, then
     videos, before the text when the problem has no placeholder of their kind), and the checkpoint's tokenizer
     applies its chat template with the generation prompt; the template renders each image as
     `<|vision_start|><|image_pad|><|vision_end|>` and each video with `<|video_pad|>`;
  3. the images are resized and patchified (`preprocess_images`), the videos' sampled frames likewise
     (`preprocess_video`), and each `<|image_pad|>` / `<|video_pad|>` token is expanded to the item's number of
     merged patches (t * h * w / merge**2 for its grid).

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
from shuffle_r1_jax.processing.video import DecodedVideo, VideoPreprocessConfig, preprocess_video

IMAGE_PLACEHOLDER = "<image>"
IMAGE_PAD_TOKEN = "<|image_pad|>"
VIDEO_PLACEHOLDER = "<video>"
VIDEO_PAD_TOKEN = "<|video_pad|>"
_IMAGE_PLACEHOLDERS = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)})")
_PLACEHOLDERS = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})")
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
      reason: a short key for counting ("image_count_mismatch", "video_count_mismatch", "bad_image",
        "bad_video", "prompt_too_long").
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
        before the template applies, as the official code does (and likewise `<video>` for videos); otherwise
        the images and videos go before the whole text.

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

    def apply(self, problem: str, num_images: int = 0, num_videos: int = 0) -> str:
        """The problem wrapped by the template (`| trim` strips surrounding whitespace first); with
        `placeholders_first`, a problem without `<image>` (`<video>`) placeholders first gets `num_images`
        (`num_videos`) of them in front."""
        if self.placeholders_first:
            front = "" if VIDEO_PLACEHOLDER in problem else (VIDEO_PLACEHOLDER + " ") * num_videos
            if IMAGE_PLACEHOLDER not in problem:
                front = (IMAGE_PLACEHOLDER + " ") * num_images + front
            problem = front + problem
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


def chat_messages(
    text: str, num_images: int, system_prompt: str | None = None, num_videos: int | None = None
) -> list[dict]:
    """The chat messages of one prompt: an optional system message and a user message of text/image/video parts.

    The text is split at `<image>` and, when the record has a videos value, at `<video>`; a kind with no
    placeholder puts its items first (images, then videos), before the text.

    Args:
      text: the formatted problem.
      num_images: the record's number of images.
      system_prompt: the system message's content (None = no system message).
      num_videos: the record's number of videos; None when it has no videos value (a dataset without a videos
        column), so a literal `<video>` stays text.

    Returns:
      The messages, in the layout `apply_chat_template` takes.

    Raises:
      PromptError: "image_count_mismatch" / "video_count_mismatch", the placeholders and items of a kind differ
        in number.
    """
    kinds = [("image", IMAGE_PLACEHOLDER, num_images)]
    if num_videos is not None:
        kinds.append(("video", VIDEO_PLACEHOLDER, num_videos))
    pieces = (_PLACEHOLDERS if num_videos is not None else _IMAGE_PLACEHOLDERS).split(text)
    front: list[dict] = []
    for kind, placeholder, count in kinds:
        found = pieces.count(placeholder)
        if found == 0:
            front += [{"type": kind}] * count
        elif found != count:
            raise PromptError(
                f"{kind}_count_mismatch",
                f"the problem has {found} '{placeholder}' placeholders but the record has {count} {kind}s",
            )
    content = list(front)
    for piece in pieces:
        if piece in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER):
            content.append({"type": "image" if piece == IMAGE_PLACEHOLDER else "video"})
        elif piece:
            content.append({"type": "text", "text": piece})
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return messages + [{"role": "user", "content": content}]


def expand_vision_tokens(
    input_ids: np.ndarray, token_id: int, tokens_per_item: Sequence[int], kind: str = "image"
) -> np.ndarray:
    """Repeats the i-th `token_id` token of `input_ids` tokens_per_item[i] times.

    Args:
      input_ids: `int[L]` templated prompt tokens, one placeholder token per image (or video).
      token_id: the model's image (`<|image_pad|>`) or video (`<|video_pad|>`) token id.
      tokens_per_item: merged patches per image (or video), in order.
      kind: "image" or "video", for the error.

    Returns:
      `int32[L - len(tokens_per_item) + sum(tokens_per_item)]`.

    Raises:
      PromptError: "<kind>_count_mismatch", the number of placeholder tokens is not len(tokens_per_item).
    """
    input_ids = np.asarray(input_ids, np.int32)
    is_item = input_ids == token_id
    if int(is_item.sum()) != len(tokens_per_item):
        pad = IMAGE_PAD_TOKEN if kind == "image" else VIDEO_PAD_TOKEN
        raise PromptError(
            f"{kind}_count_mismatch",
            f"the templated prompt has {int(is_item.sum())} {kind} tokens (id {token_id}) for "
            f"{len(tokens_per_item)} {kind}s (does the problem text contain '{pad}', or does the chat "
            f"template not render {kind} parts?)",
        )
    repeats = np.ones(input_ids.shape, np.int64)
    repeats[is_item] = tokens_per_item
    return np.repeat(input_ids, repeats)


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
    """One prompt ready for batching.

    Attributes:
      input_ids: `int32[L]`, image and video tokens expanded.
      pixel_values: `float32[patches, patch_dim]`, the images' patches concatenated.
      image_grid_thw: `int64[images, 3]`.
      pixel_values_videos: `float32[patches, patch_dim]`, the videos' patches concatenated.
      video_grid_thw: `int64[videos, 3]`.
      second_per_grid_ts: `float32[videos]` seconds one temporal patch of each video spans.
    """

    input_ids: np.ndarray
    pixel_values: np.ndarray
    image_grid_thw: np.ndarray
    pixel_values_videos: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.float32))
    video_grid_thw: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3), np.int64))
    second_per_grid_ts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))


class PromptEncoder:
    """Turns (problem, images, videos) into an `EncodedPrompt` with a checkpoint's tokenizer and chat template.

    Thread-safe: tokenization is serialised by a lock (image and video work runs in parallel), so a data pipeline
    can call `encode` from several threads.
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
        video_token_id: int | None = None,
        video_config: VideoPreprocessConfig = VideoPreprocessConfig(),
    ):
        """Checks that tokenizer and model belong together.

        Args:
          tokenizer: a transformers tokenizer with a chat template and a pad token.
          image_token_id: the model's image token id; the tokenizer must map `<|image_pad|>` to it.
          prompt_format: a `PromptFormat` or a spec for `load_prompt_format`.
          image_config: the image preprocessing settings (also the patch settings of video frames).
          max_prompt_length: the most tokens a prompt may have after image and video expansion.
          system_prompt: the content of a system message (None = no system message).
          overlong: a prompt over max_prompt_length tokens is "skip"ped (`encode` raises) or "truncate_right":
            cut to its first max_prompt_length tokens, as the official Shuffle-R1 dataset does (a cut that would
            drop an image or video token is still an error: the features would not match).
          video_token_id: the model's video token id; the tokenizer must map `<|video_pad|>` to it. None: the
            encoder takes no videos.
          video_config: the video frame sampling and sizing settings.

        Raises:
          ValueError: the tokenizer has no chat template or no pad token, maps `<|image_pad|>` (`<|video_pad|>`)
            to another id, max_prompt_length is not positive, or `overlong` is not one of `OVERLONG_PROMPTS`.
        """
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token_id)
        self.prompt_format = load_prompt_format(prompt_format) if isinstance(prompt_format, str) else prompt_format
        self.image_config = image_config
        self.video_token_id = None if video_token_id is None else int(video_token_id)
        self.video_config = video_config
        self.max_prompt_length = int(max_prompt_length)
        self.system_prompt = system_prompt
        self._lock = threading.Lock()
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "the tokenizer has no chat_template; prompts need one (tokenizer_config / chat_template.jinja)"
            )
        for name, token, expected in (
            ("image_token_id", IMAGE_PAD_TOKEN, self.image_token_id),
            ("video_token_id", VIDEO_PAD_TOKEN, self.video_token_id),
        ):
            pad_id = tokenizer.convert_tokens_to_ids(token)
            if expected is not None and pad_id != expected:
                raise ValueError(
                    f"the tokenizer maps {token} to id {pad_id}, but the model's {name} is {expected}: tokenizer "
                    "and checkpoint do not belong together"
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
        """An encoder with a checkpoint's tokenizer, image and video token ids and image settings.

        Args:
          checkpoint_dir: the checkpoint directory; the tokenizer comes from `AutoTokenizer.from_pretrained`,
            the image and video token ids from config.json.
          image_config: the image settings (default: the checkpoint's preprocessor_config.json).
          **kwargs: the other arguments of the constructor.
        """
        if image_config is None:
            image_config = load_image_config(checkpoint_dir)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        config = load_config(checkpoint_dir)
        kwargs.setdefault("video_token_id", config.video_token_id)
        return cls(tokenizer, config.image_token_id, image_config=image_config, **kwargs)

    def prompt_text(self, problem: str, num_images: int, num_videos: int | None = None) -> str:
        """The chat-templated prompt text (one `<|image_pad|>` per image and `<|video_pad|>` per video, generation
        prompt appended); `num_videos` None: the record has no videos value (see `chat_messages`)."""
        text = self.prompt_format.apply(problem, num_images, num_videos or 0)
        messages = chat_messages(text, num_images, self.system_prompt, num_videos)
        with self._lock:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(
        self, problem: str, images: Sequence[Image.Image], videos: Sequence[DecodedVideo] | None = None
    ) -> EncodedPrompt:
        """Encodes one prompt: format, chat template, image and video preprocessing, token expansion.

        Args:
          problem: the problem text, with one `<image>` placeholder per image and `<video>` per video (or none).
          images: the decoded images, in order.
          videos: the decoded (sampled) videos, in order; None for a record without a videos value (a literal
            `<video>` in the problem stays text).

        Returns:
          The `EncodedPrompt`.

        Raises:
          PromptError: reason "image_count_mismatch" / "video_count_mismatch", "bad_image" (an image cannot be
            resized, e.g. aspect ratio over 200), "bad_video" (likewise for a video's frames, or the encoder
            takes no videos) or "prompt_too_long" (over max_prompt_length tokens, unless `overlong` cuts it
            without losing an image or video token).
        """
        text = self.prompt_text(problem, len(images), None if videos is None else len(videos))
        videos = videos or ()
        try:
            pixel_values, grid = preprocess_images(images, self.image_config)
        except ValueError as err:
            raise PromptError("bad_image", f"image preprocessing failed: {err}") from err
        if videos and self.video_token_id is None:
            raise PromptError("bad_video", "this encoder takes no videos (no video_token_id was given)")
        try:
            clips = [preprocess_video(v.frames, v.sample_fps, self.video_config, self.image_config) for v in videos]
        except ValueError as err:
            raise PromptError("bad_video", f"video preprocessing failed: {err}") from err
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        merge = self.image_config.merge_size**2
        input_ids = expand_vision_tokens(np.asarray(ids), self.image_token_id, [int(g.prod()) // merge for g in grid])
        if self.video_token_id is not None:  # also counts a literal <|video_pad|> in a prompt without videos
            tokens = [int(np.prod(c.grid_thw)) // merge for c in clips]
            input_ids = expand_vision_tokens(input_ids, self.video_token_id, tokens, "video")
        if len(input_ids) > self.max_prompt_length:
            cut = input_ids[: self.max_prompt_length]
            vision = [t for t in (self.image_token_id, self.video_token_id) if t is not None]
            if self.overlong == "skip" or np.isin(input_ids[self.max_prompt_length :], vision).any():
                raise PromptError(
                    "prompt_too_long",
                    f"the prompt has {len(input_ids)} tokens after image and video expansion, over "
                    f"max_prompt_length = {self.max_prompt_length}"
                    + ("" if self.overlong == "skip" else " (a cut would drop image or video tokens)"),
                )
            input_ids = cut
        if not clips:
            return EncodedPrompt(input_ids, pixel_values, grid)
        return EncodedPrompt(
            input_ids,
            pixel_values,
            grid,
            pixel_values_videos=np.concatenate([c.pixel_values for c in clips]),
            video_grid_thw=np.asarray([c.grid_thw for c in clips], np.int64),
            second_per_grid_ts=np.asarray([c.second_per_grid_t for c in clips], np.float32),
        )
