"""Benchmark of the RL kernels at paper scale: PTS + ABS, and the policy loss (forward + grad).

Paper scale: 512 prompts x 16 rollouts, PTS keep ratio 0.5 (8 of 16 trajectories, 2048 pairs), ABS with
8 rounds of 256 pairs, so the update batch has 4096 trajectories; the loss runs on 4096 x 2048 response
tokens (token-mean PPO clip with dual clip, gradient w.r.t. the log-probs). Every figure is the median of
several runs after compilation, each ended by `block_until_ready`. Prints the figures and writes them to
the "RL kernels benchmark" section of BUILD_NOTES.md (replacing that section if present).

    python scripts/bench_rl.py [--groups 512] [--n 16] [--response-len 2048] [--repeats 7] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from shuffle_r1_jax.perf.notes import machine_description, write_section
from shuffle_r1_jax.rl import advantages, pts
from shuffle_r1_jax.rl.policy_loss import ppo_policy_loss
from shuffle_r1_jax.rl.selection import SelectionConfig, select_update_rows

NOTES = Path(__file__).resolve().parents[1] / "BUILD_NOTES.md"

SECTION = "RL kernels benchmark"


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first run seconds, median seconds of `repeats` later runs)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


@jax.jit
def loss_and_grad(logp, old_logp, adv, mask):
    def loss_fn(x):
        return ppo_policy_loss(x, old_logp, adv, mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0)

    return jax.value_and_grad(loss_fn, has_aux=True)(logp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=512, help="prompts per rollout batch")
    parser.add_argument("--n", type=int, default=16, help="rollouts per prompt")
    parser.add_argument("--keep-ratio", type=float, default=0.5, help="PTS keep ratio alpha")
    parser.add_argument("--rounds", type=int, default=8, help="ABS rounds (replay times)")
    parser.add_argument("--response-len", type=int, default=2048, help="response tokens per trajectory (loss)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs after compilation (median reported)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BUILD_NOTES.md alone")
    args = parser.parse_args()

    k_scores, k_len, k_shuffle, k_lp, k_old, k_adv = jax.random.split(jax.random.key(0), 6)
    scores = jax.random.bernoulli(k_scores, 0.5, (args.groups, args.n)).astype(jnp.float32)
    lengths = jax.random.randint(k_len, (args.groups, args.n), 1, args.response_len + 1)
    response_mask = jnp.arange(args.response_len)[None, None, :] < lengths[..., None]
    token_rewards = advantages.outcome_token_rewards(scores, response_mask)
    grpo = jax.jit(advantages.get_advantage_estimator("grpo"))
    adv_first, adv_time = timed(grpo, token_rewards, response_mask, repeats=args.repeats)
    rollout_adv = grpo(token_rewards, response_mask).rollout
    del token_rewards, response_mask

    cfg = SelectionConfig("pts_abs", args.n, keep_ratio=args.keep_ratio, rounds=args.rounds)
    select = jax.jit(lambda rollout_advantages, key: select_update_rows(rollout_advantages, cfg, key))
    sel_first, sel_time = timed(select, rollout_adv, k_shuffle, repeats=args.repeats)
    rows, _, stats = select(rollout_adv, k_shuffle)
    trajectories = rows.shape[0]

    shape = (trajectories, args.response_len)
    old_logp = -jax.random.exponential(k_old, shape)
    logp = old_logp + 0.05 * jax.random.normal(k_lp, shape)
    adv = jnp.broadcast_to(jax.random.normal(k_adv, (trajectories, 1)), shape)
    loss_lengths = jnp.take(lengths.reshape(-1), rows)
    mask = jnp.arange(args.response_len)[None, :] < loss_lengths[:, None]
    loss_first, loss_time = timed(loss_and_grad, logp, old_logp, adv, mask, repeats=args.repeats)

    share = sel_time / loss_time
    command = "python scripts/bench_rl.py" + "".join(
        f" --{name.replace('_', '-')} {value}"
        for name, value in [
            ("groups", args.groups),
            ("n", args.n),
            ("keep_ratio", args.keep_ratio),
            ("rounds", args.rounds),
            ("response_len", args.response_len),
            ("repeats", args.repeats),
        ]
    )
    pairs = args.groups * pts.num_kept_pairs(args.n, args.keep_ratio)
    body = (
        f"Command: `{command}`; {machine_description()}, {datetime.date.today()}.\n"
        f"Median of {args.repeats} runs after compilation, each ended by `block_until_ready`.\n\n"
        f"| kernel | shape | time | compile + first run |\n|---|---|---|---|\n"
        f"| GRPO advantages (from token rewards) | {args.groups} x {args.n} x {args.response_len} tokens | "
        f"{adv_time * 1e3:.2f} ms | {adv_first:.2f} s |\n"
        f"| PTS + ABS (+ pair weights, update-batch indices, draw stats) | {args.groups} x {args.n} rollouts -> "
        f"{pairs} pairs -> {args.rounds} rounds x {pairs // args.rounds} | {sel_time * 1e3:.2f} ms | "
        f"{sel_first:.2f} s |\n"
        f"| policy loss forward + grad w.r.t. log-probs (token-mean, dual clip) | {trajectories} x "
        f"{args.response_len} tokens | {loss_time * 1e3:.1f} ms | {loss_first:.2f} s |\n\n"
        f"ABS draw statistics of this run: {int(stats['abs/unique_pairs'])} of {pairs} pairs drawn at least once, "
        f"max repeats {int(stats['abs/max_repeats'])}, {int(stats['abs/num_valid'])} valid slots.\n\n"
        f"PTS + ABS take {100 * share:.2f}% of the time of the loss alone. The loss (forward + grad w.r.t. the "
        f"log-probs, no model) is a lower bound of a training step's update phase, which also runs the model "
        f"forward and backward over the same {trajectories} x {args.response_len} tokens (and generation, rewards "
        f"and old log-probs come on top), so PTS + ABS are at most {100 * share:.2f}% of a step, in practice far "
        f"less.\n"
    )
    print(body)
    if not args.no_write:
        write_section(NOTES, SECTION, body)


if __name__ == "__main__":
    main()
