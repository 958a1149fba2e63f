"""Timing the jitted sampler on a checkpoint: steady-state seconds of one `generate`, its compile time, the same
for the sampler of an earlier commit (run from that commit's source in a subprocess), the KV cache bytes of one
call, and the memory-bandwidth fraction of the decode loop on GPUs."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import time

import jax
import numpy as np
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl import Qwen25VL, load_pretrained, prepare_inputs
from shuffle_r1_jax.sampling import Sampler, SamplingConfig

# HBM bandwidth by device kind substring (NVIDIA data sheets), bytes/s.
GPU_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def image_prompts(
    prompts: int,
    text_tokens: int,
    image_grid: tuple[int, int, int],
    token_ids: dict,
    seed: int = 0,
    text_vocab: int = 150000,
):
    """Random prompts of `text_tokens` text tokens around one image of `image_grid` (its vision start / image /
    end tokens in the middle) and random patches.

    Args:
      prompts: the batch size P.
      text_tokens: text tokens per prompt.
      image_grid: (t, h, w) patch grid of each prompt's image (h * w / 4 merged image tokens).
      token_ids: {"image", "vision_start", "vision_end"} token ids of the model.
      seed: seeds the tokens and patches.
      text_vocab: text tokens are drawn from [0, text_vocab).

    Returns:
      ids `int64[P, L]`, mask `int64[P, L]` (all ones), pixels `float32[P * t * h * w, 1176]`, grids `int[P, 3]`.
    """
    rng = np.random.default_rng(seed)
    _, h, w = image_grid
    image = [token_ids["vision_start"]] + [token_ids["image"]] * (h * w // 4) + [token_ids["vision_end"]]
    rows = []
    for _ in range(prompts):
        text = rng.integers(0, text_vocab, text_tokens).tolist()
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


def time_compaction(
    checkpoint: str,
    dtype,
    ids,
    mask,
    pixels,
    grids,
    *,
    n: int,
    new_tokens: int,
    stop_fraction: float,
    stages: tuple[int, ...],
    runs: int,
) -> list[dict]:
    """One sampler per decode-stage limit on the same model, inputs and keys, with the top `stop_fraction` of
    the text vocabulary (below the special tokens) as stop tokens so that rows end at scattered steps.

    The samplers take turns: each run times every sampler once (after one compiling round), so a change of the
    machine's load falls on all of them. A row's draws depend only on (key, step, row), so every sampler must
    produce the same tokens; that is checked.

    Args:
      checkpoint: an HF-format checkpoint directory.
      dtype: the compute dtype.
      ids: int `[P, L]` prompt tokens.
      mask: int `[P, L]` attention mask.
      pixels: float32 `[patches, 1176]` image patches.
      grids: int `[images, 3]` patch grids.
      n: samples per prompt.
      new_tokens: the most tokens of a response.
      stop_fraction: the share of the text vocabulary that stops a response, in (0, 1).
      stages: the `decode_stages` limit of each sampler.
      runs: timed rounds.

    Returns:
      One {"stages", "seconds" (median), "compile_s", "tokens" (response tokens of a call), "steps" (the longest
      response)} per entry of `stages`.

    Raises:
      RuntimeError: two samplers produced different tokens.
    """
    model, config = load_pretrained(checkpoint, dtype)
    graphdef, state = nnx.split(model)
    text_vocab = min(config.image_token_id, config.video_token_id, config.vision_start_token_id)
    stops = tuple(range(text_vocab - max(1, int(stop_fraction * text_vocab)), text_vocab))
    forbidden = (config.image_token_id, config.video_token_id)
    sampling = SamplingConfig(temperature=1.0, top_p=0.99, forbidden_token_ids=forbidden, stop_token_ids=stops)
    samplers = [Sampler(graphdef, sampling, decode_stages=limit) for limit in stages]
    inputs = prepare_inputs(config, ids, mask, pixels, grids)
    times = [[] for _ in samplers]
    outputs = []
    for run in range(runs + 1):
        for sampler, timing in zip(samplers, times):
            start = time.perf_counter()
            out = sampler.generate(state, inputs, n=n, max_new_tokens=new_tokens, key=jax.random.key(0))
            jax.block_until_ready(out)
            timing.append(time.perf_counter() - start)
            if run == 0:
                outputs.append(np.asarray(out.tokens))
    if any(not np.array_equal(outputs[0], other) for other in outputs[1:]):
        raise RuntimeError("samplers with different decode_stages produced different tokens")
    lengths = np.asarray(out.lengths)
    return [
        dict(
            stages=limit,
            seconds=float(np.median(timing[1:])),
            compile_s=timing[0] - float(np.median(timing[1:])),
            tokens=int(lengths.sum()),
            steps=int(lengths.max()),
        )
        for limit, timing in zip(stages, times)
    ]


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


_BASELINE_RUN = """
import json, sys
import numpy as np
import shuffle_r1_jax
from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.perf.sampler_benchmark import time_sampler
args = json.loads(sys.argv[1])
assert shuffle_r1_jax.__file__.startswith(args["source"]), shuffle_r1_jax.__file__
inputs = np.load(args["inputs"])
seconds, compile_s, compilations, _ = time_sampler(
    args["checkpoint"], DTYPES[args["dtype"]], inputs["ids"], inputs["mask"], inputs["pixels"], inputs["grids"],
    n=args["n"], new_tokens=args["new_tokens"], runs=args["runs"],
)
print(json.dumps(dict(seconds=seconds, compile_s=compile_s, compilations=compilations)))
"""


def time_baseline_sampler(
    commit: str, checkpoint: str, dtype: str, ids, mask, pixels, grids, *, n: int, new_tokens: int, runs: int
) -> dict:
    """`time_sampler` as the package at `commit` has it, on the same checkpoint and inputs.

    The commit's `shuffle_r1_jax` folder is exported (`git archive`, nothing in the repository changes) into a
    temporary directory and a fresh Python process imports the package from there (it checks that it did) and
    times its sampler; this process waits for it, so the two never run at the same time.

    Args:
      commit: the git commit of this repository to time.
      checkpoint: an HF-format checkpoint directory.
      dtype: the compute dtype's name ("float32" | "bfloat16").
      ids: int `[P, L]` prompt tokens.
      mask: int `[P, L]` attention mask.
      pixels: float32 `[patches, 1176]` image patches.
      grids: int `[images, 3]` patch grids.
      n: samples per prompt.
      new_tokens: the response length.
      runs: timed calls after the compiling one.

    Returns:
      {"seconds": median seconds of the timed calls, "compile_s": compile seconds, "compilations": programs}.

    Raises:
      subprocess.CalledProcessError: the export or the timing process failed (its output is printed).
    """
    repo = pathlib.Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as directory:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit, "shuffle_r1_jax"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        inputs = os.path.join(directory, "inputs.npz")
        np.savez(inputs, ids=ids, mask=mask, pixels=pixels, grids=grids)
        args = dict(
            source=directory,
            inputs=inputs,
            checkpoint=checkpoint,
            dtype=dtype,
            n=n,
            new_tokens=new_tokens,
            runs=runs,
        )
        env = dict(os.environ, PYTHONPATH=directory)
        done = subprocess.run(
            [sys.executable, "-c", _BASELINE_RUN, json.dumps(args)],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            print(done.stdout, done.stderr, sep="\n")
            done.check_returncode()
        return json.loads(done.stdout.strip().splitlines()[-1])


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, itemsize: int, positions: int) -> int:
    """Bytes of keys and values for `positions` cached positions per layer: 2 x layers x positions x kv_heads x
    head_dim x itemsize (the bytes per element of the cache dtype)."""
    return 2 * layers * positions * kv_heads * head_dim * itemsize
