"""The order records are read in, besides grain's shuffled epochs: a curriculum (easy to hard by a column) and
prioritized draws (by measured pass rate).

  curriculum   each epoch reads the records sorted by a numeric column (a difficulty level, or the `pass_rate`
               the offline filter writes) ascending or descending; ties in a seeded random order; records whose
               value is missing or not a number come last. A static order: grain reads it like any other source.
  prioritized  each draw takes `batch_size` distinct records of this process's share (records process_index,
               process_index + process_count, ...) with probability proportional to their `PassRateTable`
               priorities, from a generator seeded by (seed, process_index, draw number). Records found bad are
               not drawn again. Draws never end: the run stops by step count.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from shuffle_r1_jax.data.examples import BadRecord
from shuffle_r1_jax.data.pass_rates import PassRateTable, decode_array, encode_array
from shuffle_r1_jax.data.sources import RecordSource
from shuffle_r1_jax.processing.batch import PromptExample

logger = logging.getLogger(__name__)

SAMPLING = ("uniform", "curriculum", "prioritized")
CURRICULUM_ORDERS = ("ascending", "descending")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How the training records are ordered.

    Attributes:
      mode: `data.sampling`, "uniform" (shuffled epochs), "curriculum" (each epoch sorted by `curriculum_column`)
        or "prioritized" (draws by measured pass rate; the stream has no epochs).
      priority_floor: `data.priority_floor`, prioritized sampling's smallest weight (a solved record's), in (0, 1].
      pass_rate_update_weight: `data.pass_rate_update_weight`, the weight of a new visit in a record's moving-average
        pass rate, in (0, 1] (1 = the last visit only).
      curriculum_column: `data.curriculum_column`, the numeric column the curriculum sorts by.
      curriculum_order: `data.curriculum_order`, "ascending" (smallest first: difficulty levels) or "descending"
        (largest first: pass rates).

    Raises:
      ValueError: a field is out of range; the message names the `data.` key and the value.
    """

    mode: str = "uniform"
    priority_floor: float = 0.1
    pass_rate_update_weight: float = 0.5
    curriculum_column: str = "difficulty"
    curriculum_order: str = "ascending"

    def __post_init__(self):
        if self.mode not in SAMPLING:
            raise ValueError(f"data.sampling = {self.mode!r}; expected one of {SAMPLING}")
        if not 0.0 < self.priority_floor <= 1.0:
            raise ValueError(f"data.priority_floor = {self.priority_floor} must be in (0, 1]")
        if not 0.0 < self.pass_rate_update_weight <= 1.0:
            raise ValueError(f"data.pass_rate_update_weight = {self.pass_rate_update_weight} must be in (0, 1]")
        if self.curriculum_order not in CURRICULUM_ORDERS:
            raise ValueError(f"data.curriculum_order = {self.curriculum_order!r}; expected one of {CURRICULUM_ORDERS}")
        if self.mode == "curriculum" and not self.curriculum_column:
            raise ValueError("data.sampling = 'curriculum' needs data.curriculum_column (a numeric column)")


def curriculum_order(values: np.ndarray, ascending: bool, seed: int) -> np.ndarray:
    """Record indices sorted by `values`; ties in a random order seeded by `seed`; NaN values last.

    Args:
      values: `float64[N]` one value per record, NaN where missing.
      ascending: smallest values first (else largest first).
      seed: the tie-break seed.

    Returns:
      `int64[N]`, a permutation of range(N).
    """
    keys = np.where(np.isnan(values), np.inf, values if ascending else -values)
    ties = np.random.default_rng(seed).permutation(len(values))
    return np.lexsort((ties, keys)).astype(np.int64)


def column_numbers(source: RecordSource, column: str) -> np.ndarray:
    """`float64[N]` the numeric values of `column` per record; NaN where a value is missing or not a number (their
    count and the first such record are logged).

    Raises:
      DataSpecError: a data file has no such column.
    """
    values = source.column_values(column)
    numbers = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers[i] = float(value)
    missing = np.flatnonzero(np.isnan(numbers))
    if len(missing):
        first = int(missing[0])
        logger.warning(
            "data.curriculum_column %r: %d of %d records have no numeric value and come last in the curriculum "
            "(the first: %s, value %r)",
            column,
            len(missing),
            len(values),
            source[first].record_id,
            values[first],
        )
    return numbers


class OrderedSource:
    """A `RecordSource` read in a fixed order: `ordered[i]` is `source[order[i]]` (grain's random-access protocol)."""

    def __init__(self, source: RecordSource, order: np.ndarray):
        self.source, self.order = source, order
        self.columns, self.specs = source.columns, source.specs

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int):
        return self.source[int(self.order[int(index)])]


class PrioritizedDraws:
    """Examples of records drawn by priority, one draw of `batch_size` records at a time; an iterator with
    `get_state` / `set_state` like grain's (the drawn but not yet taken records are part of the state)."""

    def __init__(
        self,
        num_records: int,
        example: Callable[[int], PromptExample | BadRecord],
        table: PassRateTable,
        *,
        batch_size: int,
        floor: float,
        seed: int,
        process_index: int,
        process_count: int,
        num_threads: int,
    ):
        """Args:
        num_records: the records of the dataset.
        example: record index -> its `PromptExample` or `BadRecord`.
        table: the pass rates the priorities come from (updated by the trainer between batches).
        batch_size: records per draw.
        floor: the smallest priority, in (0, 1].
        seed: the draws' seed.
        process_index: this process's share of the records.
        process_count: the number of shares.
        num_threads: threads decoding a draw's records (0 = in this thread).
        """
        self.example, self.table = example, table
        self.batch_size, self.floor, self.seed = batch_size, floor, seed
        self.process_index = process_index
        self.share = np.arange(process_index, num_records, process_count, dtype=np.int64)
        self.excluded = np.zeros(num_records, bool)
        self.draws = 0
        self.pending: list[int] = []
        self.decoded: list[PromptExample | BadRecord] = []
        self.pool = ThreadPoolExecutor(num_threads) if num_threads > 0 else None

    def __iter__(self) -> "PrioritizedDraws":
        return self

    def _draw(self) -> None:
        weights = self.table.priorities(self.floor)[self.share] * ~self.excluded[self.share]
        candidates = int(np.count_nonzero(weights))
        if candidates == 0:
            raise StopIteration
        rng = np.random.default_rng([self.seed, self.process_index, self.draws])
        picked = rng.choice(len(self.share), min(self.batch_size, candidates), replace=False, p=weights / weights.sum())
        self.draws += 1
        self.pending = self.share[picked].tolist()

    def __next__(self) -> PromptExample | BadRecord:
        """The next drawn record's example (a `BadRecord` is not drawn again).

        Raises:
          StopIteration: every record of this process's share was bad.
        """
        if not self.pending:
            self._draw()
        if not self.decoded:
            mapped = map if self.pool is None else self.pool.map
            self.decoded = list(mapped(self.example, self.pending))
        index, item = self.pending.pop(0), self.decoded.pop(0)
        if isinstance(item, BadRecord):
            self.excluded[index] = True
        return item

    def get_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot: the draw count, the drawn records not yet taken and the bad records."""
        return {
            "draws": self.draws,
            "pending": list(self.pending),
            "excluded": encode_array(np.flatnonzero(self.excluded).astype(np.int64)),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a `get_state` snapshot (the pending records are decoded again when taken)."""
        self.draws = int(state["draws"])
        self.pending = [int(i) for i in state["pending"]]
        self.decoded = []
        self.excluded[:] = False
        self.excluded[decode_array(state["excluded"])] = True
