"""Metric output for the trainer: a JSONL log, TensorBoard scalars, a console line and a progress bar.

`MetricWriter` combines them and is what the trainer uses. Only process 0 (`jax.process_index() == 0`) writes;
on every other process `MetricWriter` creates no file and prints nothing.

Resume rule (JSONL and TensorBoard): a writer opened with `start_step=s` is for a run whose first written step is
`s` (a run resumed from a checkpoint at step c starts at c + 1). The JSONL writer keeps the lines of the existing
file with step < s, drops those with step >= s (written after the checkpoint by the run that stopped, and about to
be written again) and any line cut short by a kill, then appends. The TensorBoard writer asks TensorBoard to
hide the earlier events at steps >= s (`purge_step`). A fresh run (`start_step=0`) starts both logs empty.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_RESERVED = ("step", "time")


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The 0-d numeric entries of `metrics` (Python numbers, NumPy or JAX scalars) as floats; others are skipped."""
    scalars: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(value, (bool, int, float, np.generic, np.ndarray, jax.Array)):
            continue
        array = np.asarray(value)
        real = jnp.issubdtype(array.dtype, jnp.integer) or jnp.issubdtype(array.dtype, jnp.floating)  # bf16 too
        if array.ndim == 0 and (real or array.dtype == np.bool_):
            scalars[str(key)] = float(array)
    return scalars


class JsonlWriter:
    """Appends `{"step": s, "time": <unix seconds>, **metrics}` as one line per `write`, flushed at once.

    Non-finite values are written as Python's `json` writes them (NaN, Infinity).

    Args:
      path: the JSONL file; its directory is created if missing.
      start_step: the first step this run writes; an existing file keeps only its lines before it (see the
        module docstring).
    """

    def __init__(self, path: str | os.PathLike, *, start_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _keep_lines_before(self.path, start_step)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Appends the line of `step`.

        Raises:
          ValueError: `metrics` has a reserved name ("step" or "time").
        """
        for name in _RESERVED:
            if name in metrics:
                raise ValueError(f"metric name {name!r} is reserved in the JSONL log (value {metrics[name]!r})")
        record = {"step": int(step), "time": time.time(), **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _keep_lines_before(path: Path, start_step: int) -> None:
    """Rewrites `path` (atomically) without its lines at steps >= start_step and without unreadable lines."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if (step := _line_step(line)) is not None and step < start_step]
    if len(kept) == len(lines) and all(line.endswith("\n") for line in lines):
        return
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(line if line.endswith("\n") else line + "\n" for line in kept), encoding="utf-8")
    os.replace(partial, path)


