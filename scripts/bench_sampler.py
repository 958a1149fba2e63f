"""Our jitted sampler vs transformers' `generate`, side by side in one process, same random weights and inputs.

CPU case (default): Qwen2.5-VL architecture with text hidden 512, 8 layers, 8 heads / 2 kv heads, intermediate
1536, the real vocabulary 151936, vision depth 4 hidden 256; 8 prompts with one 224x224 image and 64 text
tokens, n = 4, exactly 128 new tokens (stop tokens ignored), temperature 1.0, top-p 0.99.
GPU case (`--case gpu`): real Qwen2.5-VL-3B dimensions, random bf16 weights, 64 prompts x n = 8, 1024-token
prompts with one image, 512 new tokens; adds the fraction of the memory-bandwidth bound.
Long-prompt CPU case (`--case long`): where the shared prompt cache and the response-only decode attention
matter: text hidden 256, 4 layers, 4 heads / 2 kv heads (head_dim 64), intermediate 768, a vocabulary of 8192
(so that the CPU time goes to attention and the KV cache rather than the logits), vision depth 2 hidden 128;
4 prompts of 1024 tokens (766 text tokens around one 448x448 image: 256 image tokens + start/end), n = 16,
exactly 256 new tokens, fp32. It also times the sampler of an earlier commit (`--baseline`, default 07067ee:
every sample's cache holds prompt + response and a step attends over all of it) on the same checkpoint, inputs
and seeds, from that commit's source in a subprocess (`sampler_benchmark.time_baseline_sampler`), and prints
both layouts' KV cache bytes per call.
Early-stop case (`--case stops`): the long case's model and prompts with 1/64 of the text vocabulary as stop
tokens, up to 256 new tokens, so that rows end at scattered steps (under the random weights about geometrically,
mean about 64 = a quarter of the maximum, a long tail to 256): the sampler without compaction
(`decode_stages` = 1: every row costs until its call's last row stops) against the default stages (stopped rows
leave the loop), taking turns in one process on the same inputs and keys; both must sample the same tokens.
Smoke case (`--case smoke`): a 2-layer, 64-wide model, 2 prompts x n = 2, 8 new tokens: every code path of the
benchmark in seconds (scripts/gpu_check.py --cpu-smoke); its timings are not figures.

Prints tokens/s of each and the ratios, our compile time separately, and writes the figures to BUILD_NOTES.md.

    python scripts/bench_sampler.py [--case cpu|gpu|long|stops|smoke] [--runs 3] [--skip-hf] [--baseline COMMIT]
        [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.models.qwen2_5_vl.cascade_attention import DEFAULT_BLOCK, suffix_layout
from shuffle_r1_jax.perf.notes import load_average, machine_description, write_section
from shuffle_r1_jax.perf.sampler_benchmark import (
    decode_bandwidth,
    image_prompts,
    kv_cache_bytes,
    time_baseline_sampler,
    time_compaction,
    time_sampler,
)
from shuffle_r1_jax.sampling.sampler import DEFAULT_DECODE_STAGES

NOTES = Path(__file__).resolve().parents[1] / "BUILD_NOTES.md"

# transformers' Qwen2.5-VL defaults
QWEN_TOKENS = {
    "image": 151655,
    "video": 151656,
    "vision_start": 151652,
    "vision_end": 151653,
    "bos": 151643,
    "eos": 151645,
}
# the long case's special tokens, at the top of its 8192-token vocabulary
SMALL_VOCAB_TOKENS = {"image": 8185, "video": 8186, "vision_start": 8187, "vision_end": 8188, "bos": 8189, "eos": 8190}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    text: dict
    vision: dict
    prompts: int
    n: int
    text_tokens: int
    image_grid: tuple[int, int, int]
    new_tokens: int
    dtype: str
    tokens: dict = dataclasses.field(default_factory=lambda: QWEN_TOKENS)
    baseline: bool = False  # also time the `--baseline` commit's sampler
    stop_fraction: float = 0.0  # > 0: the early-stop case (decode stages compared; no transformers, no baseline)


CASES = {
    "cpu": Case(
        name="cpu",
        text=dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                  intermediate_size=1536, vocab_size=151936,
                  rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]}),
        vision=dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, fullatt_block_indexes=[3]),
        prompts=8, n=4, text_tokens=64, image_grid=(1, 16, 16), new_tokens=128, dtype="float32",
    ),
    "gpu": Case(
        name="gpu",
        text=dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                  intermediate_size=11008, vocab_size=151936,
                  rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                    fullatt_block_indexes=[7, 15, 23, 31]),
        prompts=64, n=8, text_tokens=768, image_grid=(1, 32, 32), new_tokens=512, dtype="bfloat16",
    ),
    "long": Case(
        name="long",
        text=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=768, vocab_size=8192,
                  rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]}),
        vision=dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=2, fullatt_block_indexes=[1]),
        prompts=4, n=16, text_tokens=766, image_grid=(1, 32, 32), new_tokens=256, dtype="float32",
        tokens=SMALL_VOCAB_TOKENS, baseline=True,
    ),
    "smoke": Case(
        name="smoke",
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=151936,
                  rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, fullatt_block_indexes=[0]),
        prompts=2, n=2, text_tokens=16, image_grid=(1, 8, 8), new_tokens=8, dtype="float32",
    ),
}  # fmt: skip
# the long case's model, prompts and length with early stops
CASES["stops"] = dataclasses.replace(CASES["long"], name="stops", baseline=False, stop_fraction=1 / 64)


def hf_model_and_dir(case: Case, directory: str):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = case.tokens
    config = Qwen2_5_VLConfig(
        text_config=dict(case.text, bos_token_id=ids["bos"], eos_token_id=ids["eos"], tie_word_embeddings=True),
        vision_config=dict(case.vision, out_hidden_size=case.text["hidden_size"], window_size=112),
        tie_word_embeddings=True,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    dtype = getattr(torch, case.dtype)
    model = Qwen2_5_VLForConditionalGeneration(config).to(dtype).eval()
    model.save_pretrained(directory)
    if torch.cuda.is_available():
        model = model.cuda()
    return model


def time_hf(model, case: Case, ids, mask, pixels, grids) -> float:
    import torch

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    kwargs = dict(
        input_ids=torch.as_tensor(ids, device=device),
        attention_mask=torch.as_tensor(mask, device=device),
        pixel_values=torch.as_tensor(pixels, device=device, dtype=dtype),
        image_grid_thw=torch.as_tensor(grids, device=device),
        mm_token_type_ids=torch.as_tensor((ids == case.tokens["image"]).astype(np.int64), device=device),
        do_sample=True,
        temperature=1.0,
        top_p=0.99,
        top_k=0,
        num_return_sequences=case.n,
        pad_token_id=0,
    )
    with torch.no_grad():
        model.generate(**kwargs, max_new_tokens=2, min_new_tokens=2)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(**kwargs, max_new_tokens=case.new_tokens, min_new_tokens=case.new_tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert out.shape[1] - ids.shape[1] == case.new_tokens
    return elapsed


def kv_cache_lines(case: Case, prompt_len: int, baseline: str) -> list[str]:
    """The KV cache bytes of one sampler call in the baseline's layout and in ours, with the formula."""
    t = case.text
    heads, head_dim = t["num_key_value_heads"], t["hidden_size"] // t["num_attention_heads"]
    itemsize = np.dtype(case.dtype).itemsize
    _, response = suffix_layout(case.new_tokens, DEFAULT_BLOCK)
    p, n, layers = case.prompts, case.n, t["num_hidden_layers"]
    old = p * n * (prompt_len + case.new_tokens)
    new = p * prompt_len + p * n * response
    common = f"2 x {layers} layers x positions x {heads} kv heads x {head_dim} x {itemsize} bytes"

    def mib(positions: int) -> str:
        return f"{kv_cache_bytes(layers, heads, head_dim, itemsize, positions) / 2**20:.1f} MiB"

    return [
        f"KV cache per call = {common}, with positions (P = {p} prompts, n = {n}, Lp = {prompt_len}, "
        f"{case.new_tokens} new tokens, response cache S = {response} in blocks of {DEFAULT_BLOCK}):",
        f"- at {baseline}, P n (Lp + new) = {old} positions: {mib(old)};",
        f"- now, P Lp + P n S = {new} positions: {mib(new)}.",
    ]


