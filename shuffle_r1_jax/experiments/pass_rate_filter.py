"""The offline pass-rate filter: n samples per training prompt from the starting policy, scored by the run's reward;
the records the policy always solves or never solves are dropped before training.

One pass over `data.train` in record order (no shuffle), `data.rollout_batch_prompts` prompts per sampler call
(a short last batch is padded by repeating its last prompt, which is not counted), sampled as the training
rollouts are (`rollout.temperature`, `top_p`, `top_k`, `max_new_tokens`) with `n` samples per prompt; batch i
samples with `fold_in(key(seed), i)`. A prompt's pass rate is `rollout.metrics.group_pass_rates`: the mean over
its n responses of the reward's "accuracy" part (else "overall"), clipped to [0, 1]. Unusable records are counted
by reason and skipped as the training pipeline does (`data.on_bad_record`, `data.max_consecutive_bad_records`);
they have no pass rate.

What `filter_by_pass_rate` writes into its output directory:
  data/<file>             the kept records in the dataset's own layout: for each input data file one file of the
                          same format (parquet: every original column, jsonl: every original key) holding its kept
                          records in order, with a float `pass_rate` column; `--config.data.train=<out>/data`
                          trains on them
  pass_rates.parquet      every record: record_index (int64), record_id, data_source, pass_rate (float64, null
                          for an unusable record), verdict (kept, always_right, always_wrong, below_min, above_max,
                          bad), bad_reason (null for a usable record)
  pass_rate_stats.json    the settings (n, policy checkpoint, dataset, reward, sampling, the kept band), records
                          read and unusable by reason, kept and dropped by verdict, a histogram of the pass rates,
                          the responses right out of n, the counts per data source, reward failures, wall time

One process only: the prompt stream and the output files are not split over processes (several processes raise
`PassRateFilterError`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from jax.sharding import NamedSharding, PartitionSpec

from shuffle_r1_jax.data.examples import BadRecord, make_example
from shuffle_r1_jax.data.sources import RecordSource
from shuffle_r1_jax.models.qwen2_5_vl import load_config
from shuffle_r1_jax.parallel.mesh_config import build_mesh
from shuffle_r1_jax.rollout.metrics import group_pass_rates
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.train.components import (
    load_policy,
    prompt_encoder,
    prompt_stream,
    reward_pool,
    rollout_generator,
)
from shuffle_r1_jax.train.evaluation import repeat_last_prompt
from shuffle_r1_jax.train.programs import SpecialTokens, build_rollout_programs
from shuffle_r1_jax.train.settings import RunSettings

logger = logging.getLogger(__name__)

DATA_DIR = "data"
PASS_RATES_FILE = "pass_rates.parquet"
STATS_FILE = "pass_rate_stats.json"
VERDICTS = ("kept", "always_right", "always_wrong", "below_min", "above_max", "bad")
HISTOGRAM_BINS = 10


class PassRateFilterError(RuntimeError):
    """The filter cannot run as asked (several processes, an output directory in use); the message says why."""


@dataclasses.dataclass(frozen=True)
class PassRateBand:
    """The pass rates kept.

    Attributes:
      min_pass_rate: keep pass rates >= this; None keeps every rate above 0 (drops exactly the always-wrong).
      max_pass_rate: keep pass rates <= this; None keeps every rate below 1 (drops exactly the always-right).

    Raises:
      ValueError: a bound is outside [0, 1] or min > max.
    """

    min_pass_rate: float | None = None
    max_pass_rate: float | None = None

    def __post_init__(self):
        for name in ("min_pass_rate", "max_pass_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} = {value} must be in [0, 1]")
        if None not in (self.min_pass_rate, self.max_pass_rate) and self.min_pass_rate > self.max_pass_rate:
            raise ValueError(f"min_pass_rate = {self.min_pass_rate} exceeds max_pass_rate = {self.max_pass_rate}")

    def describe(self) -> str:
        """The kept band as text, e.g. "0 < pass rate < 1"."""
        low = "0 <" if self.min_pass_rate is None else f"{self.min_pass_rate:g} <="
        high = "< 1" if self.max_pass_rate is None else f"<= {self.max_pass_rate:g}"
        return f"{low} pass rate {high}"

    def verdicts(self, rates: np.ndarray) -> np.ndarray:
        """Each record's verdict (one of VERDICTS).

        Args:
          rates: `float64[N]` pass rates in [0, 1], NaN for an unusable record.

        Returns:
          `object[N]` strings: "bad" (NaN), "kept" (inside the band), else "always_wrong" (exactly 0),
          "always_right" (exactly 1), "below_min" or "above_max".
        """
        rates = np.asarray(rates, np.float64)
        scored = ~np.isnan(rates)
        safe = np.where(scored, rates, 0.5)
        above = safe > 0 if self.min_pass_rate is None else safe >= self.min_pass_rate
        below = safe < 1 if self.max_pass_rate is None else safe <= self.max_pass_rate
        out = np.where(above, "above_max", "below_min").astype(object)
        out[safe == 0] = "always_wrong"
        out[safe == 1] = "always_right"
        out[above & below] = "kept"
        out[~scored] = "bad"
        return out


@dataclasses.dataclass
class MeasuredPassRates:
    """Every record's pass rate under the starting policy, from one pass over a dataset.

    Attributes:
      source: the records (`data.train`).
      pass_rates: `float64[N]` by record index, NaN for an unusable record.
      bad_reasons: N entries, the reason an unusable record was skipped (`data.examples.BAD_RECORD_REASONS`), None
        for a usable one.
      record_ids: N record ids ("<file> row <i>" / "<file> line <n>").
      data_sources: N data sources.
      counts: the prompt stream's counters at the end (`PromptBatchIterator.counts`).
      reward_failures: reward failures by reason, summed over the batches.
      seconds: wall time of the pass (model loading included).
    """

    source: RecordSource
    pass_rates: np.ndarray
    bad_reasons: list[str | None]
    record_ids: list[str]
    data_sources: list[str]
    counts: dict[str, int]
    reward_failures: dict[str, int]
    seconds: float


def _require_one_process() -> None:
    if jax.process_count() > 1:
        raise PassRateFilterError(
            f"the pass-rate filter runs on one process; this run has {jax.process_count()} (run it on one host "
            "without distributed.initialize)"
        )


def _progress_line(read: int, total: int, bad: int, elapsed: float) -> str:
    rate = read / max(elapsed, 1e-9)
    left = (total - read) / rate if rate > 0 else float("inf")
    return (
        f"pass rates: {read}/{total} records ({read / total:.0%}), {rate:.1f} records/s, {bad} unusable, "
        f"{elapsed:.0f} s elapsed, about {left:.0f} s left"
    )


def measure_pass_rates(
    settings: RunSettings,
    n: int,
    *,
    progress: Callable[[str], None] = logger.info,
    progress_every_s: float = 30.0,
) -> MeasuredPassRates:
    """Samples `n` responses for every usable record of `settings.data.train` with the starting policy
    (`model.checkpoint`) and scores them with `reward.name`.

    Args:
      settings: the resolved run settings (the same config as training).
      n: samples per prompt (>= 1).
      progress: called with a progress line (records read of the total, records per second, unusable records,
        time left) every `progress_every_s` seconds and at the end.
      progress_every_s: seconds between progress lines.

    Returns:
      The `MeasuredPassRates`.

    Raises:
      PassRateFilterError: several processes, or the batch's rows do not divide over the mesh's batch shards.
      ValueError: n < 1.
      BadRecordError: an unusable record with `data.on_bad_record = "error"`, or (`UnusableDataError`)
        `data.max_consecutive_bad_records` of them in a row.
    """
    _require_one_process()
    if n < 1:
        raise ValueError(f"samples per prompt = {n} must be >= 1")
    start = time.perf_counter()
    data, model = settings.data, settings.model
    source = RecordSource(data.train, data.columns)
    encoder = prompt_encoder(model.checkpoint, data)
    model_config = load_config(model.checkpoint)
    batches = prompt_stream(data, source, encoder, model_config, shuffle=False, seed=0, epochs=1)
    mesh = build_mesh(settings.mesh)
    shards = settings.batch_shards
    if data.rollout_batch_prompts * n % shards:
        raise PassRateFilterError(
            f"a batch of data.rollout_batch_prompts x samples per prompt = {data.rollout_batch_prompts} x {n} rows "
            f"does not divide over the mesh's {shards} batch shards (data x fsdp); change either"
        )
    graphdef, params = load_policy(settings, mesh)
    image_features, sampler = build_rollout_programs(
        settings, graphdef, mesh, SpecialTokens.of(model_config, encoder.tokenizer)
    )
    key = jax.device_put(jax.random.key(settings.seed), NamedSharding(mesh, PartitionSpec()))
    rates = np.full(len(source), np.nan)
    record_ids: list[str | None] = [None] * len(source)
    data_sources: list[str | None] = [None] * len(source)
    failures: collections.Counter[str] = collections.Counter()
    logger.info("pass rates of %s: %d records, %d samples per prompt", data.train, len(source), n)
    with reward_pool(settings) as pool:
        placer = BatchPlacer(mesh, encoder.pad_token_id, model_config.vision.spatial_merge_size**2)
        generate = rollout_generator(settings, sampler, image_features, placer, encoder.tokenizer, pool, n)
        last_report = time.perf_counter()
        for index, batch in enumerate(batches):
            scored = generate(
                params, repeat_last_prompt(batch, data.prompts_per_process), jax.random.fold_in(key, index)
            )
            rates[batch.record_indices] = group_pass_rates(scored.parts, n)[: batch.batch_size]
            for i, record_index in enumerate(batch.record_indices):
                record_ids[record_index], data_sources[record_index] = batch.record_ids[i], batch.data_sources[i]
            failures.update(scored.reward_failures)
            if time.perf_counter() - last_report >= progress_every_s:
                counts = batches.counts()
                progress(
                    _progress_line(
                        counts["records_read"], len(source), counts["bad_records/total"], time.perf_counter() - start
                    )
                )
                last_report = time.perf_counter()
    counts = batches.counts()
    progress(
        _progress_line(counts["records_read"], len(source), counts["bad_records/total"], time.perf_counter() - start)
    )
    bad_reasons: list[str | None] = [None] * len(source)
    for i in np.flatnonzero(np.isnan(rates)):
        record = source[i]
        example = make_example(record, encoder, source.columns)
        record_ids[i], data_sources[i] = record.record_id, record.data_source
        bad_reasons[i] = example.reason if isinstance(example, BadRecord) else None
    return MeasuredPassRates(
        source=source,
        pass_rates=rates,
        bad_reasons=bad_reasons,
        record_ids=record_ids,
        data_sources=data_sources,
        counts=counts,
        reward_failures={k: int(v) for k, v in failures.items() if v},
        seconds=time.perf_counter() - start,
    )


def check_output_dir(out_dir: Path) -> None:
    """Creates `out_dir` if missing and checks it is empty and writable (before the long pass).

    Raises:
      PassRateFilterError: it holds files already, or cannot be created or written.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if any(out_dir.iterdir()):
            raise PassRateFilterError(f"output directory {str(out_dir)!r} is not empty; give a new one")
        probe = out_dir / ".write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PassRateFilterError(f"output directory {str(out_dir)!r} cannot be created or written: {err}") from err


