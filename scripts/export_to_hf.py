"""Export any orbax checkpoint this project writes to a Hugging Face directory that transformers (and vLLM) load.

    python scripts/export_to_hf.py --ckpt ckpt/qwen3b --out exported/                  # a converted directory
    python scripts/export_to_hf.py --ckpt runs/demo --out exported/ [--step N|latest|best] [--dtype bfloat16]
    python scripts/export_to_hf.py --ckpt runs/ppo/checkpoints --critic --out exported_critic/
    python scripts/export_to_hf.py --ckpt runs/lora --adapters --out lora_adapters/   # PEFT adapters only

--ckpt: a directory written by scripts/convert_hf_to_orbax.py (params/ + config.json), a trainer run's
checkpoint directory (<workdir>/checkpoints) or the trainer's workdir; --out: the directory to write
(config.json, sharded safetensors with hub tensor names and an index, tokenizer and processor files);
--step (trainer runs only): a saved step, latest (default) or best (the kept step with the best validation
accuracy); --dtype: float32 | bfloat16 | float16 (default: each tensor as stored: a converted directory's dtype,
float32 for a trainer run's master parameters); --critic (trainer runs only): export the critic of a value-based
run (ppo, vc_ppo, orz_ppo) instead of the policy: a Qwen2.5-VL directory plus value_head.safetensors, which
`--config.critic.checkpoint` takes to start another run's critic (shuffle_r1_jax/train/export.py says what each
tensor is). A LoRA run (lora.rank > 0) exports with its adapters merged into the weights; with --adapters, its
adapters alone in the PEFT layout (adapter_config.json + adapter_model.safetensors, which
`peft.PeftModel.from_pretrained(base, dir)` loads over the run's starting checkpoint). Exits with status 2 and
one line on stderr when the directory or a flag does not fit.
"""

from __future__ import annotations

import argparse
import sys

from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.train.export import STEP_CHOICES, export_checkpoint


def _step(value: str) -> int | str:
    if value in STEP_CHOICES:
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a step number nor one of {STEP_CHOICES}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="converted directory, trainer checkpoint directory or workdir")
    parser.add_argument("--step", type=_step, default=None, help="trainer runs: N, latest (default) or best")
    parser.add_argument("--out", required=True, help="output Hugging Face directory")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="safetensors dtype (default: as stored)")
    parser.add_argument("--critic", action="store_true", help="trainer runs: export the critic (value-based runs)")
    parser.add_argument("--adapters", action="store_true", help="LoRA runs: the adapters alone, in the PEFT layout")
    args = parser.parse_args()
    try:
        exported = export_checkpoint(
            args.ckpt,
            args.out,
            step=args.step,
            dtype=DTYPES.get(args.dtype),
            critic=args.critic,
            adapters=args.adapters,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {exported} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
