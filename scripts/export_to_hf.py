"""Export a trainer checkpoint to a Hugging Face directory that transformers (and vLLM) load.

    python scripts/export_to_hf.py --ckpt runs/demo/checkpoints [--step N] --out exported/ [--dtype bfloat16]
    python scripts/export_to_hf.py --ckpt runs/ppo/checkpoints --critic --out exported_critic/

--ckpt: the trainer's checkpoint directory (<workdir>/checkpoints); --step: a saved step (default: the
latest); --out: the directory to write (config.json, sharded safetensors with hub tensor names and an index,
tokenizer and processor files); --dtype: float32 | bfloat16 | float16 (default: float32, the trainer's master
parameters); --critic: export the critic of a value-based run (ppo, vc_ppo, orz_ppo) instead of the policy: a
Qwen2.5-VL directory plus value_head.safetensors, which `--config.critic.checkpoint` takes to start another run's
critic (shuffle_r1_jax/train/export.py says what each tensor is).
"""

from __future__ import annotations

import argparse
import sys

from shuffle_r1_jax.models.dtypes import DTYPES
from shuffle_r1_jax.train.export import export_trainer_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="trainer checkpoint directory (<workdir>/checkpoints)")
    parser.add_argument("--step", type=int, default=None, help="step to export (default: the latest)")
    parser.add_argument("--out", required=True, help="output Hugging Face directory")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="safetensors dtype")
    parser.add_argument("--critic", action="store_true", help="export the critic (value-based runs)")
    args = parser.parse_args()
    try:
        step = export_trainer_checkpoint(
            args.ckpt, args.out, step=args.step, dtype=DTYPES.get(args.dtype), critic=args.critic
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported the {'critic' if args.critic else 'policy'} of step {step} of {args.ckpt} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
