"""Timing the jitted sampler on a checkpoint: steady-state seconds of one `generate`, its compile time, and the
memory-bandwidth fraction of the decode loop on GPUs."""

from __future__ import annotations

import time

import jax
import numpy as np
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl import Qwen25VL, load_pretrained, prepare_inputs
from shuffle_r1_jax.sampling import Sampler, SamplingConfig

# HBM bandwidth by device kind substring (NVIDIA data sheets), bytes/s.
GPU_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def image_prompts(prompts: int, text_tokens: int, image_grid: tuple[int, int, int], token_ids: dict, seed: int = 0):
    """Random prompts of `text_tokens` text tokens around one image of `image_grid` (its vision start / image /
    end tokens in the middle) and random patches.

    Args:
      prompts: the batch size P.
      text_tokens: text tokens per prompt.
      image_grid: (t, h, w) patch grid of each prompt's image (h * w / 4 merged image tokens).
      token_ids: {"image", "vision_start", "vision_end"} token ids of the model.
      seed: seeds the tokens and patches.

    Returns:
      ids `int64[P, L]`, mask `int64[P, L]` (all ones), pixels `float32[P * t * h * w, 1176]`, grids `int[P, 3]`.
    """
    rng = np.random.default_rng(seed)
    _, h, w = image_grid
    image = [token_ids["vision_start"]] + [token_ids["image"]] * (h * w // 4) + [token_ids["vision_end"]]
    rows = []
    for _ in range(prompts):
        text = rng.integers(0, 150000, text_tokens).tolist()
        rows.append(text[: text_tokens // 2] + image + text[text_tokens // 2 :])
    ids = np.asarray(rows, np.int64)
    grids = np.asarray([image_grid] * prompts)
    pixels = rng.standard_normal((int(grids.prod(-1).sum()), 1176)).astype(np.float32)
    return ids, np.ones_like(ids), pixels, grids


def time_sampler(checkpoint: str, dtype, ids, mask, pixels, grids, *, n: int, new_tokens: int, runs: int):
    """Samples `new_tokens` tokens (no stop token) n times per prompt, `runs` times after a first (compiling)
    call, temperature 1.0 and top-p 0.99.

    Args:
      checkpoint: an HF-format checkpoint directory.
      dtype: the compute dtype.
      ids: int `[P, L]` prompt tokens.
      mask: int `[P, L]` attention mask.
      pixels: float32 `[patches, 1176]` image patches (the processor's layout).
      grids: int `[images, 3]` patch grids (the processor's layout).
      n: samples per prompt.
      new_tokens: the response length.
      runs: timed calls.

    Returns:
      (median seconds of the timed calls, compile seconds (first call minus the median), programs compiled, the
      loaded model).

    Raises:
      RuntimeError: a response ended before `new_tokens` tokens.
    """
    model, config = load_pretrained(checkpoint, dtype)
    graphdef, state = nnx.split(model)
    forbidden = (config.image_token_id, config.video_token_id)
    sampling = SamplingConfig(temperature=1.0, top_p=0.99, forbidden_token_ids=forbidden)
    sampler = Sampler(graphdef, sampling)
    inputs = prepare_inputs(config, ids, mask, pixels, grids)
    times = []
    for run in range(runs + 1):
        start = time.perf_counter()
        out = sampler.generate(state, inputs, n=n, max_new_tokens=new_tokens, key=jax.random.key(run))
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    if int(np.asarray(out.lengths).min()) != new_tokens:
        raise RuntimeError(f"a response ended before {new_tokens} tokens without a stop token")
    steady = float(np.median(times[1:]))
    return steady, times[0] - steady, sampler.compilations, model


def decode_bandwidth(model: Qwen25VL, rows: int, context: int, new_tokens: int, seconds: float) -> str:
    """The decode loop's memory bandwidth, in words.

    Args:
      model: the sampled model.
      rows: the sampled rows (prompts x n).
      context: the mean context length of a decode step.
      new_tokens: decode steps of the timed call.
      seconds: the timed call's seconds.

    Returns:
      The weights + KV cache bytes read per decode step, the bandwidth achieved (those bytes over the seconds
      per step) and, when the device's peak bandwidth is known, the fraction of it.
    """
    params = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model.layers))) + model.embed_tokens.embedding[...].nbytes
    t = model.config.text
    kv = 2 * t.num_hidden_layers * rows * context * t.num_key_value_heads * t.head_dim * 2
    achieved = (params + kv) / (seconds / new_tokens)
    kind = jax.devices()[0].device_kind
    bound = next((v for k, v in GPU_BANDWIDTH.items() if k in kind), None)
    text = f"{(params + kv) / 1e9:.2f} GB read per decode step, {achieved / 1e12:.2f} TB/s achieved"
    return text + (f" = {achieved / bound:.0%} of the {bound / 1e12:.2f} TB/s peak" if bound else "")
