"""Per-record pass rates measured during training, and the sampling weights prioritized sampling draws with.

A record's pass rate is the share of its responses that were right the last times its prompt was sampled: the
first visit sets it, each later visit moves it a fraction `update_weight` of the way to the new visit's rate (an
exponential moving average, so it follows the policy as it learns). Records never sampled have no rate.

Prioritized sampling (Kimi K1.5) draws a record with probability proportional to max(1 - pass rate, floor): the
unsolved most often, the solved at the floor's rate, never-sampled records as unsolved ones (weight 1), so every
record is tried early. The table's state is JSON (the visited records' arrays as base64), taken with the data
iterator's state into checkpoints.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def encode_array(values: np.ndarray) -> dict[str, Any]:
    """A 1-D numpy array as a JSON-serialisable dict (dtype and base64 bytes)."""
    values = np.ascontiguousarray(values)
    return {"dtype": values.dtype.str, "data": base64.b64encode(values.tobytes()).decode("ascii")}


def decode_array(encoded: dict[str, Any]) -> np.ndarray:
    """The array of an `encode_array` dict."""
    return np.frombuffer(base64.b64decode(encoded["data"]), dtype=np.dtype(encoded["dtype"])).copy()


class PassRateTable:
    """Pass rates of the records of one dataset.

    Attributes:
      rates: `float32[N]`, NaN for records never sampled.
      visits: `int32[N]`, how often each record's prompt was sampled and scored.
    """

    def __init__(self, num_records: int, update_weight: float):
        """An empty table.

        Args:
          num_records: N, the records of the dataset.
          update_weight: in (0, 1], the weight of a visit's pass rate in the moving average (1 = the last visit's
            rate only).

        Raises:
          ValueError: `update_weight` is outside (0, 1].
        """
        if not 0.0 < update_weight <= 1.0:
            raise ValueError(f"data.pass_rate_update_weight = {update_weight} must be in (0, 1]")
        self.update_weight = update_weight
        self.rates = np.full(num_records, np.nan, np.float32)
        self.visits = np.zeros(num_records, np.int32)

    def observe(self, record_indices: np.ndarray, pass_rates: np.ndarray) -> None:
        """Takes one visit of each given record, in order (a record listed twice takes two visits).

        Args:
          record_indices: `int[B]` record indices; negative ones (prompts not from the dataset) are left out.
          pass_rates: `float[B]` the visits' pass rates, in [0, 1].
        """
        for index, rate in zip(np.asarray(record_indices).tolist(), np.asarray(pass_rates, np.float32).tolist()):
            if index < 0:
                continue
            old = self.rates[index]
            self.rates[index] = rate if np.isnan(old) else old + self.update_weight * (rate - old)
            self.visits[index] += 1

    def priorities(self, floor: float) -> np.ndarray:
        """`float64[N]` prioritized-sampling weights: max(1 - pass rate, floor), 1 for records never sampled."""
        unsolved = np.where(np.isnan(self.rates), 1.0, 1.0 - self.rates.astype(np.float64))
        return np.maximum(unsolved, floor)

    def counts(self) -> dict[str, int]:
        """Counters for metrics: `pass_rate/tracked` (records with a rate), `pass_rate/solved` (rate 1),
        `pass_rate/unsolved` (rate 0)."""
        seen = ~np.isnan(self.rates)
        return {
            "pass_rate/tracked": int(seen.sum()),
            "pass_rate/solved": int((self.rates[seen] >= 1.0).sum()),
            "pass_rate/unsolved": int((self.rates[seen] <= 0.0).sum()),
        }

    def get_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of the visited records."""
        visited = np.flatnonzero(self.visits).astype(np.int64)
        return {
            "num_records": len(self.rates),
            "indices": encode_array(visited),
            "rates": encode_array(self.rates[visited]),
            "visits": encode_array(self.visits[visited]),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a `get_state` snapshot.

        Raises:
          ValueError: the snapshot is of a dataset with another record count.
        """
        if state["num_records"] != len(self.rates):
            raise ValueError(
                f"the saved pass rates are of {state['num_records']} records; this dataset has {len(self.rates)}"
            )
        visited = decode_array(state["indices"])
        self.rates[:] = np.nan
        self.visits[:] = 0
        self.rates[visited] = decode_array(state["rates"])
        self.visits[visited] = decode_array(state["visits"])