def header_lines(case: Case, command: str, prompt_len: int) -> list[str]:
    """The command, machine, model and shape lines of a case's BUILD_NOTES section."""
    return [
        f"Command: `{command}`; {jax.devices()[0].device_kind} ({platform.machine()}), jax {jax.__version__}, "
        f"{datetime.date.today()}.",
        f"Machine: {machine_description()}; load average at the end {load_average()}.",
        f"Model (random weights): text hidden {case.text['hidden_size']}, {case.text['num_hidden_layers']} layers, "
        f"{case.text['num_attention_heads']} heads / {case.text['num_key_value_heads']} kv heads, intermediate "
        f"{case.text['intermediate_size']}, vocabulary {case.text['vocab_size']}; vision depth {case.vision['depth']}, "
        f"hidden {case.vision['hidden_size']}.",
        f"Shape: {case.prompts} prompts x n={case.n}, {prompt_len}-token prompts "
        f"(one image, grid {case.image_grid}), "
        f"{case.new_tokens} new tokens, {case.dtype}, temperature 1.0, top-p 0.99.",
    ]


def compaction_lines(case: Case, directory: str, ids, mask, pixels, grids, runs: int) -> list[str]:
    """Times the early-stop case without compaction and with the default stages; the table and the ratio."""
    results = time_compaction(
        directory, DTYPES[case.dtype], ids, mask, pixels, grids, n=case.n, new_tokens=case.new_tokens,
        stop_fraction=case.stop_fraction, stages=(1, DEFAULT_DECODE_STAGES), runs=runs,
    )  # fmt: skip
    plain, staged = results
    lines = [
        f"Stops: the top {case.stop_fraction:.4f} of the text vocabulary; one call samples {plain['tokens']} "
        f"response tokens over {case.prompts * case.n} rows (mean {plain['tokens'] / (case.prompts * case.n):.1f}, "
        f"longest {plain['steps']}); both samplers produce the same tokens.",
        "",
        "| decode_stages | time (median of " + str(runs) + ", after compilation) | response tokens/s | compile |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['stages']} | {r['seconds']:.2f} s | {r['tokens'] / r['seconds']:.0f} | {r['compile_s']:.1f} s |"
        )
    lines += ["", f"Ratio: {plain['seconds'] / staged['seconds']:.2f}x (stages {DEFAULT_DECODE_STAGES} over 1)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), default="cpu", help="benchmark shape (see above)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of our sampler after compilation (median)")
    parser.add_argument("--skip-hf", action="store_true", help="time only our sampler")
    parser.add_argument(
        "--baseline", default="07067ee", help="the commit whose sampler the long case also times (subprocess)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BUILD_NOTES.md alone")
    args = parser.parse_args()
    case = CASES[args.case]
    text_vocab = min(case.text["vocab_size"], 150000) - 16  # below the special tokens
    ids, mask, pixels, grids = image_prompts(
        case.prompts, case.text_tokens, case.image_grid, case.tokens, text_vocab=text_vocab
    )
    rows = case.prompts * case.n
    tokens = rows * case.new_tokens
    if case.stop_fraction:
        with tempfile.TemporaryDirectory() as directory:
            hf_model_and_dir(case, directory)
            command = f"python scripts/bench_sampler.py --case {case.name} --runs {args.runs}"
            lines = header_lines(case, command, ids.shape[1])
            lines += compaction_lines(case, directory, ids, mask, pixels, grids, args.runs)
        body = "\n".join(lines) + "\n"
        print(body)
        if not args.no_write:
            write_section(NOTES, f"Sampler benchmark ({case.name})", body)
        return
    with tempfile.TemporaryDirectory() as directory:
        hf = hf_model_and_dir(case, directory)
        ours, compile_s, compilations, model = time_sampler(
            directory,
            DTYPES[case.dtype],
            ids,
            mask,
            pixels,
            grids,
            n=case.n,
            new_tokens=case.new_tokens,
            runs=args.runs,
        )
        print(f"ours: {ours:.2f} s, {tokens / ours:.0f} tokens/s (compile {compile_s:.1f} s, {compilations} programs)")
        baseline = None
        if case.baseline:
            baseline = time_baseline_sampler(
                args.baseline, directory, case.dtype, ids, mask, pixels, grids,
                n=case.n, new_tokens=case.new_tokens, runs=args.runs,
            )  # fmt: skip
            print(f"baseline {args.baseline}: {baseline['seconds']:.2f} s, {tokens / baseline['seconds']:.0f} tokens/s")
        hf_s = None if args.skip_hf else time_hf(hf, case, ids, mask, pixels, grids)
    command = f"python scripts/bench_sampler.py --case {case.name} --runs {args.runs}"
    if case.baseline:
        command += f" --baseline {args.baseline}"
    lines = header_lines(case, command, ids.shape[1]) + [
        "",
        "| sampler | time | tokens/s |",
        "|---|---|---|",
        f"| shuffle-r1-jax (median of {args.runs}, after compilation) | {ours:.2f} s | {tokens / ours:.0f} |",
    ]
    if baseline is not None:
        lines.append(
            f"| shuffle-r1-jax at {args.baseline} (median of {args.runs}, after compilation) | "
            f"{baseline['seconds']:.2f} s | {tokens / baseline['seconds']:.0f} |"
        )
    if hf_s is not None:
        lines.append(f"| transformers generate (sdpa) | {hf_s:.2f} s | {tokens / hf_s:.0f} |")
        print(f"transformers: {hf_s:.2f} s, {tokens / hf_s:.0f} tokens/s; ratio {hf_s / ours:.2f}x")
    lines.append("")
    if hf_s is not None:
        lines.append(f"Ratio: {hf_s / ours:.2f}x transformers.")
    if baseline is not None:
        lines.append(f"Ratio: {baseline['seconds'] / ours:.2f}x the sampler at {args.baseline}.")
        lines += kv_cache_lines(case, ids.shape[1], args.baseline)
    lines.append(f"Our compile time: {compile_s:.1f} s ({compilations} programs: prefill + decode).")
    if jax.devices()[0].platform == "gpu":
        context = ids.shape[1] + case.new_tokens // 2
        lines.append("Memory bandwidth: " + decode_bandwidth(model, rows, context, case.new_tokens, ours))
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_write:
        write_section(NOTES, f"Sampler benchmark ({case.name})", body)


if __name__ == "__main__":
    main()
