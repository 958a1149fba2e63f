"""Dataset readers for the EasyR1 / Shuffle-R1 layout: parquet and jsonl files, random access by index.

A record has a prompt column (`problem`, with one `<image>` placeholder per image and `<video>` per video), an
answer column (`answer`), an images column (`images`: a list of `{"bytes": ..., "path": ...}` records or of
plain paths), when configured a videos column (`videos`: a list of video file paths, bytes or such records) and
optionally a `data_source` column; the names are configurable (`Columns`).

Dataset specs, `path[@split]`:
  * `file.parquet` / `file.jsonl`: that file. A single file is a dataset with one split, "train" (as
    Hugging Face datasets names it), so `file.parquet@train` is the same and any other split is an error.
  * `dir`: every `*.parquet` and `*.jsonl` file directly in `dir`, sorted by name.
  * `dir@split`: the files of that split, tried in this order, first match wins:
    `dir/split.parquet|jsonl`, `dir/split-*.parquet|jsonl` (shards), `dir/split/*.parquet|jsonl`,
    `dir/data/split.parquet|jsonl`, `dir/data/split-*.parquet|jsonl` (the Hugging Face hub layout).
Several specs may be joined with commas; their records are concatenated in order.

Image and video paths that are relative resolve against `Columns.image_dir` when set, else against the directory
of the data file. Parquet columns are read into memory once (images included: memory about the selected columns'
size); jsonl lines are kept as text and parsed on access.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EXTENSIONS = (".parquet", ".jsonl")
DEFAULT_SPLIT = "train"


class DataSpecError(ValueError):
    """A dataset spec, file or column cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Columns:
    """Column names of a dataset, and where relative image and video paths resolve.

    Attributes:
      prompt: the problem column.
      answer: the answer column.
      images: the images column (None: read no images).
      data_source: the data-source column, optional per file (a record without it gets its file's stem).
      image_dir: the directory relative image and video paths resolve against (None: the data file's directory).
      reward: columns passed to the reward function as keyword arguments (e.g. StepGRPO's key steps); each data
        file must have them.
      videos: the videos column (None: read no videos).
    """

    prompt: str = "problem"
    answer: str = "answer"
    images: str | None = "images"
    data_source: str = "data_source"
    image_dir: str | None = None
    reward: tuple[str, ...] = ()
    videos: str | None = None


@dataclasses.dataclass(frozen=True)
class RawRecord:
    """One record as read. Values are None when the record lacks them (null or absent key).

    Attributes:
      record_id: "<file> row <i>" (parquet, 0-based) or "<file> line <n>" (jsonl, 1-based).
      problem: the prompt column's value, unvalidated.
      answer: the answer column's value, unvalidated.
      images: the images column's value, unvalidated (`[]` when `Columns.images` is None).
      data_source: the data-source column's value as a string, or the file's stem.
      base_dir: where relative image paths resolve (the data file's directory).
      error: a read-level problem (e.g. invalid JSON) or None.
      record_index: the record's index in its `RecordSource` (-1 when read outside one).
      reward_columns: the values of `Columns.reward`, by column name (None where a jsonl line lacks one).
      videos: the videos column's value, unvalidated (`[]` when `Columns.videos` is None).
    """

    record_id: str
    problem: Any
    answer: Any
    images: Any
    data_source: str
    base_dir: str
    error: str | None = None
    record_index: int = -1
    reward_columns: dict[str, Any] = dataclasses.field(default_factory=dict)
    videos: Any = dataclasses.field(default_factory=list)


def _data_files(directory: Path, pattern: str) -> list[Path]:
    return sorted(p for ext in EXTENSIONS for p in directory.glob(pattern + ext) if p.is_file())


def resolve_data_files(spec: str) -> list[Path]:
    """The files of one `path[@split]` spec (see the module docstring).

    Args:
      spec: one dataset spec (no commas); `~` is expanded.

    Returns:
      The data files, in reading order.

    Raises:
      DataSpecError: the split after '@' is empty, the path is neither a file nor a directory, a file has an
        unsupported extension, a single file is given a split other than "train", or no files match.
    """
    path_text, at, split = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if at and not split:
        raise DataSpecError(f"dataset spec {spec!r}: empty split after '@'")
    path = Path(os.path.expanduser(path_text))
    if path.is_file():
        if path.suffix not in EXTENSIONS:
            raise DataSpecError(f"dataset file {str(path)!r}: unsupported extension; expected one of {EXTENSIONS}")
        if at and split != DEFAULT_SPLIT:
            raise DataSpecError(
                f"dataset spec {spec!r}: a single file has only the split {DEFAULT_SPLIT!r}; "
                f"use a directory with {split}.parquet (or {split}/*.parquet) to name other splits"
            )
        return [path]
    if not path.is_dir():
        raise DataSpecError(f"dataset spec {spec!r}: {str(path)!r} is neither a file nor a directory")
    if not at:
        files = _data_files(path, "*")
        if not files:
            raise DataSpecError(f"dataset directory {str(path)!r} has no {' or '.join(EXTENSIONS)} files")
        return files
    for pattern in (split, f"{split}-*", f"{split}/*", f"data/{split}", f"data/{split}-*"):
        files = _data_files(path, pattern)
        if files:
            return files
    raise DataSpecError(
        f"dataset spec {spec!r}: no files for split {split!r} in {str(path)!r} (looked for {split}.parquet|jsonl, "
        f"{split}-*.parquet|jsonl, {split}/*, data/{split}.*, data/{split}-*)"
    )


