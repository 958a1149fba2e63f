"""VC-PPO's value pretraining, measured: the critic's error on the first rollout batch's returns before and after
the critic-only steps (shuffle_r1_jax/experiments/value_pretraining.py); writes the figures to BUILD_NOTES.md.

    python scripts/value_pretraining.py                        # the demo's task and policy, vc_ppo, 10 steps
    python scripts/value_pretraining.py --config.critic.pretrain_steps=20 --workdir runs/value_pretraining

--config: a config file (default: the demo's) whose rl.algorithm is set to vc_ppo unless it names a value-based
one; --workdir: the run's directory (default: a fresh temporary one; an existing run is refused, as the first batch
must be the run's first); --no-write: print only.
"""

from __future__ import annotations

import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "BUILD_NOTES.md"
TITLE = "VC-PPO value pretraining (issue #18)"

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(ROOT / "shuffle_r1_jax" / "demo" / "config.py"), "the run's config file[:args] (default: the demo)"
)
flags.DEFINE_string("workdir", "", "the run's directory (default: a fresh temporary one)")
flags.DEFINE_bool("no_write", False, "print only; leave BUILD_NOTES.md alone")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
    del argv
    from shuffle_r1_jax.experiments.value_pretraining import measure_value_pretraining
    from shuffle_r1_jax.perf.notes import machine_description, write_section
    from shuffle_r1_jax.train.settings import prepare
    from shuffle_r1_jax.train.trainer import Trainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = _CONFIG.value
    if config.rl.algorithm not in ("ppo", "vc_ppo", "orz_ppo"):
        config.rl.algorithm = "vc_ppo"
    workdir = Path(FLAGS.workdir or tempfile.mkdtemp(prefix="value_pretraining_"))
    if (workdir / "checkpoints").exists():
        print(f"error: {workdir} holds a run already; give a new --workdir", file=sys.stderr)
        return 2
    _, settings = prepare(config)
    start = time.perf_counter()
    trainer = Trainer(settings, str(workdir))
    try:
        effect = measure_value_pretraining(trainer)
    finally:
        trainer.close()
    command = "python scripts/value_pretraining.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    body = [
        f"`{command.strip()}` ({machine_description()}; {time.perf_counter() - start:.0f} s): rl.algorithm = "
        f"{settings.rl.algorithm}, {effect.steps} critic-only steps of {settings.data.rollout_batch_prompts} prompts x "
        f"n = {settings.rollout.n}, critic learning rate {settings.critic.optimizer.learning_rate:g}, critic lambda "
        f"{settings.rl.gae.critic_lam:g}.",
        "",
        "| on the first rollout batch | before | after |",
        "|---|---|---|",
        f"| critic mean squared error on the returns | {effect.error_before:.4f} | {effect.error_after:.4f} |",
        f"| explained variance | {effect.explained_variance_before:.3f} | {effect.explained_variance_after:.3f} |",
        "",
        f"The policy {'MOVED (a bug)' if effect.policy_moved else 'did not move'} during the pretraining steps.",
    ]
    print("\n".join(body))
    if not FLAGS.no_write:
        write_section(NOTES, TITLE, "\n".join(body))
    return 1 if effect.policy_moved else 0


if __name__ == "__main__":
    app.run(main)
