"""One evaluation of a checkpoint on a dataset: the settings (the training config with the checkpoint and the data
given), the trainer's validation over them, and the files it writes.

The evaluation is the trainer's validation (`train.evaluation.Evaluator.build`): the same prompt stream, samplers,
key and figures, so `validation_metrics` in the summary equal the trainer's `val/...` metrics for the same
checkpoint, data and settings. What it adds: every sample kept (`records`), pass@k and response-length statistics
(`figures`), per data source.

Files written into the output directory (by process 0):
  samples.jsonl   every sampled response, `eval.n` per prompt, in prompt order (`records` describes a row)
  greedy.jsonl    the greedy response of every prompt, the same row layout (sample 0)
  summary.json    the settings, `overall` and `data_sources` figures (`figures.group_figures`), the trainer's
                  `validation_metrics`, the records read and skipped by reason, reward failures and wall time
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import jax
from ml_collections import ConfigDict
from tqdm import tqdm

from shuffle_r1_jax.data.pipeline import unusable_by_reason
from shuffle_r1_jax.data.sources import DataSpecError, RecordSource, resolve_data_files
from shuffle_r1_jax.evaluate.figures import evaluation_figures
from shuffle_r1_jax.evaluate.records import SampleRecorder, write_jsonl
from shuffle_r1_jax.models.qwen2_5_vl import load_config
from shuffle_r1_jax.parallel.global_arrays import summed_over_processes
from shuffle_r1_jax.parallel.mesh_config import build_mesh
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.train import settings as run_settings
from shuffle_r1_jax.train.components import load_policy, prompt_encoder, reward_pool
from shuffle_r1_jax.train.evaluation import Evaluator
from shuffle_r1_jax.train.export import TRAINER, checkpoint_layout
from shuffle_r1_jax.train.programs import SpecialTokens, build_rollout_programs
from shuffle_r1_jax.train.settings import RunSettings

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
GREEDY_FILE = "greedy.jsonl"
SUMMARY_FILE = "summary.json"


class EvaluateError(ValueError):
    """The evaluation cannot run as asked (a trainer directory given as the checkpoint, no data, an output
    directory that cannot be written); the message names the flag and the value."""


def check_checkpoint(path: str) -> None:
    """Stops early on a trainer's workdir or checkpoints directory given as `--checkpoint`.

    Raises:
      EvaluateError: `path` is not a directory, or it has no config.json and is a trainer run's directory (as
        `train.export.checkpoint_layout` tells); the message says how to export it.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise EvaluateError(f"--checkpoint {path!r} is not a directory: give an HF-format or converted checkpoint")
    if (directory / "config.json").is_file():
        return
    try:
        layout, _ = checkpoint_layout(directory)
    except ValueError:
        return
    if layout == TRAINER:
        raise EvaluateError(
            f"--checkpoint {path!r} is a trainer's workdir or checkpoints directory, not a model: export it first "
            f"(python scripts/export_to_hf.py --ckpt {path} --out DIR) and evaluate DIR"
        )


def check_data(spec: str) -> None:
    """Checks that every comma-separated path[@split] of `spec` names data files.

    Raises:
      EvaluateError: one names none; the message gives `--data`, the spec and why.
    """
    for part in spec.split(","):
        try:
            resolve_data_files(part)
        except DataSpecError as err:
            raise EvaluateError(f"--data {spec!r}: {err}") from err