def _line_step(line: str) -> int | None:
    """The integer "step" of a JSONL line, or None for a line that is not a record with one."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


class TensorBoardWriter:
    """Scalars into a TensorBoard event file under `logdir` (tensorboardX, no TensorFlow needed), flushed per write.

    Args:
      logdir: the event directory.
      start_step: the first step this run writes; TensorBoard hides earlier events at steps >= it.

    Raises:
      ImportError: tensorboardX is not installed.
    """

    def __init__(self, logdir: str | os.PathLike, *, start_step: int = 0):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError("TensorBoard output needs the tensorboardX package: pip install tensorboardX") from err
        self.logdir = Path(logdir)
        self._writer = SummaryWriter(logdir=str(self.logdir), purge_step=start_step)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


# (label, metric names tried in order, format): the console line shows the first name present of each field.
DEFAULT_CONSOLE_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("reward", ("reward/overall",), ".3f"),
    ("acc", ("reward/accuracy", "accuracy"), ".3f"),
    ("val_acc", ("val/accuracy",), ".3f"),
    ("len", ("response_length/mean",), ".0f"),
    ("collapse", ("advantage/collapse", "advantage_collapse"), ".2f"),
    ("pg_loss", ("actor/pg_loss", "pg_loss"), ".4g"),
    ("grad_norm", ("actor/grad_norm", "grad_norm"), ".3g"),
    ("v_loss", ("critic/value_loss",), ".3g"),
    ("expl_var", ("critic/explained_variance",), ".2f"),
    ("s/step", ("timing/step",), ".1f"),
    ("tok/s", ("throughput/tokens_per_s",), "si"),
)


def format_console_line(
    step: int,
    metrics: Mapping[str, float],
    *,
    total_steps: int | None = None,
    fields: Sequence[tuple[str, tuple[str, ...], str]] = DEFAULT_CONSOLE_FIELDS,
) -> str:
    """A compact one-line summary, e.g. `step 12/500 | reward 0.734 | acc 0.650 | len 412 | ... | tok/s 2.13k`.

    Args:
      step: the step shown first.
      metrics: the step's metrics.
      total_steps: shown as `step s/total` when given.
      fields: `(label, names, format)` per field: the first of `names` present in `metrics` is shown with the
        format spec (`"si"`: three significant digits with a k/M/G suffix); absent fields are left out.

    Returns:
      The line, fields separated by " | ".
    """
    parts = [f"step {step}" + (f"/{total_steps}" if total_steps else "")]
    for label, names, spec in fields:
        name = next((n for n in names if n in metrics), None)
        if name is not None:
            parts.append(f"{label} {_format_value(metrics[name], spec)}")
    return " | ".join(parts)


def _format_value(value: float, spec: str) -> str:
    """`value` with the format spec `spec` (or "si"); a non-finite value as `str` gives it."""
    if not math.isfinite(value):
        return str(value)
    if spec != "si":
        return format(value, spec)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


class ConsoleWriter:
    """Prints `format_console_line` every `every` steps, above a tqdm progress bar over the run's steps.

    Args:
      total_steps: the run's steps (the bar's total and the line's `/total`), or None.
      start_step: where the bar starts (a resumed run's first step).
      every: print the line at the steps divisible by it.
      progress: show the bar (with ETA); None shows it when `stream` is a terminal. The line is printed either
        way.
      stream: the output stream (default: stderr).
      fields: the line's fields (see `format_console_line`).

    Raises:
      ValueError: `every` is < 1.
    """

    def __init__(
        self,
        *,
        total_steps: int | None = None,
        start_step: int = 0,
        every: int = 1,
        progress: bool | None = None,
        stream: IO[str] | None = None,
        fields: Sequence[tuple[str, tuple[str, ...], str]] = DEFAULT_CONSOLE_FIELDS,
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._stream = stream if stream is not None else sys.stderr
        self._total_steps = total_steps
        self._every = every
        self._fields = fields
        if progress is None:
            progress = self._stream.isatty()
        self._bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            desc="train",
            file=self._stream,
            dynamic_ncols=True,
            disable=not progress,
        )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if step % self._every == 0:
            line = format_console_line(step, metrics, total_steps=self._total_steps, fields=self._fields)
            tqdm.write(line, file=self._stream)
            self._stream.flush()
        self._bar.update(max(0, step - self._bar.n))

    def close(self) -> None:
        self._bar.close()


class MetricWriter:
    """The trainer's metric output: `<output_dir>/metrics.jsonl`, `<output_dir>/tensorboard/`, console and bar.

    Only process 0 writes; elsewhere `write` and `close` do nothing.

    Args:
      output_dir: the directory of the JSONL log and TensorBoard events; None keeps only the console.
      total_steps: the run's steps, for the console line and the bar.
      start_step: the first step this run writes (see the module docstring for the resume rule).
      jsonl: write `metrics.jsonl`.
      tensorboard: write TensorBoard events.
      console: print the console line and the bar.
      console_every: print the console line every k steps.
      progress: show the progress bar (None: when the stream is a terminal).
      stream: the console's stream (default: stderr).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None,
        *,
        total_steps: int | None = None,
        start_step: int = 0,
        jsonl: bool = True,
        tensorboard: bool = True,
        console: bool = True,
        console_every: int = 1,
        progress: bool | None = None,
        stream: IO[str] | None = None,
    ):
        self._writers: list[JsonlWriter | TensorBoardWriter | ConsoleWriter] = []
        if jax.process_index() != 0:
            return
        if output_dir is not None:
            output_dir = Path(output_dir)
            if jsonl:
                self._writers.append(JsonlWriter(output_dir / JSONL_NAME, start_step=start_step))
            if tensorboard:
                self._writers.append(TensorBoardWriter(output_dir / TENSORBOARD_DIR, start_step=start_step))
        if console:
            console_writer = ConsoleWriter(
                total_steps=total_steps, start_step=start_step, every=console_every, progress=progress, stream=stream
            )
            self._writers.append(console_writer)

    @property
    def active(self) -> bool:
        """Whether this process writes anything."""
        return bool(self._writers)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Writes the scalar entries of `metrics` at `step` everywhere; returns them as floats."""
        if not self._writers:
            return {}
        scalars = scalar_metrics(metrics)
        for writer in self._writers:
            writer.write(step, scalars)
        return scalars

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
