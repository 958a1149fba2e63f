"""Qwen2.5-VL configuration, read from a Hugging Face `config.json` in any of its three layouts.

Layouts accepted:
  * hub files (flat): text fields and `rope_scaling` at the root, vision fields under `vision_config`;
  * transformers 4.x `save_pretrained`: text fields under `text_config` with `rope_scaling`;
  * transformers 5.x `save_pretrained`: text fields under `text_config` with `rope_parameters`.
Unknown model types, missing required fields and inconsistent values raise `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping


class ConfigError(ValueError):
    """A Qwen2.5-VL config value is missing, unknown or inconsistent; the message names the key."""


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower's hyper-parameters (names follow the HF `vision_config`).

    Attributes:
      depth: number of vision blocks.
      hidden_size: width D of the vision blocks.
      intermediate_size: hidden width of each block's SwiGLU MLP.
      num_heads: attention heads per block.
      in_channels: image channels.
      patch_size: patch side in pixels.
      spatial_merge_size: side, in patches, of the square of patches merged into one language-model token.
      temporal_patch_size: frames per patch.
      window_size: side of a window-attention window in pixels.
      out_hidden_size: width of the merged tokens; must equal the text `hidden_size`.
      fullatt_block_indexes: blocks that attend over the whole image (or video temporal patch); the others attend
        within windows.
      tokens_per_second: the video time scale: a temporal patch spanning s seconds advances the temporal M-RoPE
        position by tokens_per_second * s (`layout.video_time_steps`).
      rope_theta: base of the 2D rotary embedding.
      rms_norm_eps: epsilon of the vision RMSNorms.
    """

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int = 112
    out_hidden_size: int = 2048
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    tokens_per_second: int = 2
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        """Width of one attention head: hidden_size / num_heads."""
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch row: channels * frames * patch * patch (1176 for the real model)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size

    @property
    def merge_unit(self) -> int:
        """Patches merged into one language-model token (4 for the real model)."""
        return self.spatial_merge_size**2

    @property
    def window_merged(self) -> int:
        """Side of an attention window in merged tokens: window_size / (merge * patch) (4 for the real model)."""
        return self.window_size // (self.spatial_merge_size * self.patch_size)

    @property
    def window_patches(self) -> int:
        """Patches in one full attention window (64 for the real model)."""
        return self.window_merged**2 * self.merge_unit


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen2 text decoder's hyper-parameters (names follow the HF `text_config`).

    Attributes:
      vocab_size: rows of the embedding table (and of the logits).
      hidden_size: width H of the decoder.
      intermediate_size: hidden width of each layer's SwiGLU MLP.
      num_hidden_layers: number of decoder layers.
      num_attention_heads: query heads per layer.
      num_key_value_heads: key/value heads per layer (grouped-query attention); divides the query heads.
      head_dim: width of one attention head; 2 * sum(mrope_section).
      rms_norm_eps: epsilon of the decoder RMSNorms.
      rope_theta: base of the M-RoPE frequencies.
      mrope_section: how many of the head_dim / 2 rotary frequencies follow the temporal, height and width
        position rows, in that order.
      max_position_embeddings: the HF field, read from and written to config.json.
    """

    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    max_position_embeddings: int = 128000


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
    """The whole model: text decoder, vision tower, special token ids and embedding tying.

    Construction runs `validate`, so an inconsistent config raises `ConfigError`.

    Attributes:
      text: the text decoder's hyper-parameters.
      vision: the vision tower's hyper-parameters.
      tie_word_embeddings: whether the output projection reuses the embedding table (no separate `lm_head`).
      image_token_id: the image placeholder token; each one takes the features of one merged image token.
      video_token_id: the video placeholder token; each one takes the features of one merged video token.
      vision_start_token_id: the token that opens a vision span.
      vision_end_token_id: the token that closes a vision span.
      bos_token_id: beginning-of-sequence token id.
      eos_token_id: end-of-sequence token id.
    """

    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    tie_word_embeddings: bool = True
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    bos_token_id: int = 151643
    eos_token_id: int = 151645

    def __post_init__(self):
        validate(self)


_MODEL_TYPES = ("qwen2_5_vl",)
_ACTIVATIONS = ("silu",)


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"config.json: missing required field '{where}{key}'")
    return mapping[key]


def _rope_fields(text: Mapping[str, Any], where: str) -> tuple[float, tuple[int, ...]]:
    """(rope_theta, mrope_section) from `rope_parameters` (5.x) or `rope_scaling` (hub, 4.x); ConfigError if absent."""
    rope = text.get("rope_parameters") or text.get("rope_scaling")
    if not rope:
        raise ConfigError(
            f"config.json: '{where}rope_scaling' / '{where}rope_parameters' is missing; Qwen2.5-VL needs an "
            "mrope_section"
        )
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "mrope"):
        raise ConfigError(f"config.json: '{where}rope type' = {rope_type!r} is not supported (only 'default'/'mrope')")
    if "mrope_section" not in rope:
        raise ConfigError(f"config.json: '{where}rope_scaling.mrope_section' is missing")
    theta = rope.get("rope_theta", text.get("rope_theta", 1000000.0))
    return float(theta), tuple(int(s) for s in rope["mrope_section"])


def _text_config(raw: Mapping[str, Any]) -> tuple[TextConfig, Mapping[str, Any]]:
    text = raw.get("text_config") or raw
    where = "text_config." if "text_config" in raw and raw["text_config"] else ""
    if text.get("use_sliding_window", False):
        raise ConfigError(f"config.json: '{where}use_sliding_window' = true is not supported")
    act = text.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise ConfigError(f"config.json: '{where}hidden_act' = {act!r} is not supported (expected 'silu')")
    heads = int(_require(text, "num_attention_heads", where))
    hidden = int(_require(text, "hidden_size", where))
    theta, section = _rope_fields(text, where)
    cfg = TextConfig(
        vocab_size=int(_require(text, "vocab_size", where)),
        hidden_size=hidden,
        intermediate_size=int(_require(text, "intermediate_size", where)),
        num_hidden_layers=int(_require(text, "num_hidden_layers", where)),
        num_attention_heads=heads,
        num_key_value_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        mrope_section=section,
        max_position_embeddings=int(text.get("max_position_embeddings", 128000)),
    )
    return cfg, text


def _vision_config(raw: Mapping[str, Any], out_hidden_default: int) -> VisionConfig:
    vision = _require(raw, "vision_config", "")
    where = "vision_config."
    act = vision.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise ConfigError(f"config.json: '{where}hidden_act' = {act!r} is not supported (expected 'silu')")
    rope = vision.get("rope_parameters") or {}
    return VisionConfig(
        depth=int(_require(vision, "depth", where)),
        hidden_size=int(_require(vision, "hidden_size", where)),
        intermediate_size=int(_require(vision, "intermediate_size", where)),
        num_heads=int(_require(vision, "num_heads", where)),
        in_channels=int(vision.get("in_channels", vision.get("in_chans", 3))),
        patch_size=int(vision.get("patch_size", 14)),
        spatial_merge_size=int(vision.get("spatial_merge_size", 2)),
        temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
        window_size=int(vision.get("window_size", 112)),
        out_hidden_size=int(vision.get("out_hidden_size", out_hidden_default)),
        fullatt_block_indexes=tuple(int(i) for i in vision.get("fullatt_block_indexes", (7, 15, 23, 31))),
        tokens_per_second=int(vision.get("tokens_per_second", 2)),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
    )


def config_from_dict(raw: Mapping[str, Any]) -> Qwen25VLConfig:
    """Builds a `Qwen25VLConfig` from a parsed HF config.json (any of the three layouts).

    Args:
      raw: the parsed config.json.

    Returns:
      The config. A special token id missing from the file takes the Qwen2.5-VL default, a list-valued one its
      first entry; `tie_word_embeddings` is False when absent.

    Raises:
      ConfigError: naming the key when `model_type` is not `qwen2_5_vl`, a required field is missing, a value is
        unsupported (`hidden_act` other than silu, sliding-window attention, a rope type other than
        default/mrope) or the values are inconsistent (see `validate`).
    """
    model_type = raw.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ConfigError(
            f"config.json: 'model_type' = {model_type!r} is not supported; expected one of {_MODEL_TYPES}"
        )
    text, text_raw = _text_config(raw)
    vision = _vision_config(raw, text.hidden_size)
    tie = raw.get("tie_word_embeddings", text_raw.get("tie_word_embeddings", False))

    def token_id(key: str, default: int) -> int:
        value = raw.get(key, text_raw.get(key, default))
        if isinstance(value, (list, tuple)):
            value = value[0]
        return int(default if value is None else value)

    return Qwen25VLConfig(
        text=text,
        vision=vision,
        tie_word_embeddings=bool(tie),
        image_token_id=token_id("image_token_id", 151655),
        video_token_id=token_id("video_token_id", 151656),
        vision_start_token_id=token_id("vision_start_token_id", 151652),
        vision_end_token_id=token_id("vision_end_token_id", 151653),
        bos_token_id=token_id("bos_token_id", 151643),
        eos_token_id=token_id("eos_token_id", 151645),
    )


def load_config(path: str | os.PathLike) -> Qwen25VLConfig:
    """Reads `config.json` from a checkpoint directory (or the file itself).

    Args:
      path: a checkpoint directory holding config.json, or the path of the file.

    Returns:
      The parsed `Qwen25VLConfig`.

    Raises:
      FileNotFoundError: when there is no config.json at `path`.
      ConfigError: when the file is not valid JSON or its values are rejected by `config_from_dict`.
    """
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise FileNotFoundError(f"no config.json at {file!r}")
    with open(file) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{file}: not valid JSON ({e})") from e
    return config_from_dict(raw)


def validate(cfg: Qwen25VLConfig) -> None:
    """Checks that the values of `cfg` are consistent with each other.

    Raises:
      ConfigError: naming the field when mrope_section does not have 3 entries summing to head_dim / 2, the
        query heads are not a multiple of the key/value heads, the vision width does not split into its heads
        (or the vision head_dim is not a multiple of 4), window_size is not a positive multiple of
        spatial_merge_size * patch_size, a full-attention block index is outside [0, depth), out_hidden_size
        differs from the text hidden_size, or an image/video/vision start/end token id is outside the vocabulary.
    """
    t, v = cfg.text, cfg.vision
    if sum(t.mrope_section) * 2 != t.head_dim:
        raise ConfigError(
            f"text_config.mrope_section = {list(t.mrope_section)} sums to {sum(t.mrope_section)}, "
            f"but must be head_dim/2 = {t.head_dim // 2}"
        )
    if len(t.mrope_section) != 3:
        raise ConfigError(f"text_config.mrope_section = {list(t.mrope_section)} must have 3 entries (t, h, w)")
    if t.num_attention_heads % t.num_key_value_heads:
        raise ConfigError(
            f"text_config.num_attention_heads = {t.num_attention_heads} is not a multiple of "
            f"num_key_value_heads = {t.num_key_value_heads}"
        )
    if v.hidden_size % v.num_heads:
        raise ConfigError(f"vision_config.hidden_size = {v.hidden_size} is not divisible by num_heads = {v.num_heads}")
    if v.head_dim % 4:
        raise ConfigError(f"vision head_dim = {v.head_dim} must be divisible by 4 (2D rotary on rows and columns)")
    if v.window_size % (v.spatial_merge_size * v.patch_size) or v.window_merged < 1:
        raise ConfigError(
            f"vision_config.window_size = {v.window_size} must be a positive multiple of "
            f"spatial_merge_size * patch_size = {v.spatial_merge_size * v.patch_size}"
        )
    bad = [i for i in v.fullatt_block_indexes if not 0 <= i < v.depth]
    if bad:
        raise ConfigError(f"vision_config.fullatt_block_indexes = {bad} outside [0, depth={v.depth})")
    if v.out_hidden_size != t.hidden_size:
        raise ConfigError(
            f"vision_config.out_hidden_size = {v.out_hidden_size} must equal text hidden_size = {t.hidden_size}"
        )
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        value = getattr(cfg, name)
        if not 0 <= value < t.vocab_size:
            raise ConfigError(f"{name} = {value} is outside the vocabulary [0, {t.vocab_size})")


def _hub_size(
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    *,
    vocab: int = 152064,
    tied: bool = False,
    vision_intermediate: int = 3420,
) -> Qwen25VLConfig:
    """A released size: its decoder dimensions (head width 128, the defaults' rope and norms) behind the 32-block
    vision tower, whose merger outputs the decoder width."""
    return Qwen25VLConfig(
        text=TextConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=128,
        ),
        vision=VisionConfig(intermediate_size=vision_intermediate, out_hidden_size=hidden),
        tie_word_embeddings=tied,
    )


def qwen2_5_vl_3b_config() -> Qwen25VLConfig:
    """The dimensions of Qwen/Qwen2.5-VL-3B-Instruct's config.json."""
    return _hub_size(2048, 11008, 36, 16, 2, vocab=151936, tied=True)


def qwen2_5_vl_7b_config() -> Qwen25VLConfig:
    """The dimensions of Qwen/Qwen2.5-VL-7B-Instruct's config.json."""
    return _hub_size(3584, 18944, 28, 28, 4)


def qwen2_5_vl_32b_config() -> Qwen25VLConfig:
    """The dimensions of Qwen/Qwen2.5-VL-32B-Instruct's config.json: the Qwen2.5-32B decoder (64 layers, 40 query
    and 8 key/value heads); the vision tower's MLP is 3456 wide at this size."""
    return _hub_size(5120, 27648, 64, 40, 8, vision_intermediate=3456)


def qwen2_5_vl_72b_config() -> Qwen25VLConfig:
    """The dimensions of Qwen/Qwen2.5-VL-72B-Instruct's config.json: the Qwen2.5-72B decoder (80 layers, 64 query
    and 8 key/value heads); the vision tower's MLP is 3456 wide at this size."""
    return _hub_size(8192, 29568, 80, 64, 8, vision_intermediate=3456)


HUB_CONFIGS = {
    "Qwen/Qwen2.5-VL-3B-Instruct": qwen2_5_vl_3b_config,
    "Qwen/Qwen2.5-VL-7B-Instruct": qwen2_5_vl_7b_config,
    "Qwen/Qwen2.5-VL-32B-Instruct": qwen2_5_vl_32b_config,
    "Qwen/Qwen2.5-VL-72B-Instruct": qwen2_5_vl_72b_config,
}


def config_of_checkpoint(checkpoint: str | os.PathLike) -> Qwen25VLConfig:
    """The model config of `checkpoint`, for planning a run before the weights are downloaded.

    Args:
      checkpoint: a local checkpoint directory (or its config.json), or a hub id listed in `HUB_CONFIGS`.

    Returns:
      The config read from the local config.json when the path exists, else the built-in dimensions of the hub id.

    Raises:
      ConfigError: naming the value when `checkpoint` is neither an existing path nor a known hub id (or when the
        local config.json is rejected).
    """
    if os.path.exists(checkpoint):
        return load_config(checkpoint)
    if str(checkpoint) in HUB_CONFIGS:
        return HUB_CONFIGS[str(checkpoint)]()
    raise ConfigError(
        f"model.checkpoint = {str(checkpoint)!r} is neither a local checkpoint directory nor a known hub id "
        f"({', '.join(HUB_CONFIGS)})"
    )