def _verdict_counts(verdicts: np.ndarray) -> dict[str, int]:
    return {v: int(np.sum(verdicts == v)) for v in VERDICTS}


def filter_statistics(measured: MeasuredPassRates, band: PassRateBand, n: int) -> dict:
    """The statistics of a filtered dataset (without the settings and output paths `write_filtered` adds).

    Returns:
      A JSON-serialisable dict: `records` (total, read, usable, unusable, unusable_by_reason), `kept`, `dropped`
      (always_right, always_wrong, below_min, above_max), `mean_pass_rate` (over usable records, None without
      any), `histogram` (`edges`, 11 floats, and `counts` of the usable records' pass rates in 10 bins over
      [0, 1], the last closed), `right_of_n` (records by the number of right responses, pass rate x n rounded, "0"
      to str(n)), `data_sources` (per source: records, unusable, kept, the dropped verdicts, mean_pass_rate) and
      `reward_failures`.
    """
    rates = measured.pass_rates
    verdicts = band.verdicts(rates)
    usable = rates[~np.isnan(rates)]
    counts = _verdict_counts(verdicts)
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    right = np.bincount(np.rint(usable * n).astype(np.int64), minlength=n + 1)
    per_source = {}
    sources = np.asarray(measured.data_sources, dtype=object)
    for name in sorted(set(measured.data_sources)):
        mine = sources == name
        mine_rates = rates[mine & ~np.isnan(rates)]
        by_verdict = _verdict_counts(verdicts[mine])
        per_source[name] = {
            "records": int(mine.sum()),
            "unusable": by_verdict.pop("bad"),
            **by_verdict,
            "mean_pass_rate": float(mine_rates.mean()) if len(mine_rates) else None,
        }
    bad = {k.removeprefix("bad_records/"): v for k, v in measured.counts.items() if k.startswith("bad_records/")}
    total_bad = bad.pop("total")
    return {
        "records": {
            "total": len(rates),
            "read": measured.counts["records_read"],
            "usable": len(usable),
            "unusable": total_bad,
            "unusable_by_reason": {k: v for k, v in bad.items() if v},
        },
        "kept": counts["kept"],
        "dropped": {v: counts[v] for v in ("always_right", "always_wrong", "below_min", "above_max")},
        "mean_pass_rate": float(usable.mean()) if len(usable) else None,
        "histogram": {"edges": np.round(edges, 6).tolist(), "counts": np.histogram(usable, edges)[0].tolist()},
        "right_of_n": {str(k): int(c) for k, c in enumerate(right)},
        "data_sources": per_source,
        "reward_failures": measured.reward_failures,
    }


