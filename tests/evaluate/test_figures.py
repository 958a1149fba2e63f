"""The evaluation's figures: unbiased pass@k against hand-computed cases and a NumPy reference, mean@n, greedy
accuracy, length statistics and the per-source breakdown."""

import itertools

import numpy as np
import pytest

from shuffle_r1_jax.evaluate.figures import evaluation_figures, length_statistics, pass_at_k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 1 / 4),  # one of four right, one draw
        (4, 1, 2, 1 - 3 / 6),  # C(3, 2) / C(4, 2) of the pairs miss it
        (4, 2, 2, 1 - 1 / 6),
        (4, 0, 3, 0.0),
        (4, 4, 1, 1.0),
        (5, 2, 4, 1.0),  # n - c < k: every draw of 4 holds a right one
        (8, 3, 8, 1.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def _enumerated(n: int, c: int, k: int) -> float:
    """The share of the k-subsets of n samples (c right) holding a right one, by enumeration."""
    right = np.arange(n) < c
    subsets = list(itertools.combinations(range(n), k))
    return float(np.mean([right[list(s)].any() for s in subsets]))


def _numpy_reference(n: int, c: int, k: int) -> float:
    """The numerically stable product form, 1 - prod_{i = n - c + 1}^{n} (1 - k / i)."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration_and_the_product_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_enumerated(n, c, k), abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(_numpy_reference(n, c, k), abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, 1, 5), (4, 1, 0), (0, 0, 1)])
def test_pass_at_k_out_of_range_names_the_counts(n, c, k):
    with pytest.raises(ValueError, match=f"n = {n}, c = {c}, k = {k}"):
        pass_at_k(n, c, k)


def _row(prompt, source, accuracy, length, truncated=False, sample=0):
    return {
        "prompt_index": prompt,
        "data_source": source,
        "sample": sample,
        "accuracy": accuracy,
        "reward": accuracy,
        "length": length,
        "truncated": truncated,
    }


def test_figures_overall_and_per_source():
    # prompt 0 (geo): 1 of 2 right; prompt 1 (geo): 2 of 2; prompt 2 (chart): 0 of 2, one truncated
    samples = [
        _row(0, "geo", 1.0, 10, sample=0),
        _row(0, "geo", 0.0, 20, sample=1),
        _row(1, "geo", 1.0, 30, sample=0),
        _row(1, "geo", 1.0, 40, sample=1),
        _row(2, "chart", 0.0, 50, sample=0),
        _row(2, "chart", 0.5, 64, truncated=True, sample=1),  # partial credit counts in mean@n, not as solved
    ]
    greedy = [_row(0, "geo", 1.0, 5), _row(1, "geo", 0.0, 5), _row(2, "chart", 1.0, 5)]
    figures = evaluation_figures(samples, greedy, n=2, pass_k=(1, 2))
    overall = figures["overall"]
    assert (overall["prompts"], overall["samples"]) == (3, 6)
    assert overall["mean@2"] == pytest.approx(3.5 / 6)
    assert overall["pass@1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert overall["pass@2"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert overall["greedy"] == pytest.approx(2 / 3)
    assert overall["response_length"] == pytest.approx(
        {"mean": 214 / 6, "p50": 35.0, "p90": 57.0, "max": 64.0, "truncated": 1 / 6}
    )
    assert list(figures["data_sources"]) == ["chart", "geo"]
    geo, chart = figures["data_sources"]["geo"], figures["data_sources"]["chart"]
    assert (geo["prompts"], geo["mean@2"], geo["pass@1"], geo["pass@2"], geo["greedy"]) == (2, 0.75, 0.75, 1.0, 0.5)
    assert (chart["prompts"], chart["mean@2"], chart["pass@2"], chart["greedy"]) == (1, 0.25, 0.0, 1.0)


def test_a_prompt_with_missing_samples_is_named():
    with pytest.raises(ValueError, match=r"other than n = 2 samples .*\{7: 1\}"):
        evaluation_figures([_row(7, "a", 1.0, 3)], [_row(7, "a", 1.0, 3)], n=2, pass_k=(1,))


def test_length_statistics_percentiles():
    stats = length_statistics(np.arange(1, 11), np.array([False] * 9 + [True]))
    assert stats == {"mean": 5.5, "p50": 5.5, "p90": 9.1, "max": 10.0, "truncated": 0.1}
