"""Writes one titled section of BUILD_NOTES.md, replacing that section if it is already there."""

from __future__ import annotations

import pathlib
import re

NOTES = pathlib.Path(__file__).resolve().parent.parent / "BUILD_NOTES.md"


def write_section(title: str, body: str, notes: pathlib.Path = NOTES) -> None:
    """Replaces (or appends) the section that starts with `## {title}` up to the next `## ` heading."""
    text = notes.read_text() if notes.exists() else "# Build notes\n"
    section = f"## {title}\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text, count=1) if pattern.search(text) else text.rstrip() + "\n\n" + section
    notes.write_text(text.rstrip() + "\n")
