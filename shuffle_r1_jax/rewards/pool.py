"""Score a batch of responses on the host in worker processes, with a per-sample and a per-batch time limit.

Graders can hang (sympy) and threads cannot be stopped, so each sample runs in a worker process; a
worker that exceeds the limit is killed and replaced while the other samples go on. Past the batch limit the
samples without a result time out together, so a reward that hangs on every sample costs one batch limit per
step. A sample whose reward raises, times out, returns something malformed (not a mapping, no "overall", a part
that is not a finite real number), or whose worker dies gets all-zero parts and a counted reason; scoring never
stops the run (the trainer stops a run whose rewards all fail, `rewards.health`).

Beside its parts a reward may return rewards for spans of the response under the reserved key "spans": a list of
(char_start, char_end, value) triples, ints with 0 <= char_start < char_end <= len(response) and a finite real
value; the rollout places each value on the token that completes the span's last character
(`rollout.token_rewards`). Spans are not a part; malformed spans make the output invalid like a malformed part.

Keep one `RewardPool` for a whole training run (start-up imports the grader in every worker); `score_batch` is
the one-shot form that starts and stops a pool per call.

Beyond (response, answer) a reward function may take keyword arguments: the run's options (`reward.options`, bound
once) and each sample's context (the dataset's reward columns and "image_sizes", `PromptExample.reward_context`).
A sample's context keys the function does not take are left out, so outcome rewards ignore them.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import logging
import math
import multiprocessing
import multiprocessing.connection
import numbers
import pickle
import reprlib
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shuffle_r1_jax.rewards.registry import RewardFn, get_reward_fn

logger = logging.getLogger(__name__)

TIMEOUT = "timeout"
EXCEPTION = "exception"
INVALID_OUTPUT = "invalid_output"
WORKER_DIED = "worker_died"
FAILURE_REASONS = (TIMEOUT, EXCEPTION, INVALID_OUTPUT, WORKER_DIED)
SPANS = "spans"

Span = tuple[int, int, float]


@dataclasses.dataclass(frozen=True)
class RewardScores:
    """Scores of a batch of n samples.

    Attributes:
      parts: part name -> float32 `[n]`; always has "overall"; failed samples are 0 in every part, and a sample
        without some part is 0 there.
      failure_reasons: per sample, None or one of `FAILURE_REASONS`.
      failure_counts: reason -> number of samples (every reason present, zeros included).
      spans: per sample, its span rewards as (char_start, char_end, value) triples, or None (no spans, an empty
        list, or a failed sample).
    """

    parts: dict[str, np.ndarray]
    failure_reasons: list[str | None]
    failure_counts: dict[str, int]
    spans: list[tuple[Span, ...] | None]

    @property
    def failed(self) -> np.ndarray:
        """bool `[n]`: True where the sample's reward failed and was zeroed."""
        return np.asarray([reason is not None for reason in self.failure_reasons], dtype=bool)


