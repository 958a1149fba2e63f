"""The non-weight files of a Hugging Face model directory (config, tokenizer, processor, generation config)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

NON_WEIGHT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "vocab.json",
    "merges.txt",
)


def copy_non_weight_files(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copies the files of `NON_WEIGHT_FILES` that exist in `source` into `destination` (created)."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in NON_WEIGHT_FILES:
        if (Path(source) / name).exists():
            shutil.copy(Path(source) / name, destination / name)
