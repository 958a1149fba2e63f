"""The figures of an evaluation, from its sample rows: mean@n, unbiased pass@k, greedy accuracy and response-length
statistics, over all prompts and per data source.

A sample row is a dict with at least `prompt_index` (int), `data_source` (str), `accuracy` (float, the reward's
"accuracy" part, else its overall score), `reward` (float), `length` (int, response tokens) and `truncated`
(bool, stopped at the length limit). A sample counts as solved for pass@k when its accuracy is 1 (full marks).
"""

from __future__ import annotations

import collections
import math
from typing import Iterable, Sequence

import numpy as np

SOLVED = 1.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one prompt, 1 - C(n - c, k) / C(n, k): the chance that k of its n samples drawn
    without replacement hold at least one of its c solved ones.

    Args:
      n: samples of the prompt (>= 1).
      c: solved samples, in [0, n].
      k: samples drawn, in [1, n].

    Raises:
      ValueError: the counts are out of range; the message names them.
    """
    if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n; got n = {n}, c = {c}, k = {k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def length_statistics(lengths: np.ndarray, truncated: np.ndarray) -> dict[str, float]:
    """Response-length statistics.

    Args:
      lengths: `int[S]` response tokens of S samples (S >= 1).
      truncated: `bool[S]`, stopped at the length limit.

    Returns:
      mean, p50, p90 (linear interpolation), max (tokens) and truncated (the share stopped at the limit).
    """
    lengths = np.asarray(lengths, np.float64)
    return {
        "mean": float(lengths.mean()),
        "p50": float(np.percentile(lengths, 50)),
        "p90": float(np.percentile(lengths, 90)),
        "max": float(lengths.max()),
        "truncated": float(np.mean(np.asarray(truncated, bool))),
    }


def group_figures(samples: Sequence[dict], greedy: Sequence[dict], n: int, pass_k: Sequence[int]) -> dict:
    """The figures of one group of prompts (all of them, or one data source's).

    Args:
      samples: the group's sample rows, n per prompt.
      greedy: the group's greedy rows, one per prompt.
      n: samples per prompt.
      pass_k: the k of pass@k (each <= n).

    Returns:
      prompts, samples, `mean@<n>` (mean accuracy over the samples), `pass@<k>` (mean over prompts),
      `greedy` (mean greedy accuracy), mean_reward (mean overall score of the samples) and response_length
      (`length_statistics` of the samples).

    Raises:
      ValueError: a prompt has other than n samples.
    """
    solved: dict[int, int] = collections.Counter()
    counts: dict[int, int] = collections.Counter()
    for row in samples:
        counts[row["prompt_index"]] += 1
        solved[row["prompt_index"]] += row["accuracy"] >= SOLVED
    wrong = {i: c for i, c in counts.items() if c != n}
    if wrong:
        raise ValueError(f"prompts with other than n = {n} samples (prompt index: samples): {wrong}")
    accuracy = np.asarray([row["accuracy"] for row in samples], np.float64)
    figures = {"prompts": len(counts), "samples": len(samples), f"mean@{n}": float(accuracy.mean())}
    for k in pass_k:
        figures[f"pass@{k}"] = float(np.mean([pass_at_k(n, solved[i], k) for i in counts]))
    figures["greedy"] = float(np.mean([row["accuracy"] for row in greedy]))
    figures["mean_reward"] = float(np.mean([row["reward"] for row in samples]))
    figures["response_length"] = length_statistics(
        np.asarray([row["length"] for row in samples]), np.asarray([row["truncated"] for row in samples])
    )
    return figures


def evaluation_figures(samples: Iterable[dict], greedy: Iterable[dict], n: int, pass_k: Sequence[int]) -> dict:
    """`group_figures` over all prompts (`overall`) and per data source (`data_sources`, sorted by name).

    Args:
      samples: every sample row (at least one).
      greedy: every greedy row.
      n: samples per prompt.
      pass_k: the k of pass@k.
    """
    samples, greedy = list(samples), list(greedy)
    by_source = collections.defaultdict(lambda: ([], []))
    for rows, slot in ((samples, 0), (greedy, 1)):
        for row in rows:
            by_source[row["data_source"]][slot].append(row)
    return {
        "overall": group_figures(samples, greedy, n, pass_k),
        "data_sources": {source: group_figures(*by_source[source], n, pass_k) for source in sorted(by_source)},
    }
