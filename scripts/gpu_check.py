"""The GPU check of issue #16 on one H100/H200, inside 8 minutes: random weights at Qwen2.5-VL-3B dimensions.

Parts, each a subprocess with its own time budget (killed at the budget; the next part still runs):
  attention   every attention implementation on one attention-heavy shape (3B heads, 4 x 4096 positions, bf16):
              forward + backward time and the difference from float32 "xla" (scripts/bench_attention.py)
  sampler     our sampler's tokens/s against transformers' `generate` on the same GPU and weights
              (scripts/bench_sampler.py --case gpu)
  train_step  a training step's phases, tokens/s and MFU of the policy update (scripts/bench_train_step.py
              --size 3b, a shortened run)

Writes `gpu_check.md` under `--out` (a section to paste into BUILD_NOTES.md: each part's printed figures, its
command, status and seconds) and prints a summary. `--cpu-smoke` runs every part on tiny shapes (CPU, no GPU
needed) to check the script itself; its timings are not figures.

    python scripts/gpu_check.py --out $OUT [--budget_s 465] [--parts attention,sampler,train_step] [--cpu-smoke]

On the device tool (the repository root; wheels the CUDA image lacks carried in .whl, BUILD_NOTES.md "GPU check"):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site || exit; python3 scripts/gpu_check.py --out $OUT
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, installed or not

from shuffle_r1_jax.perf.budgeted_parts import Part, report, run_part  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESERVE_S = 10  # kept back from the total budget for writing the report


# the real check, about 7 minutes in all
GPU_PARTS = (
    Part("attention", ("scripts/bench_attention.py", "--shape", "gpu", "--runs", "5"), 90),
    Part("sampler", ("scripts/bench_sampler.py", "--case", "gpu", "--runs", "2", "--no-write"), 170),
    Part(
        "train_step",
        (
            "scripts/bench_train_step.py",
            "--size",
            "3b",
            "--warmup_steps",
            "1",
            "--steps",
            "2",
            "--config.data.rollout_batch_prompts=32",
            "--config.train.minibatch_prompts=8",
        ),
        190,
    ),
)
# every code path above on shapes a CPU runs in seconds
SMOKE_PARTS = (
    Part("attention", ("scripts/bench_attention.py", "--shape", "smoke", "--runs", "2"), 90),
    Part("sampler", ("scripts/bench_sampler.py", "--case", "smoke", "--runs", "1", "--no-write"), 120),
    Part(
        "train_step",
        (
            "scripts/bench_train_step.py",
            "--warmup_steps",
            "1",
            "--steps",
            "1",
            "--config.demo.preset=test",
            "--config.demo.warmup_steps=0",
            "--config.demo.num_train=64",
            "--config.demo.num_val=8",
            "--config.data.rollout_batch_prompts=4",
            "--config.rollout.n=4",
            "--config.train.minibatch_prompts=4",
            "--config.rl.abs_rounds=2",
            "--config.rollout.max_new_tokens=8",
        ),
        180,
    ),
)


def environment() -> str:
    """The device, jax and whether tokamax is installed, in one line (imports jax in this process, which then holds
    only the memory it uses: the parts need the rest)."""
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    import jax

    from shuffle_r1_jax.models.qwen2_5_vl.fused_attention import tokamax_available

    device = jax.devices()[0]
    return (
        f"{len(jax.devices())} x {device.device_kind} ({device.platform}), jax {jax.__version__}, "
        f"python {sys.version.split()[0]}, tokamax {'installed' if tokamax_available() else 'not installed'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".", help="folder for gpu_check.md and gpu_check.log")
    parser.add_argument("--budget_s", type=float, default=465, help="seconds for the whole check (parts inside it)")
    parser.add_argument("--parts", default="", help="comma-separated part names to run (default: all)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU: checks the script itself")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.budget_s - RESERVE_S
    parts = SMOKE_PARTS if args.cpu_smoke else GPU_PARTS
    wanted = set(filter(None, args.parts.split(","))) or {p.name for p in parts}
    unknown = wanted - {p.name for p in parts}
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; expected some of {[p.name for p in parts]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gpu_check.log", "w") as log_file:

        def log(text: str) -> None:
            if text:
                print(text, file=log_file, flush=True)
            if text.startswith("=="):  # progress also on the console, in case the whole command is cut short
                print(text, flush=True)

        env = environment()
        log(env)
        results = []
        for part in parts:
            if part.name in wanted:
                results.append(run_part(part, min(part.budget_s, deadline - time.perf_counter()), log, ROOT))
    command = "python scripts/gpu_check.py " + " ".join(sys.argv[1:])
    (out / "gpu_check.md").write_text(report(results, env, args.cpu_smoke, command))
    print(f"gpu check: {env}")
    for r in results:
        print(f"  {r.part.name:<11} {r.status:<28} {r.seconds:4.0f} s")
    print(f"report: {out / 'gpu_check.md'}, log: {out / 'gpu_check.log'}")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
