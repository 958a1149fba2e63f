"""Packed vs padded log-prob and update passes on a length-skewed batch (shuffle_r1_jax/perf/packing_benchmark.py
says how each figure is made), side by side in one process; writes the figures to BUILD_NOTES.md.

Cases:
  cpu: wall time on this machine at tiny dimensions (text 256 wide, 4 layers, 4 heads / 2 KV heads of 64,
       vocabulary 4096; a 2-block vision tower whose features are computed once, as with a frozen tower): 8
       prompts of one 16-token image and 40-78 text tokens (bucket 96) x n = 8, responses of at most 512 tokens
       with a long-tailed law of mean ~128; 16-row micro-batches.
  3b:  XLA cost-analysis FLOPs at Qwen2.5-VL-3B dimensions (36 layers, 2048 wide, vocabulary 151936), bf16,
       lowered on abstract parameters: 8 prompts of one 256-token image (448 px) and 192-382 text tokens (bucket
       640) x n = 8, responses of at most 2048 tokens with mean ~512, all 64 rows in one micro-batch.

    python scripts/bench_packing.py [--case cpu|3b|both] [--runs 5] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig, TextConfig, VisionConfig, qwen2_5_vl_3b_config
from shuffle_r1_jax.models.qwen2_5_vl.random_weights import random_model
from shuffle_r1_jax.perf.notes import machine_description, write_section
from shuffle_r1_jax.perf.packing_benchmark import SkewedBatch, phase_flops, skewed_rollouts, time_phases

NOTES = Path(__file__).resolve().parents[1] / "BUILD_NOTES.md"
TITLE = "Packed update batches (issue #16)"

TINY = Qwen25VLConfig(
    text=TextConfig(
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        mrope_section=(8, 12, 12),
    ),
    vision=VisionConfig(
        depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=256, fullatt_block_indexes=(1,)
    ),
    image_token_id=4090,
    video_token_id=4091,
    vision_start_token_id=4092,
    vision_end_token_id=4093,
    bos_token_id=4094,
    eos_token_id=4095,
)
CPU_BATCH = SkewedBatch(prompts=8, n=8, prompt_bucket=96, image_side=8, response_length=512)
CPU_MICRO_ROWS, CPU_CHUNK = 16, 128
BATCH_3B = SkewedBatch(prompts=8, n=8, prompt_bucket=640, image_side=32, response_length=2048)


def _lengths_line(rollouts) -> str:
    response = np.asarray(rollouts.mask).sum(-1)
    prompt = np.asarray(rollouts.prompts.attention_mask).sum(-1)
    return (
        f"responses mean {response.mean():.0f}, median {np.median(response):.0f}, max {response.max()} of "
        f"{rollouts.tokens.shape[1]}; prompts {prompt.min()}-{prompt.max()} real tokens of "
        f"{rollouts.prompts.input_ids.shape[1]}"
    )


def _rows(table: dict, unit: str, scale: float) -> list[str]:
    lines = [f"| phase | padded ({unit}) | packed ({unit}) | padded / packed |", "|---|---|---|---|"]
    for phase in ("logprobs", "update"):
        padded, packed = table["padded"][phase], table["packed"][phase]
        lines.append(f"| {phase} | {padded / scale:.3f} | {packed / scale:.3f} | {padded / packed:.2f}x |")
    padded = sum(table["padded"].values())
    packed = sum(table["packed"].values())
    lines.append(f"| both | {padded / scale:.3f} | {packed / scale:.3f} | {padded / packed:.2f}x |")
    return lines


def cpu_case(runs: int) -> list[str]:
    rollouts = skewed_rollouts(TINY, CPU_BATCH)
    model = random_model(TINY, seed=0)
    seconds = time_phases(model, rollouts, micro_rows=CPU_MICRO_ROWS, chunk=CPU_CHUNK, runs=runs)
    rows = rollouts.tokens.shape[0]
    lines = [
        f"### CPU wall time, tiny dimensions: `python scripts/bench_packing.py --case cpu --runs {runs}`",
        f"{rows} rows ({CPU_BATCH.prompts} prompts x n = {CPU_BATCH.n}) in {CPU_MICRO_ROWS}-row micro-batches; "
        + _lengths_line(rollouts)
        + f". Packed: {seconds['packed_rows']} rows of {rollouts.prompts.input_ids.shape[1] + rollouts.tokens.shape[1]}"
        f" positions per micro-batch (the bucket of the fullest one). Median of {runs} runs after a compiling one,"
        " layouts interleaved; fp32.",
        "",
        *_rows(seconds, "s", 1.0),
    ]
    print("\n".join(lines))
    return lines


def flops_case() -> list[str]:
    config = qwen2_5_vl_3b_config()
    rollouts = skewed_rollouts(config, BATCH_3B)
    flops = phase_flops(config, rollouts)
    rows = rollouts.tokens.shape[0]
    lines = [
        "### XLA FLOPs, Qwen2.5-VL-3B dimensions: `python scripts/bench_packing.py --case 3b`",
        f"{rows} rows ({BATCH_3B.prompts} prompts x n = {BATCH_3B.n}) as one micro-batch; "
        + _lengths_line(rollouts)
        + f". Packed: {flops['packed_rows']} rows of {rollouts.prompts.input_ids.shape[1] + rollouts.tokens.shape[1]}"
        " positions. `lowered.cost_analysis()['flops']` of the programs lowered on abstract bf16 parameters (every"
        " loop at one trip), frozen vision features as input, attention 'xla'.",
        "",
        *_rows(flops, "TFLOP", 1e12),
    ]
    print("\n".join(lines))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("cpu", "3b", "both"), default="both")
    parser.add_argument("--runs", type=int, default=5, help="cpu: timed runs per layout after a compiling one")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BUILD_NOTES.md alone")
    args = parser.parse_args()
    body = [
        f"Measured {datetime.date.today()} on {machine_description()} ({platform.machine()}). The trainer's passes "
        "(`train.pack_sequences`, `learner/packing.py`): "
        "packed rows hold several prompt + response sequences, attention kept within each.",
        "",
    ]
    if args.case in ("cpu", "both"):
        body += cpu_case(args.runs) + [""]
    if args.case in ("3b", "both"):
        body += flops_case()
    if not args.no_write:
        write_section(NOTES, TITLE, "\n".join(body))
        print(f"written to {NOTES} ## {TITLE}")


if __name__ == "__main__":
    main()