def _is_real_number(value: Any) -> bool:
    """Whether `value` is a real number (Python or numpy int or float) and not a bool (True is not a score)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _checked_parts(output: Any) -> dict[str, float]:
    """A reward's output as {part name: float}, the reserved "spans" key left out.

    Raises:
      TypeError: `output` is not a mapping, has no "overall" part, or has a part that is not a real number (a
        string such as "1.0", a bool, None, an array).
      ValueError: a part is NaN or infinite.
    """
    if not isinstance(output, Mapping):
        raise TypeError(f"reward returned {type(output).__name__}, expected a mapping with 'overall'")
    if "overall" not in output:
        raise TypeError(f"reward output has no 'overall' part (parts: {sorted(output)})")
    output = {name: value for name, value in output.items() if name != SPANS}
    not_numbers = {name: value for name, value in output.items() if not _is_real_number(value)}
    if not_numbers:
        raise TypeError(f"reward returned parts that are not numbers: {reprlib.repr(not_numbers)}")
    parts = {str(name): float(value) for name, value in output.items()}
    if not all(math.isfinite(value) for value in parts.values()):
        raise ValueError(f"reward returned a non-finite part: {parts}")
    return parts


def _checked_spans(spans: Any, response: str) -> tuple[Span, ...] | None:
    """A reward's "spans" (absent: None) as (char_start, char_end, value) triples; None for an empty sequence.

    Raises:
      TypeError: `spans` is not a list or tuple of 3-item lists or tuples of (int, int, real number).
      ValueError: a span is empty or outside `response` (not 0 <= char_start < char_end <= len(response)), or a
        value is NaN or infinite.
    """
    if spans is None:
        return None
    if not isinstance(spans, (list, tuple)):
        raise TypeError(f"reward spans must be a list of (char_start, char_end, value), got {type(spans).__name__}")
    checked = []
    for span in spans:
        if not (isinstance(span, (list, tuple)) and len(span) == 3):
            raise TypeError(f"a reward span must be (char_start, char_end, value), got {reprlib.repr(span)}")
        start, end, value = span
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, (bool, np.bool_)) for i in (start, end)):
            raise TypeError(f"reward span bounds must be ints, got {reprlib.repr(span)}")
        if not _is_real_number(value):
            raise TypeError(f"reward span value must be a real number, got {reprlib.repr(span)}")
        if not 0 <= start < end <= len(response):
            raise ValueError(f"reward span {span} is empty or outside the response of {len(response)} characters")
        if not math.isfinite(value):
            raise ValueError(f"reward span {span} has a non-finite value")
        checked.append((int(start), int(end), float(value)))
    return tuple(checked) or None


def reward_keywords(reward_fn: RewardFn) -> frozenset[str] | None:
    """The keyword arguments `reward_fn` takes after (response, answer); None when it takes any (`**kwargs`)."""
    parameters = list(inspect.signature(reward_fn).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters[2:] if p.kind in named)


def bind_options(reward_fn: RewardFn, options: Mapping[str, Any]) -> RewardFn:
    """`reward_fn` with the run's `options` bound as keyword arguments (itself when there are none).

    Raises:
      ValueError: an option is not a keyword argument of `reward_fn`; the message lists the ones it takes.
    """
    if not options:
        return reward_fn
    keywords = reward_keywords(reward_fn)
    unknown = sorted(set(options) - keywords) if keywords is not None else []
    if unknown:
        raise ValueError(
            f"reward.options {unknown} are not arguments of the reward {getattr(reward_fn, '__name__', reward_fn)!r}; "
            f"it takes {sorted(keywords)}"
        )
    return functools.partial(reward_fn, **options)


def _context_arguments(context: Mapping[str, Any] | None, keywords: frozenset[str] | None) -> dict[str, Any]:
    if not context:
        return {}
    return dict(context) if keywords is None else {k: v for k, v in context.items() if k in keywords}


def run_reward(
    reward_fn: RewardFn,
    response: str,
    answer: str,
    context: Mapping[str, Any] | None = None,
    keywords: frozenset[str] | None = frozenset(),
) -> tuple[str, Any]:
    """Runs one sample in this process, catching the reward's exceptions.

    Args:
      reward_fn: the reward function.
      response: the response text.
      answer: the ground-truth answer.
      context: the sample's keyword arguments (the dataset's reward columns, "image_sizes").
      keywords: the context keys `reward_fn` takes (`reward_keywords`; None = all).

    Returns:
      ("ok", (parts as {name: float}, spans as (char_start, char_end, value) triples or None)) or (`EXCEPTION` or
      `INVALID_OUTPUT`, error message). The output is invalid when it is not a mapping, has no "overall" part, has
      a part that is not a finite real number (a string such as "1.0", a bool, NaN or inf), or has malformed
      "spans" (see the module docstring).
    """
    try:
        output = reward_fn(response, answer, **_context_arguments(context, keywords))
    except Exception as err:
        return EXCEPTION, f"{type(err).__name__}: {err}"
    try:
        return "ok", (_checked_parts(output), _checked_spans(output.get(SPANS), response))
    except (TypeError, ValueError) as err:
        return INVALID_OUTPUT, f"{type(err).__name__}: {err}"


def _worker_main(conn: multiprocessing.connection.Connection, reward_fn: RewardFn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    keywords = reward_keywords(reward_fn)
    conn.send(("ready", None, None))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        index, response, answer, context = task
        status, payload = run_reward(reward_fn, response, answer, context, keywords)
        conn.send((status, index, payload))


class _Worker:
    """One worker process, its pipe, and the sample it is working on (if any)."""

    def __init__(self, context: multiprocessing.context.BaseContext, reward_fn: RewardFn):
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_conn, reward_fn), daemon=True)
        self.process.start()
        child_conn.close()
        self.started_at = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline = math.inf

    def assign(self, index: int, response: str, answer: str, context: Mapping[str, Any], timeout_s: float) -> None:
        self.conn.send((index, response, answer, context))
        self.task = index
        self.deadline = time.monotonic() + timeout_s

    def finish(self) -> None:
        self.task = None
        self.deadline = math.inf

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self, wait_s: float = 1.0) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(wait_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class _BatchState:
    """Results of one `RewardPool.score` call as they arrive."""

    def __init__(self, n: int):
        self.parts: list[dict[str, float] | None] = [None] * n
        self.spans: list[tuple[Span, ...] | None] = [None] * n
        self.reasons: list[str | None] = [None] * n
        self.first_error: dict[str, str] = {}
        self.remaining = n

    def succeed(self, index: int, scored: tuple[dict[str, float], tuple[Span, ...] | None]) -> None:
        self.parts[index], self.spans[index] = scored
        self.remaining -= 1

    def fail(self, index: int, reason: str, message: str) -> None:
        self.reasons[index] = reason
        self.first_error.setdefault(reason, message)
        self.remaining -= 1

    def result(self) -> RewardScores:
        names = ["overall"]
        for parts in self.parts:
            names.extend(name for name in (parts or {}) if name not in names)
        arrays = {
            name: np.asarray([(parts or {}).get(name, 0.0) for parts in self.parts], dtype=np.float32) for name in names
        }
        counts = {reason: self.reasons.count(reason) for reason in FAILURE_REASONS}
        for reason, message in self.first_error.items():
            logger.warning("%d reward(s) failed with %s, e.g. %s", counts[reason], reason, message)
        return RewardScores(arrays, list(self.reasons), counts, list(self.spans))


class RewardPool:
    """Worker processes bound to one reward function; `score` grades batches with a per-sample limit.

    The workers start in the constructor; `close` (or leaving a `with` block) stops them.

    Args:
      reward_fn: a registered name, a "module:function" path, or a module-level function.
      num_workers: number of worker processes (>= 1).
      options: keyword arguments bound to every call (`reward.options`).
      start_method: multiprocessing start method; "spawn" (default) is safe with JAX's threads in the
        parent, "forkserver" restarts killed workers faster.
      startup_timeout_s: a worker that is not ready after this long raises RuntimeError.

    Attributes:
      reward_fn: the resolved reward function with the options bound.

    Raises:
      ValueError: if `num_workers` < 1, `reward_fn` does not resolve (`get_reward_fn`) or does not take an option.
      TypeError: if the reward function cannot be pickled for the worker processes.
    """

    def __init__(
        self,
        reward_fn: str | RewardFn,
        num_workers: int = 4,
        *,
        options: Mapping[str, Any] = {},
        start_method: str = "spawn",
        startup_timeout_s: float = 120.0,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.reward_fn = bind_options(get_reward_fn(reward_fn), options)
        try:
            pickle.dumps(self.reward_fn)
        except Exception as err:
            raise TypeError(
                f"reward function {self.reward_fn!r} cannot be sent to worker processes; "
                "define it at module level and pass it or its 'module:function' path"
            ) from err
        self._context = multiprocessing.get_context(start_method)
        self._startup_timeout_s = startup_timeout_s
        self._workers = [_Worker(self._context, self.reward_fn) for _ in range(num_workers)]

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stops all workers (killing any that do not exit within a second)."""
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def wait_ready(self) -> None:
        """Blocks until every worker has started (imports done).

        Raises:
          RuntimeError: if a worker is not ready within `startup_timeout_s` or dies during start-up.
        """
        while not all(worker.ready for worker in self._workers):
            self._poll(None, wait_s=0.1)

    def score(
        self,
        responses: Sequence[str],
        answers: Sequence[str],
        timeout_s: float = 10.0,
        batch_timeout_s: float = 0.0,
        contexts: Sequence[Mapping[str, Any]] | None = None,
    ) -> RewardScores:
        """Grades responses[i] against answers[i] (with contexts[i]'s keyword arguments).

        Each sample has `timeout_s` seconds from the moment a worker receives it, and the whole call
        `batch_timeout_s`: once it has run that long, the samples still being scored (their workers are killed) and
        those not yet started fail as `TIMEOUT`. The call returns as soon as every sample has a result or has
        timed out (killed workers are replaced in the background).

        Args:
          responses: n response texts.
          answers: n ground-truth answers.
          timeout_s: per-sample time limit in seconds.
          batch_timeout_s: time limit of the whole call in seconds; 0 = none.
          contexts: n mappings of keyword arguments (the keys the reward does not take are left out); None = none.

        Returns:
          `RewardScores`: per-part float32 `[n]` arrays, failure reasons and counts, per-sample spans; failed
          samples are zeroed (and have no spans).

        Raises:
          ValueError: if `responses`, `answers` and `contexts` differ in length.
          RuntimeError: if the pool is closed, or a worker is not ready within `startup_timeout_s` or dies
            during start-up.
        """
        contexts = _checked_contexts(responses, answers, contexts)
        if not self._workers:
            raise RuntimeError("RewardPool is closed")
        state = _BatchState(len(responses))
        pending = collections.deque(range(len(responses)))
        batch_deadline = time.monotonic() + batch_timeout_s if batch_timeout_s > 0 else math.inf
        while state.remaining:
            if time.monotonic() >= batch_deadline:
                self._fail_unscored(state, pending, f"not scored within the batch limit of {batch_timeout_s} s")
                break
            for worker in self._workers:
                if worker.ready and worker.task is None and pending:
                    index = pending.popleft()
                    try:
                        worker.assign(index, responses[index], answers[index], contexts[index], timeout_s)
                    except OSError:  # the worker died while idle: not this sample's fault
                        pending.appendleft(index)
                        self._replace(worker, state, WORKER_DIED, "broken pipe")
            next_deadline = min(batch_deadline, *(worker.deadline for worker in self._workers))
            self._poll(state, wait_s=min(max(next_deadline - time.monotonic(), 0.0), 0.5))
        return state.result()

    def _fail_unscored(self, state: _BatchState, pending: collections.deque, message: str) -> None:
        """Fails every sample of `state` without a result as `TIMEOUT`: those never sent to a worker (`pending`, which
        is emptied) and those being scored (their workers are killed and replaced)."""
        while pending:
            state.fail(pending.popleft(), TIMEOUT, message)
        for worker in list(self._workers):
            if worker.task is not None:
                self._replace(worker, state, TIMEOUT, message)

    def _poll(self, state: _BatchState | None, wait_s: float) -> None:
        by_conn = {worker.conn: worker for worker in self._workers}
        for conn in multiprocessing.connection.wait(list(by_conn), timeout=wait_s):
            worker = by_conn[conn]
            try:
                status, index, payload = conn.recv()
            except (EOFError, OSError):
                worker.process.join(1.0)
                self._replace(worker, state, WORKER_DIED, f"worker exit code {worker.process.exitcode}")
                continue
            if status == "ready":
                worker.ready = True
            elif status == "ok":
                state.succeed(index, payload)
                worker.finish()
            else:
                state.fail(index, status, payload)
                worker.finish()
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.deadline <= now:
                self._replace(worker, state, TIMEOUT, f"sample {worker.task} ran over its time limit")
            elif not worker.ready and now - worker.started_at > self._startup_timeout_s:
                raise RuntimeError(f"reward worker not ready after {self._startup_timeout_s} s")

    def _replace(self, worker: _Worker, state: _BatchState | None, reason: str, message: str) -> None:
        if not worker.ready:
            raise RuntimeError(f"reward worker failed during start-up ({message})")
        if worker.task is not None:
            state.fail(worker.task, reason, message)
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self._context, self.reward_fn)


