"""Read rows from jsonl / json / csv / parquet / arrow files and folders saved by HF datasets'
``save_to_disk``, each row with its location for errors.

A row that cannot be read (not JSON, nested too deeply, invalid UTF-8, a lone surrogate, a CSV
record the csv module refuses) is a :class:`DataError` naming its line and, where it can, its
field; a file that cannot be read at all (missing, a folder, a corrupt parquet file, no rows) is
a :class:`DataError` naming the file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlxf.data.errors import BadRows, DataError

Row = dict[str, Any]
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")
CSV_FIELD_LIMIT = 1 << 26
"""Longest CSV cell read, in characters (the csv module's own default is 131,072)."""
_SURROGATE = re.compile("[\ud800-\udfff]")  # undecodable bytes read with surrogateescape land here too


def iter_rows(path: str | Path, bad: BadRows | None = None) -> Iterator[tuple[str, Row]]:
    """Yield ``(location, row)``; location is ``line N`` (jsonl, csv), ``item N`` (json) or ``row N`` (parquet).

    A row that cannot be read raises its :class:`DataError`, or, given ``bad``, is counted there
    and left out. A file without a single row is an error."""
    path = Path(path)
    reader = _reader(path)
    rows = 0
    for location, row in reader(path):
        rows += 1
        problem = row if isinstance(row, DataError) else _text_problem(path, location, row)
        if problem is None:
            yield location, row
        elif bad is None:
            raise problem
        else:
            bad.errors.append(problem)
    if rows == 0:
        raise DataError(str(path), "file", None, "no rows (the file is empty)")


def _reader(path: Path):
    if not path.exists():
        raise DataError(str(path), "file", None, "no such file")
    if path.is_dir():
        return _dataset_folder_rows
    readers = {
        ".jsonl": _jsonl_rows,
        ".json": _json_rows,
        ".csv": _csv_rows,
        ".parquet": _parquet_rows,
        ".arrow": _arrow_rows,
    }
    suffix = path.suffix.lower()
    if suffix not in readers:
        raise DataError(str(path), "file", None, f"unknown file type {suffix!r}; expected one of {SUFFIXES}")
    return readers[suffix]


def find_lone_surrogate(value: Any) -> tuple[str | None, re.Match] | None:
    """The first lone surrogate in ``value`` (strings in nested dicts and lists, keys too), with
    the field path it sits at (``chosen[0].content``); None when there is none."""
    stack: list[tuple[str | None, Any]] = [(None, value)]
    while stack:
        field, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                name = str(key) if field is None else f"{field}.{key}"
                stack.append((name, key))
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{field}[{index}]", item) for index, item in enumerate(value))
        elif isinstance(value, str) and (found := _SURROGATE.search(value)):
            return field, found
    return None


def _text_problem(path: Path, location: str, row: Row) -> DataError | None:
    """A lone surrogate (from a ``\\ud800`` escape or an undecodable byte) anywhere in the row."""
    if (problem := find_lone_surrogate(row)) is None:
        return None
    field, found = problem
    message = f"not valid text: {found.group()!r} at character {found.start()} is invalid UTF-8 or a lone surrogate"
    return DataError(str(path), location, field, message)


def _json_value(text: str) -> Any:
    """``json.loads`` with its non-JSON failures (too deep, too many digits) as ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def _bad_byte(text: str) -> str | None:
    if found := _SURROGATE.search(text):
        code = ord(found.group())
        byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"{found.group()!r}"
        return f"not valid UTF-8 text ({byte} at column {found.start() + 1})"
    return None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Row | DataError]]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            location = f"line {number}"
            if problem := _bad_byte(line):
                yield location, DataError(str(path), location, None, problem)
                continue
            try:
                row = _json_value(line)
            except json.JSONDecodeError as error:
                yield (
                    location,
                    DataError(str(path), location, None, f"invalid JSON ({error.msg} at column {error.colno})"),
                )
                continue
            except ValueError as error:
                yield location, DataError(str(path), location, None, f"invalid JSON ({error})")
                continue
            if not isinstance(row, dict):
                row = DataError(str(path), location, None, f"expected a JSON object, got {type(row).__name__}")
            yield location, row


def _json_rows(path: Path) -> Iterator[tuple[str, Row | DataError]]:
    text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    if text.strip() == "":
        return
    try:
        document = _json_value(text)
    except json.JSONDecodeError as error:
        raise DataError(str(path), f"line {error.lineno}", None, f"invalid JSON ({error.msg})") from None
    except ValueError as error:
        raise DataError(str(path), "file", None, f"invalid JSON ({error})") from None
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise DataError(str(path), "file", None, 'expected a JSON array of objects (or {"data": [...]})')
    for index, row in enumerate(document):
        location = f"item {index}"
        if not isinstance(row, dict):
            row = DataError(str(path), location, None, f"expected a JSON object, got {type(row).__name__}")
        yield location, row


def _csv_rows(path: Path) -> Iterator[tuple[str, Row | DataError]]:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames
        except csv.Error as error:
            raise DataError(str(path), "line 1", None, f"unreadable CSV header ({error})") from None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # raised before the line is counted; the reader goes on after it
                location = f"line {reader.line_num + 1}"
                yield location, DataError(str(path), location, None, f"unreadable CSV ({error})")
                continue
            location = f"line {reader.line_num}"
            if None in row:
                yield location, DataError(str(path), location, None, f"more columns than the header's {len(header)}")
            else:
                yield location, _decode_json_cells(row)


def _decode_json_cells(row: Row) -> Row:
    """CSV cells that hold JSON lists/objects (conversations) are decoded."""
    decoded = {}
    for key, value in row.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = _json_value(value)
            except ValueError:
                pass  # text that happens to start with a bracket
        decoded[key] = value
    return decoded


def _parquet_rows(path: Path) -> Iterator[tuple[str, Row | DataError]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise DataError(str(path), "file", None, f"not a readable parquet file ({error})") from None
    for index, row in enumerate(table.to_pylist()):
        yield f"row {index}", row


def _arrow_rows(path: Path, first_row: int = 0) -> Iterator[tuple[str, Row | DataError]]:
    """An Arrow file as HF datasets writes it (the IPC stream format), or the IPC file format."""
    import pyarrow

    try:
        with pyarrow.memory_map(str(path)) as source:
            try:
                table = pyarrow.ipc.open_stream(source).read_all()
            except pyarrow.ArrowInvalid:
                source.seek(0)
                table = pyarrow.ipc.open_file(source).read_all()
    except (pyarrow.ArrowException, OSError) as error:
        raise DataError(str(path), "file", None, f"not a readable Arrow file ({error})") from None
    for index, row in enumerate(table.to_pylist(), start=first_row):
        yield f"row {index}", row


def _dataset_folder_rows(path: Path) -> Iterator[tuple[str, Row | DataError]]:
    """A folder saved by ``Dataset.save_to_disk`` (its Arrow shards in order), or by
    ``DatasetDict.save_to_disk`` (its train split; name a split's folder for another)."""
    if (path / "dataset_dict.json").is_file():
        splits = _json_file(path / "dataset_dict.json").get("splits", [])
        if "train" not in splits:
            raise DataError(
                str(path),
                "file",
                None,
                f"a DatasetDict without a train split; give one of {[str(path / s) for s in splits]}",
            )
        yield from _dataset_folder_rows(path / "train")
        return
    if not (path / "state.json").is_file():
        raise DataError(
            str(path),
            "file",
            None,
            f"is a folder but not one saved by datasets' save_to_disk; expected a file ending in one of {SUFFIXES}",
        )
    rows = 0
    for shard in _json_file(path / "state.json").get("_data_files", []):
        for location, row in _arrow_rows(path / shard["filename"], first_row=rows):
            rows += 1
            yield location, row


def _json_file(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(str(path), "file", None, f"not readable JSON ({error})") from None