class _ParquetFile:
    """The needed columns of one parquet file, in memory."""

    def __init__(self, path: Path, columns: Columns):
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as err:
            raise DataSpecError(f"{path}: not a readable parquet file ({err})") from err
        named = (columns.prompt, columns.answer, columns.images, columns.videos, *columns.reward)
        required = [c for c in named if c is not None]
        missing = [c for c in required if c not in schema.names]
        if missing:
            raise DataSpecError(
                f"{path}: column(s) {missing} not found; the file has columns {schema.names} "
                "(set the dataset's column names in the config)"
            )
        optional = [columns.data_source] if columns.data_source in schema.names else []
        wanted = list(dict.fromkeys(required + optional))
        table = pq.read_table(path, columns=wanted)
        self.path = path
        self.columns = {name: table.column(name) for name in wanted}
        self.length = table.num_rows

    def column_values(self, name: str) -> list[Any]:
        if name not in pq.read_schema(self.path).names:
            raise DataSpecError(f"{self.path}: column {name!r} not found")
        return pq.read_table(self.path, columns=[name]).column(name).to_pylist()

    def write_rows(self, rows: np.ndarray, extra: dict[str, np.ndarray], out: Path) -> None:
        """Writes the rows `rows` of this file (every column, in the given order) with the `extra` columns (each
        one value per written row; a column of the same name is replaced) to the parquet file `out`; a Hugging
        Face `datasets` schema in the file's metadata gets the extra columns' features."""
        table = pq.read_table(self.path).take(pa.array(rows, pa.int64()))
        metadata = dict(table.schema.metadata or {})
        for name, values in extra.items():
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, pa.array(values))
        if b"huggingface" in metadata:
            info = json.loads(metadata[b"huggingface"])
            features = info.get("info", {}).get("features")
            if isinstance(features, dict):
                features.update(
                    {name: {"dtype": values.dtype.name, "_type": "Value"} for name, values in extra.items()}
                )
                metadata[b"huggingface"] = json.dumps(info).encode()
        pq.write_table(table.replace_schema_metadata(metadata), out)

    def record(self, row: int, columns: Columns) -> RawRecord:
        def value(name: str | None) -> Any:
            return self.columns[name][row].as_py() if name in self.columns else None

        source = value(columns.data_source)
        return RawRecord(
            record_id=f"{self.path} row {row}",
            problem=value(columns.prompt),
            answer=value(columns.answer),
            images=value(columns.images) if columns.images is not None else [],
            data_source=str(source) if source is not None else self.path.stem,
            base_dir=str(self.path.parent),
            reward_columns={name: value(name) for name in columns.reward},
            videos=value(columns.videos) if columns.videos is not None else [],
        )


