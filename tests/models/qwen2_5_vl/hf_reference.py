"""Test helpers: tiny random Qwen2.5-VL models in transformers (the parity reference) and matching inputs."""

from __future__ import annotations

import numpy as np
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

TOKENS = dict(
    vision_start_token_id=150,
    vision_end_token_id=151,
    image_token_id=152,
    video_token_id=153,
    bos_token_id=154,
    eos_token_id=155,
)
TEXT_VOCAB = 150  # ordinary text tokens are drawn from [0, TEXT_VOCAB)


def tiny_hf_config(tie_word_embeddings: bool = False, **text_overrides) -> Qwen2_5_VLConfig:
    text = dict(
        vocab_size=160,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        rms_norm_eps=1e-6,
        bos_token_id=TOKENS["bos_token_id"],
        eos_token_id=TOKENS["eos_token_id"],
        tie_word_embeddings=tie_word_embeddings,
    )
    text.update(text_overrides)
    vision = dict(
        depth=4,
        hidden_size=32,
        intermediate_size=48,
        num_heads=2,
        out_hidden_size=text["hidden_size"],
        window_size=56,
        fullatt_block_indexes=[1, 3],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie_word_embeddings, **TOKENS)


def random_hf_model(config: Qwen2_5_VLConfig, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    """An fp32 eager-attention model whose every parameter (biases and norm scales too) is random."""
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = Qwen2_5_VLForConditionalGeneration(config).eval().float()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def video(t: int, h: int, w: int) -> tuple[str, int, int, int]:
    """A video segment for `build_sample`: t temporal patches of an h x w patch grid."""
    return ("video", t, h, w)


def build_sample(rng: np.random.Generator, segments: list) -> list[int]:
    """segments: ints (that many random text tokens), (1, h, w) grids (an image with its start/end tokens) or
    `video(t, h, w)` (a video with its start/end tokens)."""
    ids: list[int] = []
    for seg in segments:
        if isinstance(seg, int):
            ids += rng.integers(0, TEXT_VOCAB, seg).tolist()
            continue
        token = TOKENS["video_token_id"] if seg[0] == "video" else TOKENS["image_token_id"]
        t, h, w = seg[-3:]
        ids += [TOKENS["vision_start_token_id"]] + [token] * (t * h * w // 4) + [TOKENS["vision_end_token_id"]]
    return ids


def pad_batch(samples: list[list[int]], side: str) -> tuple[np.ndarray, np.ndarray]:
    """Pads token lists to one length on the given side ('left' or 'right') with token 0 and mask 0."""
    length = max(len(s) for s in samples)
    ids = np.zeros((len(samples), length), np.int64)
    mask = np.zeros((len(samples), length), np.int64)
    for i, s in enumerate(samples):
        sl = slice(length - len(s), length) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, 1
    return ids, mask


def random_pixels(rng: np.random.Generator, grids: list[tuple[int, int, int]], patch_dim: int = 1176) -> np.ndarray:
    n = sum(t * h * w for t, h, w in grids)
    return rng.standard_normal((n, patch_dim)).astype(np.float32)


def hf_logits(
    model,
    input_ids,
    attention_mask,
    pixel_values=None,
    image_grid_thw=None,
    *,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    position_ids=None,
) -> np.ndarray:
    """Reference logits; passes mm_token_type_ids so transformers >= 5.5 builds 3D M-RoPE positions (unless
    `position_ids` `[3, B, S]` are given)."""
    inputs = _hf_inputs(
        input_ids,
        attention_mask,
        pixel_values,
        image_grid_thw,
        pixel_values_videos=pixel_values_videos,
        video_grid_thw=video_grid_thw,
        second_per_grid_ts=second_per_grid_ts,
    )
    if position_ids is not None:
        inputs["position_ids"] = torch.as_tensor(np.asarray(position_ids, np.int64))
    with torch.no_grad():
        return model(**inputs).logits.float().numpy()


def hf_final_hidden_states(model, input_ids, attention_mask, pixel_values=None, image_grid_thw=None) -> np.ndarray:
    """Reference final hidden states (after the decoder's last norm) `[B, S, H]`."""
    inputs = _hf_inputs(input_ids, attention_mask, pixel_values, image_grid_thw)
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True).hidden_states[-1].float().numpy()


def mm_token_type_ids(input_ids) -> np.ndarray:
    """transformers' modality of each token: 0 text, 1 image, 2 video."""
    ids = np.asarray(input_ids)
    return (ids == TOKENS["image_token_id"]).astype(np.int64) + 2 * (ids == TOKENS["video_token_id"]).astype(np.int64)


def _hf_inputs(
    input_ids,
    attention_mask,
    pixel_values,
    image_grid_thw,
    *,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
) -> dict:
    kwargs = dict(
        input_ids=torch.as_tensor(input_ids),
        attention_mask=torch.as_tensor(attention_mask),
        mm_token_type_ids=torch.as_tensor(mm_token_type_ids(input_ids)),
    )
    if pixel_values is not None:
        kwargs.update(
            pixel_values=torch.as_tensor(pixel_values), image_grid_thw=torch.as_tensor(np.asarray(image_grid_thw))
        )
    if pixel_values_videos is not None:
        kwargs.update(
            pixel_values_videos=torch.as_tensor(pixel_values_videos),
            video_grid_thw=torch.as_tensor(np.asarray(video_grid_thw)),
        )
        if second_per_grid_ts is not None:
            kwargs["second_per_grid_ts"] = torch.as_tensor(np.asarray(second_per_grid_ts, np.float32))
    return kwargs
