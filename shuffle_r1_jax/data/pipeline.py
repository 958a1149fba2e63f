"""The prompt input pipeline: grain for order, sharding and parallel decoding; batches of `PromptBatch`.

Order of records with `sampling="uniform"` (a grain `MapDataset`, all lazy):
  source -> shuffle (seeded; each epoch permuted with its own seed) -> repeat (num_epochs; None = forever)
  -> this process's share: elements process_index, process_index + process_count, ... of the global stream
  -> make_example (image decode, prompt encoding; a data problem gives a `BadRecord`)
  -> an iterator with `num_threads` worker threads prefetching in order.
Every process walks the same global stream and takes every process_count-th element, so the processes
together consume each element of the stream exactly once (each epoch exactly once when the record count is a
multiple of process_count). `batch_size` is per process. `sampling="curriculum"` reads the source in its
curriculum order (easy to hard by a column) instead of shuffling; `sampling="prioritized"` draws each batch by
measured pass rate (`data.record_order`).

Every iterator keeps a `PassRateTable` of its records, fed by the trainer (`observe`) after each rollout batch;
prioritized sampling draws by it, and it is part of the iterator's state.

The iterator collects `batch_size` good examples into a `PromptBatch`, counting bad records by reason
(`on_bad_record="skip"`) or raising `BadRecordError` naming the record and reason (`"error"`). A stream where no
record is usable stops with `UnusableDataError` (the counts by reason and the last bad record) after
`max_consecutive_bad` bad records in a row, by default one pass over this process's share. Its state
(`get_state` / `set_state`, a JSON-serialisable dict) is taken between batches: grain's position in the stream
plus the counters, so a restored iterator yields exactly the batches the original would have yielded next.

Multi-process training should use num_epochs=None and stop by step count: bad records are skipped per process,
so with a finite stream processes can run out one batch apart.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import grain
import numpy as np

from shuffle_r1_jax.data.examples import BAD_RECORD_REASONS, BadRecord, make_example
from shuffle_r1_jax.data.pass_rates import PassRateTable
from shuffle_r1_jax.data.record_order import (
    OrderedSource,
    PrioritizedDraws,
    SamplingConfig,
    column_numbers,
    curriculum_order,
)
from shuffle_r1_jax.data.sources import Columns, RecordSource
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.processing.batch import BucketConfig, PromptBatch, PromptExample, collate_prompts
from shuffle_r1_jax.processing.prompts import PromptEncoder

STATE_VERSION = 2
ON_BAD_RECORD = ("skip", "error")


class BadRecordError(RuntimeError):
    """Raised with on_bad_record="error": the message names the record and the reason."""


class UnusableDataError(BadRecordError):
    """Raised after `max_consecutive_bad` bad records in a row: the message gives the counts by reason and the
    last bad record."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Settings of the prompt pipeline.

    Attributes:
      batch_size: prompts per batch on this process.
      seed: shuffle seed, in [0, 2**32).
      shuffle: permute the records (each epoch with its own seed).
      num_epochs: passes over the records (None = forever).
      process_index: this process's share of the stream (jax.process_index()).
      process_count: the number of shares (jax.process_count()).
      on_bad_record: "skip" (count and skip) or "error" (raise `BadRecordError`).
      drop_remainder: at the end of a finite stream, drop a last incomplete batch (else yield it smaller).
      max_consecutive_bad: stop with `UnusableDataError` after this many bad records in a row (0 = one pass
        over this process's share of the records).
      num_threads: grain read threads (prioritized sampling: threads decoding a draw).
      prefetch: grain prefetch buffer (elements).
      sampling: the record order (uniform, curriculum or prioritized; prioritized needs num_epochs None).

    Raises:
      ValueError: a field is out of range; the message names the `data.` key.
    """

    batch_size: int
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None
    process_index: int = 0
    process_count: int = 1
    on_bad_record: str = "skip"
    drop_remainder: bool = True
    max_consecutive_bad: int = 0
    num_threads: int = 2
    prefetch: int = 16
    sampling: SamplingConfig = SamplingConfig()

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ValueError(f"data.batch_size = {self.batch_size} must be positive")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"data.seed = {self.seed} must be in [0, 2**32)")
        if self.num_epochs is not None and self.num_epochs <= 0:
            raise ValueError(f"data.num_epochs = {self.num_epochs} must be positive or None (forever)")
        if self.process_count <= 0 or not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"data.process_index = {self.process_index} must be in [0, process_count = {self.process_count})"
            )
        if self.on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"data.on_bad_record = {self.on_bad_record!r}; expected one of {ON_BAD_RECORD}")
        if self.max_consecutive_bad < 0:
            raise ValueError(
                f"data.max_consecutive_bad_records = {self.max_consecutive_bad} must be >= 0 (0 = one pass)"
            )
        if self.num_threads < 0 or self.prefetch < 0:
            raise ValueError(f"data.num_threads = {self.num_threads}, data.prefetch = {self.prefetch} must be >= 0")
        if self.sampling.mode == "prioritized" and self.num_epochs is not None:
            raise ValueError(
                f"data.sampling = 'prioritized' draws without end; num_epochs = {self.num_epochs} must be None"
            )


def example_dataset(source: RecordSource, encoder: PromptEncoder, config: PipelineConfig) -> grain.MapDataset:
    """This process's lazily encoded stream: `PromptExample` or `BadRecord` per element, in order (uniform and
    curriculum sampling)."""
    sampling = config.sampling
    if sampling.mode == "curriculum":
        values = column_numbers(source, sampling.curriculum_column)
        source = OrderedSource(source, curriculum_order(values, sampling.curriculum_order == "ascending", config.seed))
    dataset = grain.MapDataset.source(source)
    if config.shuffle and sampling.mode == "uniform":
        dataset = dataset.shuffle(seed=config.seed)
    dataset = dataset.repeat(config.num_epochs)
    dataset = dataset[config.process_index :: config.process_count]
    return dataset.map(functools.partial(make_example, encoder=encoder, columns=source.columns))


def _example_at(index: int, source: RecordSource, encoder: PromptEncoder) -> PromptExample | BadRecord:
    return make_example(source[index], encoder, source.columns)


def steps_per_epoch(num_records: int, config: PipelineConfig) -> int:
    """Full batches per epoch on each process, if no record were bad."""
    return num_records // (config.batch_size * config.process_count)


def unusable_by_reason(counts: dict, prefix: str = "bad_records/") -> dict:
    """{reason: count} of the `<prefix><reason>` counters of `PromptBatchIterator.counts` (under `prefix`, e.g.
    "data/bad_records/" in metrics) that are not zero, without the total."""
    return {
        k.removeprefix(prefix): v for k, v in counts.items() if k.startswith(prefix) and v and k != prefix + "total"
    }


class PromptBatchIterator:
    """Iterates `PromptBatch`es; checkpointable with `get_state` / `set_state`; `counts()` for metrics."""

    def __init__(
        self,
        source: RecordSource,
        encoder: PromptEncoder,
        model_config: Qwen25VLConfig,
        buckets: BucketConfig,
        config: PipelineConfig,
    ):
        """Opens the grain iterator over this process's share of `source`.

        Args:
          source: the records.
          encoder: the prompt encoder.
          model_config: the model config, for collating.
          buckets: the shape buckets of the batches.
          config: the pipeline settings.

        Raises:
          ValueError: the encoder's max_prompt_length exceeds the largest prompt length bucket.
        """
        if encoder.max_prompt_length > buckets.max_prompt_length:
            raise ValueError(
                f"max_prompt_length = {encoder.max_prompt_length} exceeds the largest prompt length bucket "
                f"{buckets.max_prompt_length}; add a bucket or lower max_prompt_length"
            )
        self.source, self.encoder, self.model_config = source, encoder, model_config
        self.buckets, self.config = buckets, config
        self.pass_rates = PassRateTable(len(source), config.sampling.pass_rate_update_weight)
        if config.sampling.mode == "prioritized":
            self._iterator = PrioritizedDraws(
                len(source),
                functools.partial(_example_at, source=source, encoder=encoder),
                self.pass_rates,
                batch_size=config.batch_size,
                floor=config.sampling.priority_floor,
                seed=config.seed,
                process_index=config.process_index,
                process_count=config.process_count,
                num_threads=config.num_threads,
            )
        else:
            read_options = grain.ReadOptions(num_threads=config.num_threads, prefetch_buffer_size=config.prefetch)
            self._iterator = iter(example_dataset(source, encoder, config).to_iter_dataset(read_options))
        self._records_read = 0
        self._batches = 0
        self._bad = dict.fromkeys(BAD_RECORD_REASONS, 0)
        self._bad_in_a_row = 0
        share = -(-len(source) // config.process_count)
        self._bad_limit = config.max_consecutive_bad or share

    def __iter__(self) -> "PromptBatchIterator":
        return self

    def __next__(self) -> PromptBatch:
        """The next batch of `batch_size` good examples (fewer at the end of a finite stream without drop_remainder).

        Raises:
          StopIteration: the stream is exhausted.
          BadRecordError: a bad record, with on_bad_record="error".
          UnusableDataError: the limit of bad records in a row is reached.
        """
        examples: list[PromptExample] = []
        while len(examples) < self.config.batch_size:
            try:
                item = next(self._iterator)
            except StopIteration:
                if examples and not self.config.drop_remainder:
                    break
                raise
            self._records_read += 1
            if isinstance(item, BadRecord):
                self._bad[item.reason] += 1
                self._bad_in_a_row += 1
                if self.config.on_bad_record == "error":
                    raise BadRecordError(
                        f"bad record {item.describe()} (set on_bad_record='skip' to skip such records)"
                    )
                if self._bad_in_a_row >= self._bad_limit:
                    raise UnusableDataError(self._unusable_message(item))
                continue
            self._bad_in_a_row = 0
            examples.append(item)
        self._batches += 1
        return collate_prompts(examples, self.model_config, self.buckets, self.encoder.pad_token_id)

    def _unusable_message(self, last: BadRecord) -> str:
        reasons = ", ".join(f"{reason} {n}" for reason, n in self._bad.items() if n)
        return (
            f"no usable record in the last {self._bad_in_a_row} records of {self.source.specs!r} "
            f"(data.max_consecutive_bad_records = {self.config.max_consecutive_bad}, 0 = one pass); bad records "
            f"by reason: {reasons} of {self._records_read} read; the last: {last.describe()}"
        )

    def observe(self, record_indices: np.ndarray, pass_rates: np.ndarray) -> None:
        """Records the pass rates of a batch's prompts (`PassRateTable.observe`); prioritized sampling draws the
        next batches by them.

        Args:
          record_indices: `int64[B]` the batch's `record_indices`.
          pass_rates: `float32[B]` their pass rates in [0, 1].
        """
        self.pass_rates.observe(record_indices, pass_rates)

    def counts(self) -> dict[str, int]:
        """Counters for metrics: records_read, records_used, batches, bad_records/<reason>, bad_records/total and
        the pass-rate table's `pass_rate/tracked|solved|unsolved`.

        Every reason of BAD_RECORD_REASONS is present, zeros included.
        """
        bad = sum(self._bad.values())
        out = {"records_read": self._records_read, "records_used": self._records_read - bad, "batches": self._batches}
        out.update({f"bad_records/{reason}": n for reason, n in self._bad.items()})
        out["bad_records/total"] = bad
        out.update(self.pass_rates.counts())
        return out

    def _fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            "num_records": len(self.source),
            "seed": c.seed,
            "shuffle": c.shuffle,
            "num_epochs": c.num_epochs,
            "process_index": c.process_index,
            "process_count": c.process_count,
            "sampling": c.sampling.mode,
        }

    def get_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot between batches."""
        return {
            "version": STATE_VERSION,
            "stream": self._fingerprint(),
            "grain": self._iterator.get_state(),
            "records_read": self._records_read,
            "batches": self._batches,
            "bad_records": dict(self._bad),
            "bad_in_a_row": self._bad_in_a_row,
            "pass_rates": self.pass_rates.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a `get_state` snapshot.

        Args:
          state: a `get_state` result.

        A version-1 snapshot (before pass rates were tracked) restores with an empty pass-rate table.

        Raises:
          ValueError: the snapshot has an unknown state version or belongs to a different stream (record count,
            seed, shuffle, num_epochs, process share or sampling).
        """
        if state.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"data iterator state version {state.get('version')!r}; expected {STATE_VERSION}")
        expected = self._fingerprint()
        saved = {"sampling": "uniform"} | state["stream"]
        if saved != expected:
            diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
            raise ValueError(f"data iterator state belongs to another stream; (saved, current) differ in {diff}")
        self._iterator.set_state(state["grain"])
        self._records_read = int(state["records_read"])
        self._batches = int(state["batches"])
        self._bad = dict.fromkeys(BAD_RECORD_REASONS, 0) | {k: int(v) for k, v in state["bad_records"].items()}
        self._bad_in_a_row = int(state.get("bad_in_a_row", 0))
        if "pass_rates" in state:
            self.pass_rates.set_state(state["pass_rates"])


def prompt_batches(
    data: str | RecordSource,
    encoder: PromptEncoder,
    model_config: Qwen25VLConfig,
    config: PipelineConfig,
    *,
    buckets: BucketConfig = BucketConfig(),
    columns: Columns = Columns(),
) -> PromptBatchIterator:
    """The batch iterator for a dataset spec or an opened source.

    Args:
      data: a dataset spec (`path[@split]`, comma-joined for several, see `data.sources`) or a `RecordSource`.
      encoder: the prompt encoder.
      model_config: the model config, for collating.
      config: the pipeline settings.
      buckets: the shape buckets of the batches.
      columns: the column names, when `data` is a spec.

    Returns:
      A `PromptBatchIterator`.
    """
    source = data if isinstance(data, RecordSource) else RecordSource(data, columns)
    return PromptBatchIterator(source, encoder, model_config, buckets, config)