def _checked_contexts(
    responses: Sequence[str], answers: Sequence[str], contexts: Sequence[Mapping[str, Any]] | None
) -> Sequence[Mapping[str, Any]]:
    """`contexts`, or n empty ones for None.

    Raises:
      ValueError: the three differ in length.
    """
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    if contexts is None:
        return [{}] * len(responses)
    if len(contexts) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(contexts)} reward contexts")
    return contexts


def score_in_process(
    reward_fn: str | RewardFn,
    responses: Sequence[str],
    answers: Sequence[str],
    contexts: Sequence[Mapping[str, Any]] | None = None,
    options: Mapping[str, Any] = {},
) -> RewardScores:
    """Serial scoring in this process (debugging, tiny batches): exceptions are caught, no time limit.

    Args:
      reward_fn: a registered name, a "module:function" path, or a function.
      responses: n response texts.
      answers: n ground-truth answers.
      contexts: n mappings of keyword arguments (keys the reward does not take are left out); None = none.
      options: keyword arguments bound to every call.

    Returns:
      `RewardScores` with per-part float32 `[n]` arrays; failed samples are zeroed and counted by reason.

    Raises:
      ValueError: if `responses`, `answers` and `contexts` differ in length, `reward_fn` does not resolve, or it
        does not take an option.
    """
    contexts = _checked_contexts(responses, answers, contexts)
    fn = bind_options(get_reward_fn(reward_fn), options)
    keywords = reward_keywords(fn)
    state = _BatchState(len(responses))
    for index, (response, answer) in enumerate(zip(responses, answers)):
        status, payload = run_reward(fn, response, answer, contexts[index], keywords)
        if status == "ok":
            state.succeed(index, payload)
        else:
            state.fail(index, status, payload)
    return state.result()


