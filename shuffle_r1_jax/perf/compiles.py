"""XLA compilations of a process, counted and labelled with the step they happen in (via `jax.monitoring`)."""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Callable

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# a program loaded from jax's persistent compilation cache (`jax_compilation_cache_dir`) instead of compiled
CACHE_LOAD_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


@dataclasses.dataclass(frozen=True)
class CompileEvent:
    """One XLA backend compilation, or one load of a compiled program from the persistent compilation cache.

    Attributes:
      step: the monitor's step label when it ran.
      program: the compiled function's name ("?" when jax gives none; "(persistent cache)" for a load).
      seconds: the backend compile seconds, or the cache load's.
    """

    step: int
    program: str
    seconds: float


class CompileMonitor:
    """Counts XLA backend compilations and their time via `jax.monitoring`, labelled with `self.step`.

    Also sums tracing + lowering seconds per step, and keeps jax's compile log records (`jax_log_compiles`,
    `jax_explain_cache_misses`, WARNING level on the "jax" loggers) per step instead of printing them.
    Use as a context manager; the listeners and config values are restored on exit.

    Attributes:
      step: the label given to the compilations and logs that follow (-1 until the user sets it).
      compiles: every backend compilation or persistent-cache load, in order (a program obtained either way
        is one that the step had to build).
      trace_lower_seconds: step -> tracing + lowering seconds.
      logs: step -> jax's compile log messages.
    """

    def __init__(self):
        self.step = -1
        self.compiles: list[CompileEvent] = []
        self.trace_lower_seconds: dict[int, float] = collections.defaultdict(float)
        self.logs: dict[int, list[str]] = collections.defaultdict(list)
        self._saved: dict[str, Any] = {}
        self._handler = _CallbackHandler(lambda message: self.logs[self.step].append(message))

    def _on_duration(self, event: str, duration_secs: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.compiles.append(CompileEvent(self.step, str(kwargs.get("fun_name", "?")), duration_secs))
        elif event == CACHE_LOAD_EVENT:
            self.compiles.append(CompileEvent(self.step, "(persistent cache)", duration_secs))
        elif event in (TRACE_EVENT, LOWER_EVENT):
            self.trace_lower_seconds[self.step] += duration_secs

    def __enter__(self) -> "CompileMonitor":
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        for name in ("jax_log_compiles", "jax_explain_cache_misses"):
            self._saved[name] = getattr(jax.config, name)
            jax.config.update(name, True)
        jax_logger = logging.getLogger("jax")
        self._saved["propagate"] = jax_logger.propagate
        jax_logger.addHandler(self._handler)
        jax_logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        for name in ("jax_log_compiles", "jax_explain_cache_misses"):
            jax.config.update(name, self._saved[name])
        jax_logger = logging.getLogger("jax")
        jax_logger.removeHandler(self._handler)
        jax_logger.propagate = self._saved["propagate"]

    def at(self, step: int) -> list[CompileEvent]:
        """The compilations labelled `step`."""
        return [e for e in self.compiles if e.step == step]


class _CallbackHandler(logging.Handler):
    """A logging handler passing each WARNING-or-above record's message to `callback`."""

    def __init__(self, callback: Callable[[str], None]):
        super().__init__(level=logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        self.callback(record.getMessage())
