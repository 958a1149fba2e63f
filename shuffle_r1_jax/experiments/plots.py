"""Plots of an algorithm comparison (matplotlib, written as PNG; `pip install -e ".[plots]"`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from shuffle_r1_jax.experiments.comparison import RunHistory, mean_curve


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend; ImportError naming the install command without it."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError('plotting needs matplotlib: pip install -e ".[plots]"') from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` steps (NaNs ignored)."""
    out = np.empty_like(values)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out[i] = np.nanmean(chunk) if np.isfinite(chunk).any() else np.nan
    return out


def plot_comparison(
    panels: Sequence[tuple[str, Mapping[str, Sequence[RunHistory]]]], path: str | Path, smooth: int = 5
) -> None:
    """Writes the comparison's curves as a PNG, one row per panel.

    Each row has the validation accuracy (seed mean, band = ±1 std) and the update batch's zero-advantage
    fraction (seed mean, moving average over `smooth` steps).

    Args:
      panels: (title, {run name: its seeds' histories}) per row.
      path: the PNG file.
      smooth: the moving-average window in steps.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 4 * len(panels)), squeeze=False)
    for (title, histories), (left, right) in zip(panels, axes):
        for name, runs in histories.items():
            steps, mean, std = mean_curve(runs)
            (line,) = left.plot(steps, mean, marker="o", markersize=3, label=name)
            left.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
            length = min(len(h.steps) for h in runs)
            collapse = np.nanmean(np.stack([h.collapse_update[:length] for h in runs]), axis=0)
            right.plot(runs[0].steps[:length], _smoothed(collapse, smooth), color=line.get_color(), label=name)
        left.set(title=f"{title}: validation accuracy (mean ± std over seeds)", xlabel="step", ylabel="accuracy")
        right.set(title=f"{title}: zero-advantage rows in the update batch", xlabel="step", ylabel="fraction")
        right.set_ylim(0, 1)
        for ax in (left, right):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
