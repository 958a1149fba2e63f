"""Commands run one after another, each in a subprocess with its own time budget, and a markdown report of what they
printed (scripts/gpu_check.py's parts)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of the check: a command line (after the interpreter) and its budget in seconds."""

    name: str
    args: tuple[str, ...]
    budget_s: int


@dataclasses.dataclass
class PartResult:
    """How one part went: "ok", "failed (exit N)", "timed out after N s" or "skipped (no time left)"."""

    part: Part
    status: str
    seconds: float
    stdout: str


def run_part(part: Part, budget_s: float, log: Callable[[str], None], root: Path) -> PartResult:
    """Runs one part in a subprocess in `root` (a checkout, its package importable), killed with every process it
    started after `budget_s` seconds; skipped under 5 s. Its output and status go to `log`."""
    if budget_s < 5:
        return PartResult(part, "skipped (no time left)", 0.0, "")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)  # the parts take the GPU's memory as JAX does by default
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    command = [sys.executable, *part.args]
    log(f"== {part.name} (budget {budget_s:.0f} s): {' '.join(part.args)}")
    start = time.perf_counter()
    # a session of its own: a timed-out part is killed with every process it started (reward pool, data workers)
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=budget_s)
        status = "ok" if process.returncode == 0 else f"failed (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        status = f"timed out after {budget_s:.0f} s"
    seconds = time.perf_counter() - start
    log(stdout)
    log(stderr)
    log(f"== {part.name}: {status} in {seconds:.0f} s")
    return PartResult(part, status, seconds, stdout if status == "ok" else stdout + _tail(stderr))


def _tail(stderr: str, lines: int = 15) -> str:
    """The end of a failed part's stderr, for the report."""
    return "\nstderr (last lines):\n" + "\n".join(stderr.strip().splitlines()[-lines:])


def report(results: list[PartResult], env: str, smoke: bool, command: str) -> str:
    """The markdown section: what ran where, then each part's printed figures."""
    title = "GPU check (CPU smoke run: not figures)" if smoke else "GPU check (Qwen2.5-VL-3B dimensions)"
    lines = [
        f"## {title}",
        f"Command: `{command}`; {env}; {datetime.date.today()}.",
        "",
        "| part | status | seconds |",
        "|---|---|---|",
        *(f"| {r.part.name} | {r.status} | {r.seconds:.0f} |" for r in results),
    ]
    for r in results:
        lines += ["", f"### {r.part.name}: `python {' '.join(r.part.args)}`", "", "```", r.stdout.strip(), "```"]
    return "\n".join(lines) + "\n"