def write_filtered(measured: MeasuredPassRates, band: PassRateBand, out_dir: Path, settings: dict) -> dict:
    """Writes the kept records, every record's pass rate and the statistics into `out_dir` (see the module
    docstring).

    Args:
      measured: the pass rates.
      band: the kept pass rates.
      out_dir: an existing, empty directory.
      settings: what the statistics record of the run (JSON values; `n` is the samples per prompt).

    Returns:
      The statistics as written to `pass_rate_stats.json`: `settings`, `band`, the `filter_statistics`, `output`
      (data_dir, data_files, pass_rates, stats) and `seconds`.
    """
    rates = measured.pass_rates
    verdicts = band.verdicts(rates)
    kept = np.flatnonzero(verdicts == "kept")
    data_dir = out_dir / DATA_DIR
    data_dir.mkdir()
    files = measured.source.write_subset(kept, data_dir, {"pass_rate": rates[kept]})
    table = pa.table(
        {
            "record_index": pa.array(np.arange(len(rates)), pa.int64()),
            "record_id": pa.array(measured.record_ids, pa.string()),
            "data_source": pa.array(measured.data_sources, pa.string()),
            "pass_rate": pa.array(rates, pa.float64(), mask=np.isnan(rates)),
            "verdict": pa.array(verdicts.tolist(), pa.string()),
            "bad_reason": pa.array(measured.bad_reasons, pa.string()),
        }
    )
    pq.write_table(table, out_dir / PASS_RATES_FILE)
    stats = {
        "settings": settings,
        "band": {"min_pass_rate": band.min_pass_rate, "max_pass_rate": band.max_pass_rate, "kept": band.describe()},
        **filter_statistics(measured, band, settings["n"]),
        "output": {
            "data_dir": str(data_dir),
            "data_files": [str(f) for f in files],
            "pass_rates": str(out_dir / PASS_RATES_FILE),
            "stats": str(out_dir / STATS_FILE),
        },
        "seconds": measured.seconds,
    }
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def run_settings_record(settings: RunSettings, n: int) -> dict:
    """What the statistics record of a filter run: n, the policy checkpoint, the dataset, the reward and the
    sampling settings."""
    rollout = settings.rollout
    return {
        "n": n,
        "policy_checkpoint": settings.model.checkpoint,
        "dataset": settings.data.train,
        "reward": settings.reward.name,
        "temperature": rollout.temperature,
        "top_p": rollout.top_p,
        "top_k": rollout.top_k,
        "max_new_tokens": rollout.max_new_tokens,
        "seed": settings.seed,
        "prompts_per_batch": settings.data.rollout_batch_prompts,
    }


def filter_by_pass_rate(
    settings: RunSettings,
    out_dir: str | Path,
    *,
    n: int = 8,
    band: PassRateBand = PassRateBand(),
    progress: Callable[[str], None] = logger.info,
) -> dict:
    """Measures every training record's pass rate with the starting policy and writes the records inside `band`.

    Args:
      settings: the resolved run settings (the training config).
      out_dir: the output directory (created; must be empty).
      n: samples per prompt.
      band: the kept pass rates (default: drop exactly 0 and exactly 1).
      progress: receives the progress lines.

    Returns:
      The statistics written to `<out_dir>/pass_rate_stats.json` (`write_filtered`).

    Raises:
      PassRateFilterError: several processes, the batch's rows do not divide over the mesh's batch shards, or the
        output directory is not empty or not writable.
      BadRecordError: see `measure_pass_rates`.
    """
    out_dir = Path(out_dir)
    _require_one_process()
    check_output_dir(out_dir)
    measured = measure_pass_rates(settings, n, progress=progress)
    return write_filtered(measured, band, out_dir, run_settings_record(settings, n))
