"""Benchmark reports: one titled section of BUILD_NOTES.md written (or replaced), and the machine they ran on."""

from __future__ import annotations

import os
import pathlib
import platform
import re

import jax


def write_section(notes: str | os.PathLike, title: str, body: str) -> None:
    """Replaces (or appends) the section of the markdown file `notes` that starts with `## {title}`, up to the
    next `## ` heading, with `body`.

    Args:
      notes: the markdown file (created with a "# Build notes" heading if missing).
      title: the section's title, without the `## `.
      body: the section's text.
    """
    notes = pathlib.Path(notes)
    text = notes.read_text() if notes.exists() else "# Build notes\n"
    section = f"## {title}\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    notes.write_text(text.rstrip() + "\n")


def machine_description() -> str:
    """CPU cores and model, the JAX backend and device kind, the JAX version."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    device = jax.devices()[0]
    return (
        f"{os.cpu_count()} CPU cores ({cpu}, {platform.machine()}), {jax.device_count()} x {device.device_kind} "
        f"({device.platform}), jax {jax.__version__}"
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages of this machine (other jobs make timings noisy)."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())