def score_batch(
    reward_fn: str | RewardFn,
    responses: Sequence[str],
    answers: Sequence[str],
    *,
    timeout_s: float = 10.0,
    num_workers: int = 4,
) -> RewardScores:
    """One-shot scoring: starts `num_workers` processes (0: in this process, no time limit), scores, stops.

    Args:
      reward_fn: a registered name, a "module:function" path, or a module-level function.
      responses: n response texts.
      answers: n ground-truth answers.
      timeout_s: per-sample time limit in seconds (worker processes only).
      num_workers: worker processes, at most one per response; 0 scores in this process. An empty batch is
        scored in this process.

    Returns:
      `RewardScores` with per-part float32 `[n]` arrays; failing samples are zeroed and counted by reason.

    Raises:
      ValueError: if non-empty `responses` and `answers` differ in length, or `reward_fn` does not resolve.
      TypeError: if the reward function cannot be pickled for the worker processes.
      RuntimeError: if a worker is not ready within the start-up limit or dies during start-up.
    """
    if num_workers == 0:
        return score_in_process(reward_fn, responses, answers)
    if not responses:
        return score_in_process(reward_fn, [], [])
    with RewardPool(reward_fn, num_workers=min(num_workers, len(responses))) as pool:
        return pool.score(responses, answers, timeout_s)