def check_output_dir(out_dir: Path) -> None:
    """Creates `out_dir` if missing and checks that it can be written (before the model loads).

    Raises:
      EvaluateError: it cannot be created or written.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise EvaluateError(f"--out {str(out_dir)!r} cannot be created or written: {err}") from err


def evaluation_settings(c: ConfigDict, checkpoint: str | None, data: str | None) -> RunSettings:
    """The settings of an evaluation: the training config `c` after its setup, with `model.checkpoint` and
    `data.val` replaced by `checkpoint` and `data` when given.

    Only `data.val` is read: `data.train` is set to it (the config's training data need not exist), and the
    stages and the response-length schedule are dropped (the trainer validates with the run's top-level settings).

    Args:
      c: the training config (`--config` and its overrides).
      checkpoint: an HF or converted checkpoint directory (None: the config's `model.checkpoint`).
      data: the dataset spec, path[@split], comma-separated for several (None: the config's `data.val`).

    Raises:
      EvaluateError: `checkpoint` is not a directory or is a trainer's, or the dataset is missing or names no
        files.
      ConfigError: a config value is invalid, or an input is missing (the message names the key).
    """
    if checkpoint:
        check_checkpoint(checkpoint)
    if data:
        check_data(data)
    run_settings.start_distributed(c)
    run_settings.resolve(c, check_inputs=False)
    c = run_settings.run_setup(c).copy_and_resolve_references()
    if checkpoint:
        c.model.checkpoint = checkpoint
    if data:
        c.data.val = data
    if not c.data.val:
        raise EvaluateError("--data is not given and the config has no data.val: give a dataset path[@split]")
    check_data(c.data.val)
    c.data.train = c.data.val
    c.stages = ()
    c.rollout.length_schedule = ()
    return run_settings.resolve(c)


def evaluate_checkpoint(settings: RunSettings, out_dir: str | Path, *, progress: bool | None = None) -> dict:
    """Evaluates `model.checkpoint` on `data.val` as the trainer validates, and writes the files of the module
    docstring into `out_dir`.

    Args:
      settings: the evaluation's settings (`evaluation_settings`).
      out_dir: the output directory (created).
      progress: show a progress bar over the prompts on stderr (process 0); None: when stderr is a terminal.

    Returns:
      The summary, as written to `summary.json`.

    Raises:
      BadRecordError: an unusable record with `data.on_bad_record = "error"`, or `data.max_consecutive_bad_records`
        of them in a row.
      NoUsablePromptError: the dataset gave no usable prompt.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    data, model = settings.data, settings.model
    encoder = prompt_encoder(model.checkpoint, data)
    model_config = load_config(model.checkpoint)
    total = len(RecordSource(data.val, data.columns))
    if settings.eval.max_prompts:
        total = min(total, settings.eval.max_prompts)
    mesh = build_mesh(settings.mesh)
    logger.info("evaluating %s on %s (%d prompts, mesh %s)", model.checkpoint, data.val, total, dict(mesh.shape))
    graphdef, params = load_policy(settings, mesh)
    tokens = SpecialTokens.of(model_config, encoder.tokenizer)
    image_features, _ = build_rollout_programs(settings, graphdef, mesh, tokens)
    placer = BatchPlacer(mesh, encoder.pad_token_id, model_config.vision.spatial_merge_size**2)
    main = jax.process_index() == 0
    show = (sys.stderr.isatty() if progress is None else progress) and main
    bar = tqdm(total=math.ceil(total / jax.process_count()), unit="prompt", desc="evaluate", disable=not show)
    recorder = SampleRecorder(placer)

    def on_batch(scored):
        recorder(scored)
        bar.update(scored.weight)

    with reward_pool(settings) as pool:
        evaluator = Evaluator.build(
            settings,
            graphdef=graphdef,
            mesh=mesh,
            tokens=tokens,
            image_features=image_features,
            placer=placer,
            encoder=encoder,
            model_config=model_config,
            pool=pool,
            samples_file=None,
        )
        metrics = evaluator.evaluate(params, 0, on_batch=on_batch)
    bar.close()
    samples, greedy, failures = recorder.gathered()
    counts = summed_over_processes(evaluator.data_counts)
    summary = {
        "settings": _settings_record(settings),
        **evaluation_figures(samples, greedy, settings.eval.n, settings.eval.pass_k),
        "validation_metrics": metrics,
        "records": _records_record(counts),
        "reward_failures": failures,
        "files": {name: str(out_dir / name) for name in (SAMPLES_FILE, GREEDY_FILE, SUMMARY_FILE)},
        "seconds": time.perf_counter() - start,
    }
    if main:
        write_jsonl(out_dir / SAMPLES_FILE, samples)
        write_jsonl(out_dir / GREEDY_FILE, greedy)
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _records_record(counts: dict[str, int]) -> dict:
    """Records read, used and unusable (by reason, the reasons that occurred) from the stream's counters."""
    return {
        "read": counts.get("records_read", 0),
        "used": counts.get("records_used", 0),
        "unusable": counts.get("bad_records/total", 0),
        "unusable_by_reason": unusable_by_reason(counts),
    }


def _settings_record(settings: RunSettings) -> dict:
    """What the summary records of the settings: checkpoint, data, reward, prompt format and sampling."""
    return {
        "checkpoint": settings.model.checkpoint,
        "data": settings.data.val,
        "reward": settings.reward.name,
        "prompt_format": settings.data.prompt_format,
        "n": settings.eval.n,
        "temperature": settings.eval.temperature,
        "top_p": settings.eval.top_p,
        "max_new_tokens": settings.rollout.max_new_tokens,
        "pass_k": list(settings.eval.pass_k),
        "max_prompts": settings.eval.max_prompts,
        "seed": settings.seed,
        "prompts_per_batch": settings.data.rollout_batch_prompts,
        "processes": jax.process_count(),
    }
