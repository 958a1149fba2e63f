"""Memory plans of a model too large to compile whole on this machine: plans at a few decoder-layer counts,
a straight line per program through their phase peaks, and the line read at the real layer count.

Every decoder layer has the same shapes, so each per-device figure is expected to be `a + b * layers`; the fit
shows whether it is: with three or more layer counts, `nonlinearity` is the largest distance of a planned point
from the least-squares line (two counts always fit exactly and show nothing).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl import Qwen25VLConfig
from shuffle_r1_jax.perf.memory_plan import GiB, MemoryPlan, format_gib


def with_text_layers(config: Qwen25VLConfig, layers: int) -> Qwen25VLConfig:
    """`config` with `layers` decoder layers (everything else, the vision tower included, unchanged)."""
    return dataclasses.replace(config, text=dataclasses.replace(config.text, num_hidden_layers=layers))


@dataclasses.dataclass(frozen=True)
class ProgramFit:
    """One program's phase peak (bytes per device) against the decoder's layer count.

    Attributes:
      name: the program.
      layers: the layer counts planned.
      peaks: the phase peak at each count (None where it did not compile).
      per_layer: the fitted bytes per layer (None when fewer than two counts compiled).
      intercept: the fitted bytes at zero layers.
      nonlinearity: the largest |planned - fitted| over the planned counts (0 with two counts).
    """

    name: str
    layers: tuple[int, ...]
    peaks: tuple[int | None, ...]
    per_layer: float | None
    intercept: float | None
    nonlinearity: float | None

    def at(self, layers: int) -> float | None:
        """The fitted phase peak at `layers` layers (None without a fit)."""
        return None if self.per_layer is None else self.intercept + self.per_layer * layers


def fit_programs(plans: dict[int, MemoryPlan]) -> list[ProgramFit]:
    """A least-squares line per program through its phase peaks over the plans' layer counts.

    Args:
      plans: layer count -> the plan made with that many decoder layers (the same programs in each).

    Returns:
      One `ProgramFit` per program of the first plan, in its order.
    """
    counts = tuple(sorted(plans))
    fits = []
    for program in plans[counts[0]].programs:
        peaks = tuple(plans[n].program(program.name).phase_peak for n in counts)
        points = [(n, p) for n, p in zip(counts, peaks) if p is not None]
        if len(points) < 2:
            fits.append(ProgramFit(program.name, counts, peaks, None, None, None))
            continue
        x, y = np.array(points, dtype=np.float64).T
        slope, intercept = np.polyfit(x, y, 1)
        off = float(np.max(np.abs(y - (intercept + slope * x))))
        fits.append(ProgramFit(program.name, counts, peaks, float(slope), float(intercept), off))
    return fits


def format_fits(fits: list[ProgramFit], layers: int, device_memory_gib: float) -> str:
    """The fits as markdown: planned peaks, GiB per layer, the nonlinearity and the peak at `layers` layers.

    Args:
      fits: from `fit_programs`.
      layers: the real model's decoder layer count.
      device_memory_gib: the device memory the extrapolated peaks are checked against.
    """
    counts = fits[0].layers
    lines = [
        f"| program | {' | '.join(f'{n} layers' for n in counts)} | GiB per layer | nonlinearity | "
        f"{layers} layers (extrapolated) | fits {device_memory_gib:g} GiB |",
        "|---" * (len(counts) + 5) + "|",
    ]
    for fit in fits:
        peaks = " | ".join(format_gib(p) for p in fit.peaks)
        if fit.per_layer is None:
            lines.append(f"| {fit.name} | {peaks} | - | - | - | no |")
            continue
        full = fit.at(layers)
        fits_budget = "yes" if full <= device_memory_gib * GiB else "NO"
        lines.append(
            f"| {fit.name} | {peaks} | {fit.per_layer / GiB:.3f} | {format_gib(int(fit.nonlinearity))} | "
            f"{format_gib(int(full))} | {fits_budget} |"
        )
    worst = max((f.at(layers) for f in fits if f.per_layer is not None), default=None)
    if worst is not None:
        verdict = "fits" if worst <= device_memory_gib * GiB else "does NOT fit"
        lines += [
            "",
            f"Extrapolated step peak per device: {format_gib(int(worst))} GiB of {device_memory_gib:g} GiB: {verdict}.",
        ]
    return "\n".join(lines)
