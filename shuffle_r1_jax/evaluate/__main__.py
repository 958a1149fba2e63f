"""`python -m shuffle_r1_jax.evaluate`: evaluate a checkpoint on a dataset as the trainer validates, with every sample
kept; with no flags, the demo's starting policy on the demo's validation set.

    python -m shuffle_r1_jax.evaluate --checkpoint DIR --data PATH[@SPLIT][,PATH[@SPLIT]...] \\
        [--config configs/<name>.py[:args]] [--config.key=value ...] [--out DIR] [--verbose]

Flags:
  --checkpoint  an HF-format Qwen2.5-VL directory (an exported run, `scripts/export_to_hf.py`) or one converted by
                `scripts/convert_hf_to_orbax.py`; sets `model.checkpoint` (default: the config's). A trainer's
                workdir or checkpoints directory stops with a hint to export it first.
  --data        the dataset spec in the EasyR1 layout, parquet or jsonl, path[@split], comma-separated for several
                (each record's `data_source` gives the per-source figures); sets `data.val` (default: the config's).
  --config      the training config file, optionally with :arguments (default: the demo's, as
                `python -m shuffle_r1_jax.train`); `--config.<key>=<value>` overrides any key. What is read: `eval.n`,
                `eval.temperature`, `eval.top_p`, `eval.max_prompts`, `eval.pass_k`, `seed`, the `data.*` columns,
                prompt format, buckets, image bounds, `data.rollout_batch_prompts` (prompts per batch),
                `data.on_bad_record` and `data.max_consecutive_bad_records`, the `reward.*` keys,
                `rollout.max_new_tokens` (the length limit), `rollout.prompts_per_sampler_call`, `rollout.decode_*`,
                the `model.*` dtypes and attention kernel, and the `mesh` and `distributed` sections (the batch is
                sharded over the mesh as in training). Every key is documented in shuffle_r1_jax/train/defaults.py.
  --out         the output directory (created; default runs/eval): samples.jsonl (every sample), greedy.jsonl,
                summary.json (shuffle_r1_jax/evaluate/run.py describes them) and run.log.
  --verbose     print the traceback of an error (always in <out>/run.log once the run has started).

The figures (mean@n, unbiased pass@k, greedy accuracy, response-length statistics, per data source) are printed
and written to summary.json; its `validation_metrics` are the trainer's `val/...` figures for the same checkpoint,
data and settings. Unusable records are counted by reason and skipped (or stop the run) as in training. A user
error (config, inputs, data, output directory) prints one line (`--verbose`: with its traceback) and exits with
status 2.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging

from shuffle_r1_jax.train import cli

_CONFIG = cli.CONFIG  # --config, shared with the trainer's command line
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "HF-format or converted Qwen2.5-VL directory (default: the config's model.checkpoint)"
)
_DATA = flags.DEFINE_string("data", None, "dataset spec path[@split], comma-separated (default: data.val)")
_OUT = flags.DEFINE_string("out", "runs/eval", "output directory: samples.jsonl, greedy.jsonl, summary.json, run.log")
_VERBOSE = cli.VERBOSE


def main(argv: list[str]) -> int:
    """Resolves the evaluation's settings, evaluates and prints the figures.

    Returns:
      The exit status: 0 after the evaluation, 2 after a user error (config, checkpoint, data, output directory,
      an I/O failure), printed as one line on stderr.
    """
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain log every operation at INFO
    from shuffle_r1_jax.evaluate.run import EvaluateError, evaluate_checkpoint, evaluation_settings
    from shuffle_r1_jax.parallel.distributed import is_main_process
    from shuffle_r1_jax.train.evaluation import NoUsablePromptError

    errors = (*cli.user_errors(), EvaluateError, NoUsablePromptError)
    run_log = None
    try:
        settings = evaluation_settings(_CONFIG.value, _CHECKPOINT.value, _DATA.value)
        if is_main_process():
            run_log = cli.open_run_log(_OUT.value)
        else:
            logging.getLogger().setLevel(logging.WARNING)
        summary = evaluate_checkpoint(settings, _OUT.value)
    except errors as err:
        cli.report(err, run_log, _VERBOSE.value)
        return 2
    finally:
        cli.close_run_log(run_log)
    if is_main_process():
        print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    """The summary's figures as console lines: overall, each data source, the skipped records, the files."""
    n = summary["settings"]["n"]

    def line(name: str, figures: dict) -> str:
        scores = ", ".join(f"{key} {figures[key]:.3f}" for key in figures if "@" in key)
        length = figures["response_length"]
        return (
            f"{name}: {figures['prompts']} prompts x {n}: {scores}, greedy {figures['greedy']:.3f}; response length "
            f"mean {length['mean']:.1f}, p50 {length['p50']:.0f}, p90 {length['p90']:.0f}, max {length['max']:.0f}, "
            f"truncated {length['truncated']:.1%}"
        )

    lines = [line(summary["settings"]["data"], summary["overall"])]
    lines += [line(f"  {source}", figures) for source, figures in summary["data_sources"].items()]
    records = summary["records"]
    reasons = ", ".join(f"{reason} {count}" for reason, count in records["unusable_by_reason"].items())
    lines.append(f"records: {records['read']} read" + (f", skipped as unusable: {reasons}" if reasons else ""))
    lines.append("wrote " + ", ".join(summary["files"].values()))
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