class _JsonlFile:
    """The non-empty lines of one jsonl file, each decoded (UTF-8) and parsed on access: a line that is not valid
    UTF-8 or not JSON is one unreadable record, not an unreadable file."""

    def __init__(self, path: Path):
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataSpecError(f"{path}: not a readable jsonl file ({err})") from err
        numbered = [(n + 1, line) for n, line in enumerate(data.splitlines()) if line.strip()]
        self.path = path
        self.line_numbers = np.asarray([n for n, _ in numbered], np.int64)
        self.lines = [line for _, line in numbered]
        self.length = len(self.lines)

    def column_values(self, name: str) -> list[Any]:
        values = []
        for line in self.lines:
            try:
                data = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                data = None
            values.append(data.get(name) if isinstance(data, dict) else None)
        return values

    def write_rows(self, rows: np.ndarray, extra: dict[str, np.ndarray], out: Path) -> None:
        """Writes the lines of the rows `rows` (each a readable JSON object) with the `extra` keys added (one value
        per written row; a key of the same name is replaced) to the jsonl file `out`, one object a line."""
        with open(out, "w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                data = json.loads(self.lines[row].decode("utf-8"))
                data.update({name: values[i].item() for name, values in extra.items()})
                f.write(json.dumps(data, ensure_ascii=False) + "\n")

    def record(self, row: int, columns: Columns) -> RawRecord:
        record_id = f"{self.path} line {int(self.line_numbers[row])}"
        base = str(self.path.parent)
        try:
            data = json.loads(self.lines[row].decode("utf-8"))
        except UnicodeDecodeError as err:
            return RawRecord(record_id, None, None, None, self.path.stem, base, error=f"not valid UTF-8 ({err})")
        except json.JSONDecodeError as err:
            return RawRecord(record_id, None, None, None, self.path.stem, base, error=f"invalid JSON ({err})")
        if not isinstance(data, dict):
            return RawRecord(record_id, None, None, None, self.path.stem, base, error="the line is not a JSON object")
        source = data.get(columns.data_source)
        return RawRecord(
            record_id=record_id,
            problem=data.get(columns.prompt),
            answer=data.get(columns.answer),
            images=data.get(columns.images) if columns.images is not None else [],
            data_source=str(source) if source is not None else self.path.stem,
            base_dir=base,
            reward_columns={name: data.get(name) for name in columns.reward},
            videos=data.get(columns.videos) if columns.videos is not None else [],
        )


class RecordSource:
    """Random access to the records of one or more dataset specs (grain's `RandomAccessDataSource` protocol).

    `source[i]` is a `RawRecord`; records of the files are concatenated in spec and file order.
    """

    def __init__(self, specs: str, columns: Columns = Columns()):
        """Opens every file of the specs.

        Args:
          specs: dataset specs joined with commas.
          columns: the column names.

        Raises:
          DataSpecError: a spec names no files, a file is unreadable or lacks a required column, or the files
            hold no records.
        """
        self.specs = specs
        self.columns = columns
        files = [f for spec in specs.split(",") if spec.strip() for f in resolve_data_files(spec.strip())]
        if not files:
            raise DataSpecError(f"dataset spec {specs!r} names no files")
        self._files = [_ParquetFile(f, columns) if f.suffix == ".parquet" else _JsonlFile(f) for f in files]
        self._starts = np.cumsum([0] + [f.length for f in self._files])
        if self._starts[-1] == 0:
            raise DataSpecError(f"dataset spec {specs!r}: the files {[str(f) for f in files]} hold no records")

    @property
    def files(self) -> list[Path]:
        """The data files, in record order."""
        return [f.path for f in self._files]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def column_values(self, name: str) -> list[Any]:
        """Every record's value of column `name`, in record order (None where a jsonl line lacks it or is unreadable).

        Raises:
          DataSpecError: a parquet file has no such column.
        """
        return [value for f in self._files for value in f.column_values(name)]

    def __getitem__(self, index: int) -> RawRecord:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"record index {index} out of range [0, {len(self)})")
        file = int(np.searchsorted(self._starts, index, side="right")) - 1
        record = self._files[file].record(index - int(self._starts[file]), self.columns)
        return dataclasses.replace(record, record_index=index)

    def write_subset(self, indices: np.ndarray, out_dir: Path, extra: dict[str, np.ndarray]) -> list[Path]:
        """Writes the records at `indices` in this source's layout: for each data file, a file of the same format
        in `out_dir` holding its selected records in order, with every original column (parquet) or key (jsonl)
        and the `extra` columns.

        The files keep their names when those are distinct and already in record order when sorted; otherwise
        each name gets its position as a prefix (`0000-train.parquet`, ...), so the directory `out_dir` as a
        dataset spec reads the records in this source's order.

        Args:
          indices: `int64[K]` ascending record indices of readable records.
          out_dir: an existing directory.
          extra: column name -> `[K]` numpy values (one per selected record; float64, int64 or bool).

        Returns:
          The written files, in record order (one per data file, empty ones included).
        """
        indices = np.asarray(indices, np.int64)
        names = [f.path.name for f in self._files]
        if len(set(names)) < len(names) or sorted(names) != names:
            names = [f"{position:04d}-{name}" for position, name in enumerate(names)]
        written = []
        for position, (file, name) in enumerate(zip(self._files, names)):
            start, stop = int(self._starts[position]), int(self._starts[position + 1])
            chosen = (indices >= start) & (indices < stop)
            out = out_dir / name
            file.write_rows(indices[chosen] - start, {k: np.asarray(v)[chosen] for k, v in extra.items()}, out)
            written.append(out)
        return written

    def __repr__(self) -> str:
        return f"RecordSource({self.specs!r}, {len(self)} records)"
